"""Sign-conflict rates *estimated* from sampled entries of ΔW, with confidence intervals.

Space: ΔW, element-wise (same quantities as :mod:`merging_core.geometry.conflicts`), but no dense
``ΔW_t`` is formed: an entry is ``ΔW_t[p, q] = B_t[p, :] · A_t[:, q]``, so a sample of entries
costs ``O(samples · r)``. The estimates depend on ΔW only (the same for ``(B M, M⁻¹ A)``) up to
float32 rounding of entries that are numerically zero.

Design. ``clusters`` independent blocks of ``side × side`` entries; each block draws its rows and
its columns uniformly with replacement, so every sampled entry is uniform over the matrix and the
blocks are i.i.d. (a block is one small batched matmul, far cheaper than gathering single
entries). Per block ``c`` we count active entries ``x_c`` (some task nonzero, after trimming) and
conflicting ones ``y_c``.

* **Raw rate** ``r̂ = Σ y_c / Σ x_c``: the ratio of two unbiased estimates (of the conflicting
  and of the active fractions); exactly unbiased when every entry is active, the generic case
  for dense LoRA updates.
* **Trimmed rate**: each task's top-``density`` threshold is the sample quantile of its sampled
  magnitudes (``k = max(1, round(density · N))``-th largest of ``N`` samples, ties kept, as the
  exact pass does on the whole tensor), then the same counts.
* **Interval** at level ``confidence``: the wider of (a) the block-robust ratio interval
  ``r̂ ± t · se``, ``se² = C/(C−1) Σ (y_c − r̂ x_c)² / (Σ x)²`` (``t`` with one degree of
  freedom less than the blocks holding an active entry) and (b) the Wilson score interval on
  ``(Σ y, Σ x)``. (a) accounts for entries of one block being correlated, (b) keeps an honest
  width when every block agrees (e.g. a rate of exactly 1). For the trimmed rate the thresholds
  are themselves estimates: the rate is re-estimated at the thresholds of density
  ``d ± z · se(d̂)`` (``se`` of the kept fraction, block-robust) and the interval covers all
  three. No active entry sampled: rate 0 with interval ``[0, 1]`` (unknown), or ``[0, 0]`` when
  every task's ΔW is exactly zero.

Reference (the rate itself): https://arxiv.org/abs/2306.01708
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
import torch

from merging_core.geometry._gram import check_pairs
from merging_core.geometry.conflicts import sign_conflict_rates

DEFAULT_SAMPLES = 65_536
BLOCK_SIDE = 16


@dataclass(frozen=True)
class ConflictEstimate:
    """A sign-conflict rate with its confidence interval.

    Attributes:
        rate: point estimate in ``[0, 1]`` (exact when ``exact``).
        low, high: interval bounds (``low = high = rate`` when ``exact``).
        samples: entries looked at (``m · n`` when exact).
        active: sampled active entries (``-1`` when exact: not counted separately).
        exact: counted on every entry (the module had no more entries than the sample).
    """

    rate: float
    low: float
    high: float
    samples: int
    active: int
    exact: bool = False


def sample_entries(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    *,
    clusters: int,
    side: int = BLOCK_SIDE,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``clusters`` random ``side × side`` blocks of every ``ΔW_t``: ``(T, clusters, side²)``.

    Rows and columns of each block are drawn uniformly with replacement (one draw shared by the
    tasks), so entry ``[t, c, i·side + j]`` is ``ΔW_t[p_ci, q_cj]``. float32, on the factors'
    device.
    """
    check_pairs(Bs, As)
    m, n, T = int(Bs[0].shape[0]), int(As[0].shape[1]), len(Bs)
    device = Bs[0].device  # positions are drawn on CPU (same draw on every device)
    rows = torch.randint(0, m, (clusters * side,), generator=generator).to(device)
    cols = torch.randint(0, n, (clusters * side,), generator=generator).to(device)
    out = torch.empty(T, clusters, side, side, device=device)
    for t, (B, A) in enumerate(zip(Bs, As, strict=True)):
        Bp = B.float().index_select(0, rows).view(clusters, side, -1)  # (C, side, r)
        Aq = A.float().index_select(1, cols).view(-1, clusters, side)  # (r, C, side)
        torch.bmm(Bp, Aq.permute(1, 0, 2), out=out[t])  # (C, side, r) @ (C, r, side)
    return out.view(T, clusters, side * side)


def estimate_sign_conflicts(
    Bs: Sequence[torch.Tensor],
    As: Sequence[torch.Tensor],
    *,
    densities: Sequence[float] = (1.0,),
    samples: int = DEFAULT_SAMPLES,
    confidence: float = 0.95,
    generator: torch.Generator | None = None,
) -> tuple[ConflictEstimate, ...]:
    """Estimated sign-conflict rate per trim density, from ``samples`` sampled entries.

    Args:
        Bs: per task ``(m, r_t)`` (scale folded). As: per task ``(r_t, n)``.
        densities: trim densities in ``(0, 1]`` (1 = raw rate, no trim).
        samples: entries to sample (rounded up to whole ``16 × 16`` blocks, at least 4 blocks);
            a module with no more entries than that is counted exactly instead.
        confidence: interval level in ``(0, 1)``.
        generator: source of the sampled positions.

    Returns:
        One :class:`ConflictEstimate` per density (see the module docstring for the maths).

    Raises:
        ValueError: misaligned factors, a density outside ``(0, 1]``, ``samples < 1`` or a
            confidence outside ``(0, 1)``.
    """
    check_pairs(Bs, As)
    _check_options(densities, samples, confidence)
    m, n = int(Bs[0].shape[0]), int(As[0].shape[1])
    clusters = max(4, math.ceil(samples / BLOCK_SIDE**2))
    if m * n <= clusters * BLOCK_SIDE**2:  # counting every entry is cheaper than sampling
        rates = sign_conflict_rates(Bs, As, densities=densities)
        return tuple(ConflictEstimate(r, r, r, m * n, -1, exact=True) for r in rates)
    x = sample_entries(Bs, As, clusters=clusters, generator=generator).cpu()  # (T, C, s²)
    all_zero = all(
        float(B.abs().sum()) * float(A.abs().sum()) == 0.0 for B, A in zip(Bs, As, strict=True)
    )
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    return tuple(_estimate_density(x, d, z, all_zero) for d in densities)


def _check_options(densities: Sequence[float], samples: int, confidence: float) -> None:
    for d in densities:
        if not 0.0 < d <= 1.0:
            raise ValueError(f"density must be in (0, 1], got {d}")
    if int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")


def _estimate_density(
    x: torch.Tensor, density: float, z: float, all_zero: bool
) -> ConflictEstimate:
    """Rate and interval at one trim density (``x`` is ``(T, C, s²)`` sampled entries)."""
    xn = x.numpy()
    if density >= 1.0:
        return _interval(*_block_counts(xn, None), z, all_zero)
    T, C, _ = xn.shape
    bits = np.abs(xn).reshape(T, -1).view(np.int32)  # |x| bit patterns, ordered like |x|
    N = bits.shape[1]
    select = _TopSelect(bits, _kept(min(1.0, density + 4 * z * math.sqrt(density / N)), N))
    tau = select.threshold(_kept(density, N))
    kept = (bits >= tau[:, None]).reshape(T, C, -1).mean(axis=(0, 2))  # (C,) kept fraction
    se = max(float(kept.std(ddof=1)) / math.sqrt(C), math.sqrt(density * (1 - density) / N))
    ds = (density, min(1.0, density + z * se), max(1.0 / N, density - z * se))
    estimates = [
        _interval(*_block_counts(xn, select.threshold(_kept(d, N)).view(np.float32)), z, all_zero)
        for d in ds
    ]
    mid = estimates[0]
    return ConflictEstimate(
        rate=mid.rate,
        low=min(e.low for e in estimates),
        high=max(e.high for e in estimates),
        samples=mid.samples,
        active=mid.active,
    )


def _kept(density: float, n: int) -> int:
    return max(1, int(round(density * n)))


class _TopSelect:
    """Order statistics of each row's largest entries: one partition, then a sort of the top.

    ``bits`` is ``(T, N)`` int32 (magnitude bit patterns); ``cap`` is the largest kept count
    expected. A request beyond ``cap`` sorts the whole row (rare: very wide intervals).
    """

    def __init__(self, bits: np.ndarray, cap: int) -> None:
        self.bits, self.N = bits, bits.shape[1]
        self.cap = min(cap, self.N)
        top = np.partition(bits, self.N - self.cap, axis=1)[:, self.N - self.cap :]
        self.top = np.sort(top, axis=1)  # (T, cap) ascending: the cap largest of each row

    def threshold(self, k: int) -> np.ndarray:
        """Each row's ``k``-th largest entry, ``(T,)`` int32."""
        if k > self.cap:
            self.cap, self.top = self.N, np.sort(self.bits, axis=1)
        return np.ascontiguousarray(self.top[:, self.cap - k])


def _block_counts(xn: np.ndarray, tau: np.ndarray | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block: conflicting and active entry counts ``(C,)`` each (float64).

    ``xn`` is ``(T, C, s²)``; ``tau`` the per-task thresholds (``|x| >= tau`` kept) or None.
    """
    if tau is not None:
        xn = xn * (np.abs(xn) >= tau[:, None, None])
    pos = xn.max(axis=0) > 0  # (C, s²): some task positive
    neg = xn.min(axis=0) < 0
    conflict = (pos & neg).sum(axis=1)
    active = (pos | neg).sum(axis=1)
    return torch.from_numpy(conflict).double(), torch.from_numpy(active).double()


def _interval(y: torch.Tensor, x: torch.Tensor, z: float, all_zero: bool) -> ConflictEstimate:
    """Ratio estimate ``Σy/Σx`` with the wider of the block-robust and Wilson intervals."""
    samples = int(y.numel()) * BLOCK_SIDE**2
    n, hits = float(x.sum()), float(y.sum())
    if n == 0.0:
        return ConflictEstimate(0.0, 0.0, 0.0 if all_zero else 1.0, samples, 0)
    rate = hits / n
    lo_w, hi_w = wilson(hits, n, z)
    used = int((x > 0).sum())
    C = int(x.numel())
    resid = y - rate * x
    se = math.sqrt(C / max(C - 1, 1) * float((resid**2).sum())) / n
    t = student_t_quantile(z, max(used - 1, 1))
    low, high = min(lo_w, rate - t * se), max(hi_w, rate + t * se)
    return ConflictEstimate(rate, max(0.0, low), min(1.0, high), samples, int(n))


def wilson(hits: float, n: float, z: float) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``hits / n`` (``n > 0``)."""
    p = hits / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def student_t_quantile(z: float, df: int) -> float:
    """Student-t quantile from the normal one ``z`` (Cornish–Fisher, 3 terms; exact as df → ∞).

    For ``df < 3`` the expansion is too short, so the exact closed forms are used.
    """
    if df == 1:
        p = NormalDist().cdf(z)
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        p = NormalDist().cdf(z)
        a = 4 * p * (1 - p)
        return (2 * p - 1) * math.sqrt(2 / a)
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3
