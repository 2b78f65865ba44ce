"""LoRA-LEGO (Zhao et al., ICLR 2025): cluster all adapters' rank-1 units, one unit per cluster.

Space: factors. A LoRA update is a sum of rank-1 units ``ΔW = Σ_k b_k a_kᵀ`` (``b_k`` a column
of ``B`` with the scale folded in, ``a_k`` a row of ``A``); LEGO treats each unit as a "minimal
semantic unit". Per module, the ``N = Σ_t r_t`` units of all adapters are pooled and:

1. featurised as ``[a/‖a‖; b/‖b‖]`` (``(N, d_in + d_out)``, ε = 1e-8 in the norms);
2. grouped by k-means into ``K`` clusters (``K = r`` by default; init = ``K`` distinct units
   drawn at random, Lloyd iterations on squared Euclidean distance, an empty cluster keeps its
   centroid; the labels are those of the last assignment step);
3. each cluster becomes one unit, the mean of its raw ``[a; b]``; with *parameter reweighting*
   that mean is rescaled so its max-abs entry equals the cluster's mean max-abs entry;
4. ``ΔW = ρ Σ_c b̄_c ā_cᵀ`` with *output reweighting* ``ρ = sqrt(r / K)`` (1 when ``K = r``).

The result is exact LoRA factors of rank ``<= K``: ``B = ρ [b̄_1 … b̄_K]``, ``A = [ā_1; …; ā_K]``.
It depends on how each ΔW is split into factors (units of ``(B·M, M⁻¹·A)`` differ), and the
random initialisation depends on the order of the pool (adapter order, then unit order), so it is
neither factorisation- nor order-invariant; with ``K >= N`` every unit is its own cluster and the
merge is the exact sum (times ρ). One adapter merged alone with ``K = r`` returns it.

Read against the TARA repository's baseline (``src/merge_strategy.py``, ``LoRA_LEGO``; the same
function ships with the NSC-Merging code), which is the grid TARA reports: ``K = r``, 10
iterations, both reweightings on. Differences: ``r`` there is the first adapter's rank and is used
for every adapter (mixed ranks break it), here ``r`` is the largest rank and each adapter
contributes all its units; the init comes from the caller's generator, one seed per module (there
the global RNG when no seed is set, shared across modules in set order); units use the
scale-folded ``b`` (there the raw PEFT ``lora_B``: the same clusters, but the max-abs
reweighting can differ when the LoRA scale ``α/r`` is not 1).

Reference: https://arxiv.org/abs/2409.16167 (ICLR 2025)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.factors import CORE_DTYPE
from merging_core.methods.registry import Param, register_method
from merging_core.results import (
    MergedModule,
    MergeResult,
    Progress,
    report_progress,
    result_from_modules,
)

EPS_NORM = 1e-8
EPS_REWEIGHT = 1e-12


def unit_pool(modules: Sequence[LoraModule]) -> tuple[torch.Tensor, torch.Tensor]:
    """Raw units ``[a; b]`` and features ``[a/‖a‖; b/‖b‖]`` of one module, ``(N, d_in + d_out)``.

    Units are ordered by adapter, then by rank index. float64.
    """
    A = torch.cat([m.A.to(CORE_DTYPE) for m in modules], dim=0)  # (N, d_in)
    B = torch.cat([m.B.to(CORE_DTYPE).T for m in modules], dim=0)  # (N, d_out)
    raw = torch.cat([A, B], dim=1)
    features = torch.cat(
        [
            A / (A.norm(dim=1, keepdim=True) + EPS_NORM),
            B / (B.norm(dim=1, keepdim=True) + EPS_NORM),
        ],
        dim=1,
    )
    return raw, features


def kmeans(
    x: torch.Tensor, clusters: int, *, iterations: int, generator: torch.Generator | None
) -> torch.Tensor:
    """Lloyd's k-means labels ``(N,)`` for ``x`` ``(N, D)``; each point alone when ``K >= N``.

    Init: ``K`` distinct rows drawn with ``generator``. An empty cluster keeps its centroid.
    """
    n = x.shape[0]
    if clusters >= n:
        return torch.arange(n)
    centroids = x[torch.randperm(n, generator=generator)[:clusters]].clone()  # (K, D)
    sq_norms = (x * x).sum(1, keepdim=True)  # (N, 1)
    labels = torch.zeros(n, dtype=torch.long)
    for _ in range(iterations):
        # ‖x − c‖² = ‖x‖² − 2 x·c + ‖c‖²  -> (N, K)
        dist = sq_norms - 2.0 * x @ centroids.T + (centroids**2).sum(1)
        labels = dist.argmin(dim=1)
        members = torch.zeros(clusters, n, dtype=x.dtype)
        members[labels, torch.arange(n)] = 1.0  # (K, N) one-hot
        counts = members.sum(1)  # (K,)
        filled = counts > 0
        centroids[filled] = (members[filled] @ x) / counts[filled, None]  # (K', N) @ (N, D)
    return labels


def lego_factors(
    modules: Sequence[LoraModule],
    *,
    clusters: int,
    iterations: int,
    param_reweighting: bool,
    output_reweighting: bool,
    generator: torch.Generator | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """LEGO-merged factors of one module: ``B (d_out, K')``, ``A (K', d_in)``, float32.

    Args:
        modules: the module's factors in every task.
        clusters: ``K``; 0 means the largest rank ``r``.
        iterations, param_reweighting, output_reweighting: as the module docstring.
    """
    rank = max(m.rank for m in modules)
    k = clusters or rank
    raw, features = unit_pool(modules)
    labels = kmeans(features, k, iterations=iterations, generator=generator)
    d_in = modules[0].d_in
    a_rows, b_cols = [], []
    for c in range(int(labels.max()) + 1 if labels.numel() else 0):
        members = raw[labels == c]  # (n_c, d_in + d_out)
        if members.shape[0] == 0:
            continue
        mean = members.mean(dim=0)
        if param_reweighting:
            target = members.abs().amax(dim=1).mean()
            mean = mean * (target / (mean.abs().amax() + EPS_REWEIGHT))
        a_rows.append(mean[:d_in])
        b_cols.append(mean[d_in:])
    rho = (rank / k) ** 0.5 if output_reweighting else 1.0
    B = rho * torch.stack(b_cols, dim=1)  # (d_out, K')
    A = torch.stack(a_rows, dim=0)  # (K', d_in)
    return B.float(), A.float()


@register_method(
    name="lora_lego",
    pretty_name="LoRA-LEGO (rank-1 unit clustering)",
    reference_url="https://arxiv.org/abs/2409.16167",
    space="factors",
    tags=("tradeoff-baseline",),
    params=(
        Param(
            "clusters",
            "int",
            0,
            low=0,
            high=4096,
            step=1,
            help="K, the merged rank (number of clusters); 0 = the largest adapter rank r.",
        ),
        Param(
            "kmeans_iters",
            "int",
            10,
            low=1,
            high=200,
            step=1,
            help="Lloyd iterations of k-means (official: 10).",
        ),
        Param(
            "param_reweighting",
            "bool",
            True,
            help="Rescale each merged unit to its cluster's mean max-abs entry (official: on).",
        ),
        Param(
            "output_reweighting",
            "bool",
            True,
            help="Multiply the merge by sqrt(r / K) (official: on; 1 when K = r).",
        ),
    ),
)
def lora_lego(
    adapter_set: AdapterSet,
    *,
    clusters: int = 0,
    kmeans_iters: int = 10,
    param_reweighting: bool = True,
    output_reweighting: bool = True,
    generator: torch.Generator | None = None,
    progress: Progress | None = None,
) -> MergeResult:
    """LoRA-LEGO: k-means over all rank-1 units, one averaged unit per cluster; acts on factors.

    Args:
        adapter_set: the adapters; task order = pool order.
        clusters: ``K`` (0 = largest rank). kmeans_iters: Lloyd iterations.
        param_reweighting, output_reweighting: the two LEGO rescalings.
        generator: source of the k-means initialisations. progress: optional callback.
    """
    names = adapter_set.modules
    seeds = torch.randint(0, 2**62, (len(names),), generator=generator).tolist()
    modules: dict[str, MergedModule] = {}
    ranks: dict[str, int] = {}
    for i, name in enumerate(names):
        mods = adapter_set.factors(name)
        B, A = lego_factors(
            mods,
            clusters=clusters,
            iterations=kmeans_iters,
            param_reweighting=param_reweighting,
            output_reweighting=output_reweighting,
            generator=torch.Generator().manual_seed(seeds[i]),
        )
        modules[name] = MergedModule.from_factors(mods[0], B, A)
        ranks[name] = int(A.shape[0])
        report_progress(progress, (i + 1) / len(names), name)
    return result_from_modules(adapter_set, modules, diagnostics={"merged_rank": ranks})
