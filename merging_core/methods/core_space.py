"""Core Space merging (Panariello, Marczak et al., NeurIPS 2025): merge LoRAs in an R×R core.

Space: factors (exact route). Per module, with ``R = Σ r_t`` (mixed ranks allowed), the stacked
factors ``B_stk = [B_1 … B_T]`` ``(m, R)`` and ``A_stk = [A_1; …; A_T]`` ``(R, n)`` give two
shared orthonormal bases: ``U`` ``(m, p)``, the left singular vectors of ``B_stk``, and ``V``
``(n, q)``, the right singular vectors of ``A_stk`` (``p = min(m, R)``, ``q = min(n, R)``, as the
official ``full_matrices=False`` SVDs). We get them from a QR of each stack and an SVD of the
small triangular factor, never an SVD of an ``m``- or ``n``-sized matrix. Every task is then the
exact ``p × q`` core ``M_t = Uᵀ B_t A_t V = (Uᵀ B_t)(A_t V)`` with ``ΔW_t = U M_t Vᵀ`` (lossless).
A rule merges the cores into ``M`` and the result is the LoRA pair ``B = λ U M`` ``(m, q)``,
``A = Vᵀ`` ``(q, n)``: rank ``<= R``, cost ``O((m + n) R² + T R³)``, nothing ``m × n`` formed.

Rules, and how each relates to its full-space namesake:

* ``"ta"``: ``M = Σ_t M_t``. **Exact**: equals Task Arithmetic ``λ Σ_t ΔW_t`` (acts on ΔW).
* ``"tsv"``: TSV-M on the cores, ``k = ⌊min(p, q)/T⌋`` triplets per task, polar factors of the
  stacked singular vectors. Since ``U``, ``V`` have orthonormal columns the core SVDs *are* the
  ΔW SVDs, so this is **exact** TSV-M (our ``tsv_m`` low-rank mode) whenever both budgets
  ``⌊min(p, q)/T⌋`` and ``⌊min(m, n)/T⌋`` cover every task's rank (equal ranks ``r``:
  ``⌊T r / T⌋ = r``). With mixed ranks the core budget can be smaller: then it is a truncation
  of TSV-M at ``⌊R/T⌋`` per task. Acts on ΔW.
* ``"cart"``: CART (Choi et al. 2024): ``M = M̄ + c Σ_t SVD_k(M_t − M̄)`` with
  ``k = ⌈κ·min(p, q)⌉``. **Exact** full-space CART at the same absolute rank ``k`` (the mean and
  the SVDs commute with the orthonormal embedding); the fraction ``κ`` is of the core size, so at
  equal κ the rank is smaller than full-space CART's ``⌈κ·min(m, n)⌉``. Acts on ΔW.
* ``"ties"``, ``"dare"``, ``"dare_ties"``: TIES trim/elect/disjoint-mean and DARE drop-and-rescale
  on the **core entries**. These are **different methods** from TIES/DARE on ΔW: an entry of
  ``M_t`` is a coordinate in the ``(U, V)`` basis, not an entry of ΔW. They depend on the
  factors through the bases (``(B·M, M⁻¹·A)`` changes ``U``, ``V``), are invariant to the sign
  of each basis vector and to the adapters' order, and equal their full-space namesakes only
  when both bases are (signed, permuted) coordinate axes.

Conventions versus the official code (``task_merger.py``, ``MatrixPerLayerMerger``):
    * TIES keeps ``int(density · p q)`` entries per core (PEFT's count; the official
      ``kthvalue`` + ``>=`` keeps one more) and trims per core (``threshold="per_tensor"``, as
      the official code) unless ``"global"`` is chosen;
    * DARE masks come from the caller's generator, one seed per (module, task);
    * TSV drops numerically zero triplets before the polar step (the official code keeps
      ``⌊min(p, q)/T⌋`` per task even past a task's rank, whose arbitrary directions then enter
      the polar factors); the two agree when every task has full rank ``r_t ≥ ⌊R/T⌋``;
    * the LoRA scale is folded into ``B`` before the bases are taken (official: raw PEFT
      factors; the same bases when all adapters share one scale);
    * no ``isotropize`` option (the official code can flatten the merged core's spectrum).

Reference: https://arxiv.org/abs/2509.17786 (code: github.com/apanariello4/core-space-merging)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from merging_core.adapters import AdapterSet
from merging_core.elementwise.steps import check_choice
from merging_core.elementwise.streaming import (
    dropped_tensors,
    mask_seeds,
    scaled_progress,
    ties_merge_parts,
    weighted_sum_parts,
)
from merging_core.factors import CORE_DTYPE
from merging_core.methods.registry import Param, register_method
from merging_core.methods.shared import DENSITY, DROP_RATE, SCALING, THRESHOLD
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)
from merging_core.spectral import RANK_RTOL, polar_factor

RULES = ("ta", "ties", "dare", "dare_ties", "tsv", "cart")
ELEMENTWISE = ("ties", "dare", "dare_ties")


@dataclass(frozen=True)
class CoreSpace:
    """One module in core space: ``ΔW_t = U @ cores[t] @ V.T`` exactly.

    Attributes:
        U: ``(m, p)`` orthonormal, left singular vectors of ``[B_1 … B_T]``.
        V: ``(n, q)`` orthonormal, right singular vectors of ``[A_1; …; A_T]``.
        cores: per task ``(p, q)``, float64.
    """

    U: torch.Tensor
    V: torch.Tensor
    cores: tuple[torch.Tensor, ...]


def core_space(Bs: Sequence[torch.Tensor], As: Sequence[torch.Tensor]) -> CoreSpace:
    """Shared bases and per-task cores of one module, from QR of the stacks (float64).

    ``B_stk = Q_b R_b``; the SVD ``R_b = P S Wᵀ`` gives ``U = Q_b P`` and
    ``Uᵀ B_t = Pᵀ R_b[:, t]``.
    Likewise ``A_stkᵀ = Q_a R_a``, ``R_a = P' S' W'ᵀ``, ``V = Q_a P'`` and
    ``A_t V = R_a[:, t]ᵀ P'``.

    Args:
        Bs: per task ``(m, r_t)``, scale folded. As: per task ``(r_t, n)``.

    Raises:
        ValueError: empty or mismatched factor lists.
    """
    if len(Bs) == 0 or len(Bs) != len(As):
        raise ValueError(f"need one A per B and at least one task, got {len(Bs)} and {len(As)}")
    Q_b, R_b = torch.linalg.qr(torch.cat([B.to(CORE_DTYPE) for B in Bs], dim=1))  # (m,p), (p,R)
    Q_a, R_a = torch.linalg.qr(torch.cat([A.to(CORE_DTYPE) for A in As], dim=0).T)  # (n,q), (q,R)
    P_b = torch.linalg.svd(R_b, full_matrices=False)[0]  # (p, p)
    P_a = torch.linalg.svd(R_a, full_matrices=False)[0]  # (q, q)
    left = P_b.T @ R_b  # (p, R): column block t is Uᵀ B_t
    right = R_a.T @ P_a  # (R, q): row block t is A_t V
    cores, start = [], 0
    for B in Bs:
        cols = slice(start, start + B.shape[1])
        cores.append(left[:, cols] @ right[cols])  # (p, r_t) @ (r_t, q) -> (p, q)
        start += B.shape[1]
    return CoreSpace(U=Q_b @ P_b, V=Q_a @ P_a, cores=tuple(cores))


def tsv_core(cores: Sequence[torch.Tensor]) -> torch.Tensor:
    """TSV-M on ``(p, q)`` cores: top ``⌊min(p, q)/T⌋`` non-zero triplets per task, polar step.

    Returns:
        The merged ``(p, q)`` core ``polar(U_cat) diag(s_cat) polar(V_cat)ᵀ`` (float64).
    """
    k = min(cores[0].shape) // len(cores)
    floor = RANK_RTOL * max(float(torch.linalg.matrix_norm(c)) for c in cores)
    us, ss, vs = [], [], []
    for core in cores:
        U, S, Vh = torch.linalg.svd(core, full_matrices=False)  # (p, s), (s,), (s, q)
        keep = min(k, int((S > floor).sum()))
        us.append(U[:, :keep])
        ss.append(S[:keep])
        vs.append(Vh[:keep].T)
    s_cat = torch.cat(ss)
    if s_cat.numel() == 0:
        return torch.zeros_like(cores[0])
    U_cat = polar_factor(torch.cat(us, dim=1), partial=True)  # (p, K)
    V_cat = polar_factor(torch.cat(vs, dim=1), partial=True)  # (q, K)
    return (U_cat * s_cat) @ V_cat.T


def cart_core(
    cores: Sequence[torch.Tensor], *, rank_fraction: float, strength: float
) -> torch.Tensor:
    """CART on cores: ``M̄ + c Σ_t SVD_k(M_t − M̄)``, ``k = ⌈rank_fraction · min(p, q)⌉``."""
    if not 0.0 < rank_fraction <= 1.0:
        raise ValueError(f"cart_rank_fraction must be in (0, 1], got {rank_fraction}")
    mean = torch.stack(list(cores)).mean(dim=0)  # (p, q)
    k = math.ceil(rank_fraction * min(mean.shape))
    total = torch.zeros_like(mean)
    for core in cores:
        U, S, Vh = torch.linalg.svd(core - mean, full_matrices=False)
        total += (U[:, :k] * S[:k]) @ Vh[:k]  # (p, k) @ (k, q)
    return mean + strength * total


def merge_cores(
    spaces: Sequence[CoreSpace],
    *,
    rule: str,
    scaling: float,
    density: float,
    threshold: str,
    drop_rate: float,
    cart_rank_fraction: float,
    cart_strength: float,
    generator: torch.Generator | None,
    progress: Progress | None = None,
) -> list[torch.Tensor]:
    """One merged ``(p, q)`` core per module, λ applied (float64)."""
    check_choice("rule", rule, RULES)
    if rule == "tsv":
        return [scaling * tsv_core(s.cores) for s in spaces]
    if rule == "cart":
        return [
            scaling * cart_core(s.cores, rank_fraction=cart_rank_fraction, strength=cart_strength)
            for s in spaces
        ]
    num_parts, num_tasks = len(spaces), len(spaces[0].cores)

    def served(i: int, t: int) -> torch.Tensor:
        # float32 for the element-wise engine (its global threshold reads float32 bit patterns)
        return spaces[i].cores[t].float() if rule in ELEMENTWISE else spaces[i].cores[t]

    if rule in ("dare", "dare_ties"):
        served = dropped_tensors(served, mask_seeds(generator, num_parts, num_tasks), drop_rate)
    if rule in ("ta", "dare"):
        ones = [1.0] * num_tasks
        merged = weighted_sum_parts(
            served, num_parts=num_parts, weights=ones, scaling=scaling, progress=progress
        )
    else:
        merged, _ = ties_merge_parts(
            served,
            num_parts=num_parts,
            num_tasks=num_tasks,
            density=density,
            threshold=threshold,
            scaling=scaling,
            progress=progress,
        )
    return [m.to(CORE_DTYPE) for m in merged]


@register_method(
    name="core_space",
    pretty_name="Core Space merging",
    reference_url="https://arxiv.org/abs/2509.17786",
    space="factors",
    params=(
        Param(
            "rule",
            "choice",
            "tsv",
            choices=RULES,
            help="Merge rule on the R×R cores. TA, TSV and CART equal their full-space versions; "
            "TIES/DARE on core entries are different methods from TIES/DARE on ΔW.",
        ),
        replace(SCALING, high=10.0, help="λ applied to the merged core (official grid 0.1–9.9)."),
        replace(
            DENSITY,
            help="TIES / DARE-TIES: kept fraction of each core's entries (official grid 0.1–1).",
        ),
        replace(
            THRESHOLD,
            default="per_tensor",
            help="TIES / DARE-TIES: trim each core on its own (official) or over all modules.",
        ),
        replace(
            DROP_RATE,
            default=0.3,
            help="DARE / DARE-TIES: probability of dropping each core entry (official: 0.3).",
        ),
        Param(
            "cart_rank_fraction",
            "float",
            0.04,
            low=0.001,
            high=1.0,
            step=0.01,
            help="CART: rank kept per centred task, as a fraction of the core size "
            "(official grid 0.04–0.32).",
        ),
        Param(
            "cart_strength",
            "float",
            0.1,
            low=0.0,
            high=4.0,
            step=0.05,
            help="CART: weight c of the low-rank centred parts (official default 0.1).",
        ),
    ),
)
def core_space_merge(
    adapter_set: AdapterSet,
    *,
    rule: str = "tsv",
    scaling: float = 1.0,
    density: float = 0.2,
    threshold: str = "per_tensor",
    drop_rate: float = 0.3,
    cart_rank_fraction: float = 0.04,
    cart_strength: float = 0.1,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """Core Space: exact R×R cores in shared SVD bases, a rule on the cores, factors back out.

    Args:
        adapter_set: the adapters (ranks may differ); task order = set order.
        rule: ``"ta"``, ``"ties"``, ``"dare"``, ``"dare_ties"``, ``"tsv"`` or ``"cart"``.
        scaling: λ. density, threshold: TIES options. drop_rate: DARE ``p``.
        cart_rank_fraction, cart_strength: CART's ``κ`` and ``c``.
        generator: source of the DARE masks. progress: optional callback.

    Returns:
        Exact factors ``(λ U M, Vᵀ)`` per module; diagnostics ``core_size`` per module.
    """
    check_choice("rule", rule, RULES)
    names = adapter_set.modules
    spaces = []
    for i, name in enumerate(names):
        mods = adapter_set.factors(name)
        spaces.append(core_space([m.B for m in mods], [m.A for m in mods]))
        report_progress(progress, 0.5 * (i + 1) / len(names), f"core space of {name}")
    merged = merge_cores(
        spaces,
        rule=rule,
        scaling=scaling,
        density=density,
        threshold=threshold,
        drop_rate=drop_rate,
        cart_rank_fraction=cart_rank_fraction,
        cart_strength=cart_strength,
        generator=generator,
        progress=scaled_progress(progress, 0.5, 1.0),
    )
    modules = {}
    for name, space, core in zip(names, spaces, merged, strict=True):
        B = (space.U @ core).float()  # (m, p) @ (p, q) -> (m, q)
        A = space.V.T.contiguous().float()  # (q, n)
        modules[name] = MergedModule.from_factors(adapter_set.factors(name)[0], B, A)
    report_progress(progress, 1.0, "Core Space merged")
    sizes = {name: list(s.cores[0].shape) for name, s in zip(names, spaces, strict=True)}
    return result_from_modules(adapter_set, modules, diagnostics={"core_size": sizes})
