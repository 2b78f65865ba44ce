"""Fused element-wise engine: TIES and DARE on ``ΔW_t = B_t A_t`` straight from the factors.

Space: ΔW, formed from the LoRA factors one module at a time in blocks of rows (TIES with a
global or no trim, DARE). :class:`FactorDeltas` serves each module in row blocks;
:func:`fused_thresholds` finds the exact global thresholds in one pass (a sampled bracket, then
the order statistic among the few entries inside it); :func:`fused_ties_module` /
:func:`fused_sum_module` merge a module block by block with in-place float operations.

Each task's block is formed once per pass (float32, into a buffer reused by the next block),
trimmed in place and folded into running sums, so nothing module-sized exists but the output and
every block of every task stays in cache. Each entry goes through the same float32 operations, in
the same task order, as trim_by_magnitude → elect_sign → disjoint_mean (and drop_and_rescale) of
:mod:`merging_core.elementwise.steps`, so the result is the same bytes as the streaming engine
(:mod:`merging_core.elementwise.streaming`); only whole-tensor bookkeeping (masks, T trimmed
copies) is gone.

References:
    TIES-Merging: https://arxiv.org/abs/2306.01708
    DARE: https://arxiv.org/abs/2311.03099
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from functools import partial

import numpy as np
import torch

from merging_core.adapters import AdapterSet, LoraModule
from merging_core.elementwise.steps import (
    SIGN_METHODS,
    TIE_RULES,
    SignMethod,
    check_choice,
    check_density,
    drop_and_rescale,
    kept_count,
    magnitude_threshold,
)
from merging_core.elementwise.streaming import dense_result, lazy_result, streams
from merging_core.results import MergeResult, Progress, report_progress

BLOCK_ELEMENTS = 1 << 18
"""Entries per task in one row block (1 MiB of float32): T blocks plus five accumulators of this
size fit in a shared L3 cache."""
ROW_ALIGN = 64
"""Row blocks start at multiples of this. MKL's sgemm gives ``B[r0:r1] @ A`` bit-equal to those
rows of ``B @ A`` for such blocks (the short tail is merged into the last block); a 1-row or
7-row slice takes other kernels and can differ in the last bit."""
BRACKET_SAMPLES = 1 << 20
"""Sampled entries per task for the trim threshold's bracket; tasks with fewer entries skip the
sample and select among all of them."""
BRACKET_Z = 6.0
"""Half-width of the bracket in binomial standard deviations of the sampled rank: a miss (the
exact threshold outside) has probability ~1e-9 and only costs a radix select."""
BRACKET_SEED = 0


def row_blocks(rows: int, cols: int) -> list[tuple[int, int]]:
    """Row ranges ``[(r0, r1), …]`` covering ``rows``, about ``BLOCK_ELEMENTS`` entries each,
    starting at multiples of :data:`ROW_ALIGN`, the short tail merged into the last range."""
    step = max(ROW_ALIGN, BLOCK_ELEMENTS // max(cols, 1) // ROW_ALIGN * ROW_ALIGN)
    starts = list(range(0, rows, step)) or [0]
    ends = [*starts[1:], rows]
    if len(starts) > 1 and ends[-1] - starts[-1] < step:
        starts.pop()
        ends.pop(-2)
    return list(zip(starts, ends, strict=True))


class FactorDeltas:
    """``ΔW_t = B_t A_t`` of every module (part) and task, served in row blocks, float32.

    With ``drop_rate > 0`` each ``(part, task)`` tensor is dropped and rescaled as
    :func:`drop_and_rescale` with a generator seeded by ``seeds[part][task]``: the keep-mask is
    drawn block after block from that one generator, which is the same sequence of draws (torch's
    CPU Bernoulli draws one number per entry in order) and so the same mask as one draw over the
    whole tensor.

    Args:
        factors: ``factors[part][task]`` LoRA modules (B ``(m, r)``, A ``(r, n)``).
        drop_rate: DARE's ``p`` in [0, 1); 0 serves ΔW as is.
        seeds: ``num_parts × num_tasks`` seeds (from :func:`mask_seeds`) when dropping.
    """

    def __init__(
        self,
        factors: Sequence[Sequence[LoraModule]],
        *,
        drop_rate: float = 0.0,
        seeds: list[list[int]] | None = None,
    ) -> None:
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
        if drop_rate > 0.0 and seeds is None:
            raise ValueError("dropping needs one seed per (part, task); got seeds=None")
        self.pairs = [[(f.B.float(), f.A.float()) for f in part] for part in factors]
        self.drop_rate = drop_rate
        self.seeds = seeds

    @property
    def num_parts(self) -> int:
        return len(self.pairs)

    @property
    def num_tasks(self) -> int:
        return len(self.pairs[0]) if self.pairs else 0

    def shape(self, part: int) -> tuple[int, int]:
        B, A = self.pairs[part][0]
        return int(B.shape[0]), int(A.shape[1])

    def numel(self) -> int:
        """Entries of one task over all parts (every task has the same shapes)."""
        return sum(m * n for m, n in map(self.shape, range(self.num_parts)))

    def dense(self, part: int, task: int) -> torch.Tensor:
        """The whole ``(m, n)`` tensor, as the unfused path forms it (fallbacks and tests)."""
        B, A = self.pairs[part][task]
        dw = B @ A  # (m, r) @ (r, n) -> (m, n)
        if self.drop_rate == 0.0:
            return dw
        gen = torch.Generator().manual_seed(self.seeds[part][task])
        return drop_and_rescale(dw, drop_rate=self.drop_rate, generator=gen)

    def blocks(
        self, part: int, workspace: dict[int, torch.Tensor] | None = None
    ) -> Iterable[tuple[int, int, list[torch.Tensor]]]:
        """``(r0, r1, [ΔW_t[r0:r1] for every task])`` over the row blocks of ``part``.

        The tensors are buffers that the next block overwrites; callers may change them.
        ``workspace`` (a dict the caller owns) keeps them for the next part of the same block
        size, so one pass over many modules allocates them once.
        """
        m, n = self.shape(part)
        spans = row_blocks(m, n)
        size = max(b - a for a, b in spans) * n
        work = {} if workspace is None else workspace
        if size not in work:
            work[size] = torch.empty(self.num_tasks + 2, size)
        bufs, keep_prob, keep = work[size][:-2], work[size][-2], work[size][-1]
        dropping = self.drop_rate > 0.0
        if dropping:
            gens = [torch.Generator().manual_seed(s) for s in self.seeds[part]]
            keep_prob.fill_(1.0 - self.drop_rate)
        for a, b in spans:
            rows = []
            for t, (B, A) in enumerate(self.pairs[part]):
                x = bufs[t][: (b - a) * n].view(b - a, n)
                torch.matmul(B[a:b], A, out=x)  # (rows, r) @ (r, n)
                if dropping:
                    mask = keep[: x.numel()].view_as(x)
                    mask.bernoulli_(keep_prob[: x.numel()].view_as(x), generator=gens[t])
                    x.mul_(mask).div_(1.0 - self.drop_rate)
                rows.append(x)
            yield a, b, rows

    def sample(self, task: int, count: int, generator: torch.Generator) -> torch.Tensor:
        """About ``count`` entries of task ``task``, ``ΔW[p, q] = B[p, :] · A[:, q]``, drawn
        uniformly within each part, parts stratified by size; dropped with their own draws
        when dropping. Only brackets the threshold, so it need not match the blocks' bits."""
        total = self.numel()
        values = []
        for part in range(self.num_parts):
            m, n = self.shape(part)
            draws = round(count * m * n / total)
            if draws == 0:
                continue
            B, A = self.pairs[part][task]
            At = A.T.contiguous()  # (n, r): gathered by rows
            p = torch.randint(0, m, (draws,), generator=generator)
            q = torch.randint(0, n, (draws,), generator=generator)
            for a in range(0, draws, 1 << 14):  # (s, r) · (s, r) -> (s,), in cache-sized chunks
                rows = B.index_select(0, p[a : a + (1 << 14)])
                values.append(rows.mul_(At.index_select(0, q[a : a + (1 << 14)])).sum(1))
        sample = torch.cat(values) if values else torch.zeros(0)
        if self.drop_rate > 0.0:
            keep = torch.rand(sample.numel(), generator=generator) >= self.drop_rate
            sample = sample * keep / (1.0 - self.drop_rate)
        return sample


def factor_deltas(
    adapter_set: AdapterSet, *, drop_rate: float = 0.0, seeds: list[list[int]] | None = None
) -> FactorDeltas:
    """:class:`FactorDeltas` over the modules of ``adapter_set`` (parts in module order)."""
    factors = [adapter_set.factors(name) for name in adapter_set.modules]
    return FactorDeltas(factors, drop_rate=drop_rate, seeds=seeds)


def sampled_bracket(sample: torch.Tensor, *, kept: float) -> tuple[float, float]:
    """``(lo, hi)`` that holds the exact threshold with high probability (``lo <= thr < hi``).

    ``kept`` is the kept fraction ``k / N``; the number of sampled magnitudes at or above the
    threshold is Binomial(S, kept), and the bracket spans :data:`BRACKET_Z` standard deviations
    either side. ``hi = inf`` or ``lo = 0`` where that reaches past the sample.
    """
    mags = np.abs(sample.numpy())  # (S,)
    size = mags.size
    mid, spread = size * kept, BRACKET_Z * math.sqrt(size * kept * (1.0 - kept))
    top_hi, top_lo = math.floor(mid - spread), math.ceil(mid + spread)  # ranks from the top
    ranks = [size - r for r in (top_hi, top_lo) if 1 <= r <= size]
    order = np.partition(mags, ranks) if ranks else mags  # two order statistics, O(S)
    hi = math.inf if top_hi < 1 else float(order[size - top_hi])
    lo = 0.0 if top_lo > size else float(order[size - top_lo])
    if hi <= lo:
        hi = float(torch.nextafter(torch.tensor(lo), torch.tensor(math.inf)))
    return lo, hi


def _below(value: float) -> float:
    """The largest float32 below ``value`` (``|x| > _below(v)`` ⟺ ``|x| >= v`` for float32 x)."""
    return float(torch.nextafter(torch.tensor(value), torch.tensor(-math.inf)))


def fused_thresholds(
    source: FactorDeltas, *, density: float, progress: Progress | None = None
) -> list[float]:
    """Exact global trim thresholds (the ``k``-th largest ``|ΔW_t|`` per task) in one pass.

    Per task a sampled bracket ``[lo, hi)`` (:func:`sampled_bracket`); one pass over the row
    blocks of every module counts the entries at or above ``hi`` and keeps the few in between;
    the threshold is the exact order statistic among those (``np.partition``). The same value
    as :func:`magnitude_threshold` (and ``torch.kthvalue``); a task whose bracket missed falls
    back to that radix select.

    Raises:
        ValueError: bad density, or a NaN / infinite entry.
    """
    check_density(density)
    total = source.numel()
    k = kept_count(density, total)
    if k == 0:
        return [math.inf] * source.num_tasks
    gen = torch.Generator().manual_seed(BRACKET_SEED)
    brackets = [
        (0.0, math.inf)
        if total <= BRACKET_SAMPLES
        else sampled_bracket(source.sample(t, BRACKET_SAMPLES, gen), kept=k / total)
        for t in range(source.num_tasks)
    ]
    above = [0] * source.num_tasks
    inside: list[list[np.ndarray]] = [[] for _ in range(source.num_tasks)]
    workspace: dict[int, torch.Tensor] = {}  # block buffers shared by parts of one shape
    for i in range(source.num_parts):
        for _, _, rows in source.blocks(i, workspace):
            for t, x in enumerate(rows):
                count, values = _bracket_block(x, *brackets[t])
                above[t] += count
                inside[t].append(values)
        report_progress(progress, (i + 1) / source.num_parts, f"trim thresholds, part {i + 1}")
    thresholds = []
    for t in range(source.num_tasks):
        found = _select(inside[t], above[t], k, total, brackets[t][0])
        if found is None:  # the bracket missed (rare): exact radix select, two more passes
            chunks = lambda t=t: (source.dense(i, t) for i in range(source.num_parts))  # noqa: E731
            found = magnitude_threshold(chunks, density=density)
        thresholds.append(found)
    return thresholds


def _bracket_block(x: torch.Tensor, lo: float, hi: float) -> tuple[int, np.ndarray]:
    """Entries of ``x`` with ``|x| >= hi`` (a count) and the non-zero ``|x|`` in ``[lo, hi)``."""
    mags = np.abs(x.numpy())
    top = float(mags.max()) if mags.size else 0.0
    if not math.isfinite(top):
        raise ValueError("cannot trim a tensor with NaN or infinite entries")
    if top < lo:
        return 0, mags[:0]
    count = int(np.count_nonzero(mags >= hi)) if top >= hi else 0
    keep = ((mags >= lo) if lo > 0.0 else (mags > 0.0)) & (mags < hi)
    return count, mags[keep]


def _select(inside: list[np.ndarray], above: int, k: int, total: int, lo: float) -> float | None:
    """The ``k``-th largest magnitude given ``above`` entries ``>= hi`` and the non-zero ones in
    ``[lo, hi)``; None when the bracket missed it. With ``lo = 0`` the uncollected zeros are in
    the bracket too."""
    values = np.concatenate(inside) if inside else np.zeros(0, np.float32)
    need = k - above  # rank of the threshold among the bracket, from the top
    zeros = total - above - values.size if lo == 0.0 else 0
    if need < 1 or need > values.size + zeros:
        return None
    if need > values.size:
        return 0.0
    return float(np.partition(values, values.size - need)[values.size - need])


def fused_ties_module(
    source: FactorDeltas,
    part: int,
    *,
    thresholds: Sequence[float] | None,
    sign_method: SignMethod,
    weights: Sequence[float],
    scaling: float,
) -> torch.Tensor:
    """TIES of one part, ``(m, n)`` float32: the bytes of :func:`ties_part_functions` with
    global (or no) thresholds, computed block by block.

    Per block, float operations only (no boolean masks, no index copies): trim in place with
    ``hardshrink`` at the largest float below the threshold (keeps ``|x| >= thr`` exactly); the
    score sums the trimmed values (or their signs) in task order; with the provisional sign
    ``s`` (ties read as +1) a task agrees where ``relu(s·x) > 0``, so ``Σ w_t relu(s·x_t)`` is
    ``s ·`` the disjoint sum (sign flips are exact) and ``Σ sign(relu(s·x_t))`` its count. The
    official tie rule (``"total"``) elects the sign of the module's summed signs where the score
    is exactly zero; entries there with content (exact cancellations, rare) are kept aside and
    redone at the end. Zeros come out as ``+0`` like the unfused path's.
    """
    m, n = source.shape(part)
    out = torch.empty(m, n)
    majority = TIE_RULES[sign_method] == "majority"
    no_trim = [None] * source.num_tasks
    shrink = no_trim if thresholds is None else [_shrink_at(thr) for thr in thresholds]
    work = torch.empty(7, max(b - a for a, b in row_blocks(m, n)) * n)  # reused per block
    sign_sum, held = 0.0, []
    for a, b, rows in source.blocks(part):
        score, sign, prov, total, count, tmp, tmp2 = (w[: (b - a) * n].view(b - a, n) for w in work)
        for t, (x, lam) in enumerate(zip(rows, shrink, strict=True)):
            if lam is not None:
                torch.hardshrink(x, lam, out=x)  # trim: zero where |x| < thr
            vote = x if sign_method == "total" else torch.sign(x, out=tmp)
            score.copy_(vote) if t == 0 else score.add_(vote)  # only sign(score) is read
        torch.sign(score, out=sign)
        torch.add(sign, 0.5, out=prov).sign_()  # ties read as +1 for now
        _disjoint_block(rows, prov, weights, total, count, tmp, tmp2)
        if majority:
            sign_sum += float(sign.sum())
            held += _cancelled(rows, sign, count, offset=a * n)
        torch.div(total, count.clamp_(min=1), out=out[a:b]).mul_(prov).add_(0.0).mul_(scaling)
    if held and sign_sum <= 0:  # tied entries take the module's majority sign, -1 or 0
        _redo_ties(out, held, -1.0 if sign_sum < 0 else 0.0, weights, scaling)
    return out


def _shrink_at(threshold: float) -> float | None:
    """``hardshrink`` lambda that keeps ``|x| >= threshold``; None when everything is kept."""
    return None if threshold <= 0.0 else _below(threshold)


def _disjoint_block(
    rows: Sequence[torch.Tensor],
    sign: torch.Tensor,
    weights: Sequence[float],
    total: torch.Tensor,
    count: torch.Tensor,
    tmp: torch.Tensor,
    tmp2: torch.Tensor,
) -> None:
    """``total = Σ w_t relu(s·x_t)`` and ``count = #{t : s·x_t > 0}``, in task order (the
    first task written, not added to zeros: the values are the same, only zeros' signs may
    differ and the caller normalises them)."""
    for t, (x, w) in enumerate(zip(rows, weights, strict=True)):
        first = t == 0
        agree = torch.mul(x, sign, out=total if first else tmp).relu_()  # |x| where x agrees
        if first:
            torch.sign(agree, out=count)
        else:
            count.add_(torch.sign(agree, out=tmp2))
        if w != 1.0:
            agree.mul_(w)
        if not first:
            total.add_(agree)


def _cancelled(
    rows: Sequence[torch.Tensor], sign: torch.Tensor, count: torch.Tensor, *, offset: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Entries whose score is exactly 0 but which hold values (a positive one, as the provisional
    sign is +1 there): ``[(flat indices into the part, (T, k) trimmed values)]`` or ``[]``.
    Overwrites ``sign``."""
    tied = sign.abs_().sub_(1.0)  # -1 where the score is 0, else 0
    if float(torch.dot(tied.view(-1), count.view(-1))) == 0.0:
        return []
    idx = tied.mul_(count).view(-1).nonzero().squeeze(1)
    return [(idx + offset, torch.stack([x.reshape(-1)[idx] for x in rows]))]


def _redo_ties(
    out: torch.Tensor,
    held: list[tuple[torch.Tensor, torch.Tensor]],
    sign_value: float,
    weights: Sequence[float],
    scaling: float,
) -> None:
    """Recompute the held tied entries with the elected sign ``sign_value`` (same operations)."""
    flat = out.view(-1)
    for idx, values in held:
        sign = torch.full((idx.numel(),), sign_value)
        total, count, tmp, tmp2 = (torch.empty_like(sign) for _ in range(4))
        _disjoint_block(list(values), sign, weights, total, count, tmp, tmp2)
        flat[idx] = (total / count.clamp_(min=1)).mul_(sign).add_(0.0).mul_(scaling)


def fused_sum_module(
    source: FactorDeltas, part: int, *, weights: Sequence[float], scaling: float
) -> torch.Tensor:
    """``λ Σ_t w_t τ_t`` of one part, block by block (the bytes of :func:`weighted_sum_parts`)."""
    m, n = source.shape(part)
    out = torch.empty(m, n)
    for a, b, rows in source.blocks(part):
        acc = out[a:b].zero_()
        for x, w in zip(rows, weights, strict=True):
            acc.add_(x.mul_(w))
        acc.mul_(scaling)
    return out


def fused_ties_parts(
    source: FactorDeltas,
    *,
    density: float,
    sign_method: SignMethod,
    weights: Sequence[float],
    scaling: float,
    progress: Progress | None = None,
) -> tuple[list[Callable[[], torch.Tensor]], list[float] | None]:
    """Global TIES on ``source``: the exact per-task thresholds now (None when ``density = 1``),
    and one ``() -> merged part`` per part (:func:`fused_ties_module`)."""
    check_density(density)
    check_choice("sign_method", sign_method, SIGN_METHODS)
    thresholds = None
    if density < 1.0:
        thresholds = fused_thresholds(source, density=density, progress=progress)
    options = {"thresholds": thresholds, "sign_method": sign_method, "weights": list(weights),
               "scaling": scaling}  # fmt: skip
    parts = [partial(fused_ties_module, source, i, **options) for i in range(source.num_parts)]
    return parts, thresholds


def fused_sum_parts(
    source: FactorDeltas, *, weights: Sequence[float], scaling: float
) -> list[Callable[[], torch.Tensor]]:
    """One ``() -> λ Σ_t w_t τ_t`` per part (:func:`fused_sum_module`)."""
    options = {"weights": list(weights), "scaling": scaling}
    return [partial(fused_sum_module, source, i, **options) for i in range(source.num_parts)]


def elementwise_result(
    adapter_set: AdapterSet,
    parts: Sequence[Callable[[], torch.Tensor]],
    thresholds: list[float] | None,
    progress: Progress | None = None,
) -> MergeResult:
    """Lazy modules when the model :func:`streams`, else every part merged now and stored."""
    if streams(adapter_set):
        report_progress(progress, 1.0, "modules merge when read")
        return lazy_result(adapter_set, parts, thresholds)
    merged = []
    for i, part in enumerate(parts):
        merged.append(part())
        report_progress(progress, (i + 1) / len(parts), f"merged part {i + 1}/{len(parts)}")
    return dense_result(adapter_set, merged, thresholds)
