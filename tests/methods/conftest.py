"""Seeded tiny AdapterSets for method tests (teammates: use the fixtures or the factory).

Every set has three modules covering the layouts the library meets: a square linear layer
``(16, 16)``, a non-square one ``(12, 16)`` and a transposed Conv1D-style one whose base weight is
``(12, 16)`` (``B (16, r)``, ``A (r, 12)``, ``transposed=True``). Ranks may differ per adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
import torch

from merging_core import Adapter, AdapterSet, LoraModule

# module path -> (d_out, d_in, transposed); d_out/d_in are the factors' (linear) sizes
MODULES: dict[str, tuple[int, int, bool]] = {
    "blocks.0.attn.q_proj": (16, 16, False),
    "blocks.0.mlp.fc_in": (12, 16, False),
    "blocks.1.attn.c_attn": (16, 12, True),
}


def make_adapter_set(
    num_adapters: int = 3,
    *,
    ranks: Sequence[int] = (4, 3, 4),
    seed: int = 0,
    modules: dict[str, tuple[int, int, bool]] | None = None,
) -> AdapterSet:
    """``num_adapters`` random adapters (names ``t0, t1, …``); adapter ``t`` has rank
    ``ranks[t % len(ranks)]``. Factors are N(0, 1) from one seeded generator."""
    gen = torch.Generator().manual_seed(seed)
    layout = MODULES if modules is None else modules
    adapters = []
    for t in range(num_adapters):
        r = ranks[t % len(ranks)]
        mods = {
            name: LoraModule(
                B=torch.randn(d_out, r, generator=gen),
                A=torch.randn(r, d_in, generator=gen),
                transposed=transposed,
            )
            for name, (d_out, d_in, transposed) in layout.items()
        }
        adapters.append(Adapter(name=f"t{t}", modules=mods))
    return AdapterSet.from_adapters(adapters)


def map_factors(
    adapter_set: AdapterSet, fn: Callable[[int, LoraModule], tuple[torch.Tensor, torch.Tensor]]
) -> AdapterSet:
    """A new set whose module factors are ``fn(adapter_index, module) -> (B, A)``."""
    adapters = [
        Adapter(
            name=a.name,
            modules={n: m.with_factors(*fn(t, m)) for n, m in a.modules.items()},
        )
        for t, a in enumerate(adapter_set)
    ]
    return AdapterSet.from_adapters(adapters)


def reparametrize(adapter_set: AdapterSet, *, seed: int = 1) -> AdapterSet:
    """The same ΔW_t with factors ``(B·M, M⁻¹·A)`` for a random well-conditioned ``M (r, r)``."""
    gen = torch.Generator().manual_seed(seed)

    def mix(_: int, m: LoraModule) -> tuple[torch.Tensor, torch.Tensor]:
        q, _r = torch.linalg.qr(torch.randn(m.rank, m.rank, generator=gen, dtype=torch.float64))
        M = q * (0.5 + 1.5 * torch.rand(m.rank, generator=gen, dtype=torch.float64))  # cond <= 4
        B = (m.B.double() @ M).float()  # (d_out, r) @ (r, r)
        A = (torch.linalg.inv(M) @ m.A.double()).float()  # (r, r) @ (r, d_in)
        return B, A

    return map_factors(adapter_set, mix)


def negated(adapter_set: AdapterSet, index: int) -> AdapterSet:
    """The set with adapter ``index`` replaced by its negation (``-B``, ``A``)."""
    return map_factors(adapter_set, lambda t, m: (-m.B if t == index else m.B, m.A))


def twin(adapter_set: AdapterSet, index: int = 0) -> AdapterSet:
    """Two copies of adapter ``index`` (named ``<name>`` and ``<name>_copy``)."""
    first = adapter_set.adapters[index]
    copy = Adapter(name=f"{first.name}_copy", modules=dict(first.modules), config=first.config)
    return AdapterSet.from_adapters([first, copy])


def from_deltas(deltas: Sequence[dict[str, torch.Tensor]]) -> AdapterSet:
    """Adapters whose ΔW are given exactly: ``B = I``, ``A = ΔW`` (for hand-computed cases)."""
    adapters = []
    for t, per_module in enumerate(deltas):
        mods = {
            name: LoraModule(B=torch.eye(dw.shape[0]), A=dw.float())
            for name, dw in per_module.items()
        }
        adapters.append(Adapter(name=f"t{t}", modules=mods))
    return AdapterSet.from_adapters(adapters)


def linear_deltas(adapter_set: AdapterSet, module: str) -> list[torch.Tensor]:
    """Each adapter's ΔW of ``module`` in the linear layout ``(d_out, d_in)``, float32."""
    return [m.B.float() @ m.A.float() for m in adapter_set.factors(module)]


@pytest.fixture
def tiny_set() -> AdapterSet:
    """Three adapters, ranks 4/3/4, three modules (square, non-square, transposed)."""
    return make_adapter_set()


@pytest.fixture
def pair_set() -> AdapterSet:
    """Two rank-4 adapters."""
    return make_adapter_set(2, ranks=(4,), seed=5)


@pytest.fixture
def single_set() -> AdapterSet:
    """One rank-4 adapter."""
    return make_adapter_set(1, ranks=(4,), seed=7)


@pytest.fixture
def make_set() -> Callable[..., AdapterSet]:
    """The :func:`make_adapter_set` factory."""
    return make_adapter_set


@pytest.fixture
def reparam() -> Callable[..., AdapterSet]:
    """The :func:`reparametrize` helper: same ΔW, factors ``(B·M, M⁻¹·A)``."""
    return reparametrize


@pytest.fixture
def negate() -> Callable[[AdapterSet, int], AdapterSet]:
    """The :func:`negated` helper: flip one adapter's sign."""
    return negated


@pytest.fixture
def twin_of() -> Callable[..., AdapterSet]:
    """The :func:`twin` helper: two copies of one adapter (cancellation tests)."""
    return twin


@pytest.fixture
def set_from_deltas() -> Callable[[Sequence[dict[str, torch.Tensor]]], AdapterSet]:
    """The :func:`from_deltas` helper: adapters with hand-written ΔW."""
    return from_deltas


@pytest.fixture
def deltas_of() -> Callable[[AdapterSet, str], list[torch.Tensor]]:
    """The :func:`linear_deltas` helper: per-adapter ΔW of one module, linear layout."""
    return linear_deltas
