"""Direction banks: the weighted rank-1 directions of one module.

Space: factors. A bank ``(B, A, fold)`` has ``B: (d_out, R)``, ``A: (F·R, d_in)`` and one
coefficient per row of ``A``; the merged update is

    ΔW(φ) = B · Σ_f diag(φ_f) A_f          (A_f = rows f·R … (f+1)·R − 1 of A, φ_f likewise)

* TARA-A (tara.md §2.1/3.2): ``B = [B_1 … B_N]``, ``A = [A_1; …; A_N]``, ``F = 1``; one ``φ`` per
  rank-1 LoRA direction.
* TARA-B (§2.2/3.3): SVD of ``[ΔW_1 | … | ΔW_N]`` in factor space, ``B = U Σ`` (``R = Σ r_i``
  columns), ``A = [V_1ᵀ; …; V_Nᵀ]``, ``F = N``; one ``φ_{ik}`` per task block and singular
  direction.
* AdaMerging: the TARA-A bank with ``φ`` tied to one ``λ`` per task or per (module, task).

With all ``φ = c`` every bank reproduces Task Arithmetic at ``λ = c`` exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.factors import svd_of_concat


@dataclass(frozen=True)
class DirectionBank:
    """Weighted rank-1 directions of one module (see the module docstring).

    Attributes:
        B: ``(d_out, R)`` left factors (scale folded).
        A: ``(F·R, d_in)`` right factors; row ``k`` pairs with column ``k mod R`` of ``B``.
        owner: ``(F·R,)`` long, the adapter index each direction belongs to.
        fold: ``F``, the number of right blocks sharing ``B``.
    """

    B: torch.Tensor
    A: torch.Tensor
    owner: torch.Tensor
    fold: int = 1

    def __post_init__(self) -> None:
        if self.A.shape[0] != self.fold * self.B.shape[1]:
            raise ValueError(
                f"bank needs A with fold·R = {self.fold}·{self.B.shape[1]} rows, "
                f"got A {tuple(self.A.shape)}"
            )

    @property
    def size(self) -> int:
        """Number of directions (coefficients) ``K = F·R``."""
        return int(self.A.shape[0])

    def to(self, device: torch.device | str) -> DirectionBank:
        return DirectionBank(self.B.to(device), self.A.to(device), self.owner.to(device), self.fold)

    def merged_factors(self, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exact factors of ``ΔW(φ)``: ``B (d_out, R)`` and ``Σ_f diag(φ_f) A_f`` ``(R, d_in)``."""
        weighted = phi.reshape(-1, 1).to(self.A.dtype) * self.A  # (K, d_in)
        return self.B, weighted.unflatten(0, (self.fold, -1)).sum(dim=0)

    def direction_norms(self) -> torch.Tensor:
        """``‖S_k‖_F = ‖b_k‖ ‖a_k‖`` for every direction ``k``, ``(K,)``."""
        b = torch.linalg.vector_norm(self.B, dim=0).repeat(self.fold)  # (K,)
        return b * torch.linalg.vector_norm(self.A, dim=1)


def bank_variant_a(adapter_set: AdapterSet, module: str) -> DirectionBank:
    """TARA-A bank: ``B_cat = [B_1 … B_N]`` ``(d_out, Σr)``, ``A_cat = [A_1; …; A_N]``."""
    mods = _linear_factors(adapter_set, module)
    owner = torch.cat([torch.full((m.rank,), t, dtype=torch.long) for t, m in enumerate(mods)])
    B = torch.cat([m.B.float() for m in mods], dim=1)
    A = torch.cat([m.A.float() for m in mods], dim=0)
    return DirectionBank(B=B, A=A, owner=owner, fold=1)


def bank_variant_b(adapter_set: AdapterSet, module: str) -> DirectionBank:
    """TARA-B bank from the exact factor-space SVD of ``[ΔW_1 | … | ΔW_N]``.

    ``B = U Σ`` ``(d_out, k)``, ``A = [V_1ᵀ; …; V_Nᵀ]`` ``(N·k, d_in)``, ``k = min(Σ r_i, d_out)``
    (lossless: ``ΔW_i = U Σ V_iᵀ``). Blocks are not renormalised (tara.md §2.2).
    """
    mods = _linear_factors(adapter_set, module)
    svd = svd_of_concat([m.B for m in mods], [m.A for m in mods])
    k = int(svd.S.numel())
    A = torch.cat([v.T for v in svd.V_blocks], dim=0)  # (N k, d_in)
    owner = torch.arange(len(mods)).repeat_interleave(k)
    return DirectionBank(B=svd.U * svd.S, A=A.contiguous(), owner=owner, fold=len(mods))


BANK_BUILDERS: dict[str, Callable[[AdapterSet, str], DirectionBank]] = {
    "a": bank_variant_a,
    "b": bank_variant_b,
}


def build_banks(
    adapter_set: AdapterSet, *, variant: str, device: torch.device | str = "cpu"
) -> dict[str, DirectionBank]:
    """One bank per mergeable module, keyed by module path, on ``device``.

    Raises:
        ValueError: unknown variant, or a module that is not a linear layer.
    """
    if variant not in BANK_BUILDERS:
        raise ValueError(f"variant must be one of {sorted(BANK_BUILDERS)}, got {variant!r}")
    build = BANK_BUILDERS[variant]
    return {name: build(adapter_set, name).to(device) for name in adapter_set.modules}


def updates_from(
    banks: Mapping[str, DirectionBank], phi: Mapping[str, torch.Tensor]
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per module the low-rank update ``(B, Σ_f diag(φ_f) A_f)`` a task-data forward applies."""
    return {path: bank.merged_factors(phi[path]) for path, bank in banks.items()}


def adapter_set_key(adapter_set: AdapterSet) -> str:
    """Content hash of an adapter set (adapter hashes in order, module list)."""
    h = hashlib.sha256()
    for adapter in adapter_set.adapters:
        h.update(adapter.content_hash().encode())
    h.update("|".join(adapter_set.modules).encode())
    return h.hexdigest()


def _linear_factors(adapter_set: AdapterSet, module: str) -> list[LoraModule]:
    mods = adapter_set.factors(module)
    if any(m.kind != "linear" for m in mods):
        raise ValueError(f"module {module!r} is not a linear layer; weighted forwards need linear")
    return mods
