"""Element-wise steps of TIES and DARE (methods.md L5): trim, elect, disjoint mean, drop, rescale.

Space: ΔW, or any task tensor (KnOTS blocks, Core Space cores), entry by entry. Several tasks'
tensors come as a list (or one tensor with the task on dim 0) and are accumulated one task at a
time, never stacked. Nothing here draws from the global RNG: dropping takes an explicit
``torch.Generator``. Also the option checks and sign-election choices that the engines in
:mod:`merging_core.elementwise.streaming` and :mod:`merging_core.elementwise.fused` share with the
methods.

The global trim threshold of the official TIES (top-k% over *all* of a task's coordinates) is
found without holding all of them at once by :func:`magnitude_threshold`: a two-pass radix select
on the float32 bit pattern of ``|x|`` (monotone for non-negative floats), 65 536 bins per pass.
It is exact; for LoRA ΔW the fused engine finds the same value in one pass.

References:
    TIES-Merging: https://arxiv.org/abs/2306.01708
    DARE: https://arxiv.org/abs/2311.03099
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch

SignMethod = Literal["total", "frequency"]
TieRule = Literal["majority", "positive"]
SIGN_METHODS = ("total", "frequency")
TIE_RULES = {"total": "majority", "frequency": "positive"}  # official / PEFT (see ties.py)
_LOW_BITS = 16
_BINS = 1 << _LOW_BITS
_NON_FINITE = 0x7F80  # high 16 bits of +inf; every larger pattern is NaN


def check_density(density: float) -> None:
    """``ValueError`` unless ``0 < density <= 1``."""
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    """``ValueError`` naming ``name`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def kept_count(density: float, numel: int) -> int:
    """How many coordinates a trim at ``density`` keeps: ``int(density · numel)`` (as PEFT).

    The official TIES notebook keeps one more (``kthvalue(d - int(d·k))`` then ``>=``).
    """
    check_density(density)
    return int(density * numel)


def trim_by_magnitude(
    tensor: torch.Tensor, *, density: float, threshold: float | None = None
) -> torch.Tensor:
    """Zero all but the largest-magnitude entries of ``tensor``.

    Args:
        tensor: any shape.
        density: fraction kept, in (0, 1]. Used when ``threshold`` is None (per-tensor trim):
            exactly ``int(density · numel)`` entries survive (``torch.topk``, as PEFT's ``prune``).
        threshold: a global threshold from :func:`magnitude_threshold`; entries with
            ``|x| >= threshold`` survive (the official TIES trim over a whole task).

    Returns:
        Same shape and dtype, trimmed entries set to 0.
    """
    check_density(density)
    if threshold is not None:
        return tensor * (tensor.abs() >= threshold)
    k = kept_count(density, tensor.numel())
    if k == tensor.numel():
        return tensor.clone()
    flat = tensor.reshape(-1)
    mask = torch.zeros_like(flat, dtype=torch.bool)
    mask[torch.topk(flat.abs(), k=k, largest=True).indices] = True
    return tensor * mask.reshape(tensor.shape)


def magnitude_threshold(
    make_chunks: Callable[[], Iterable[torch.Tensor]], *, density: float
) -> float:
    """Exact global trim threshold: the ``k``-th largest ``|x|`` over all chunks.

    ``k = int(density · N)`` with ``N`` the total number of entries, so keeping ``|x| >= threshold``
    keeps exactly ``k`` entries unless several equal the threshold. Two streaming passes over
    ``make_chunks()`` (it is called twice and must yield the same tensors both times).

    Args:
        make_chunks: returns a fresh iterable of tensors (e.g. one task's ΔW per module).
        density: fraction kept, in (0, 1].

    Returns:
        The threshold as a float; ``inf`` when ``k == 0`` (nothing is kept, or no entries).

    Raises:
        ValueError: bad density or a non-finite entry.
    """
    check_density(density)
    high = _histogram(make_chunks(), prefix=None)  # (65536,) counts of the top 16 bits
    if high[_NON_FINITE:].any():  # exponent all ones: |x| is inf or NaN
        raise ValueError("cannot trim a tensor with NaN or infinite entries")
    k = kept_count(density, int(high.sum()))
    if k == 0:
        return math.inf
    top, rest = _select_bucket(high, k)
    low = _histogram(make_chunks(), prefix=top)  # low 16 bits of entries in bucket `top`
    bottom, _ = _select_bucket(low, rest)
    bits = torch.tensor([(top << _LOW_BITS) | bottom], dtype=torch.int32)
    return float(bits.view(torch.float32)[0])


def _magnitude_bits(chunk: torch.Tensor) -> torch.Tensor:
    """``|x|`` as int32 bit patterns; non-negative and ordered like the values."""
    mags = chunk.detach().reshape(-1).abs().to(torch.float32).contiguous()
    return mags.view(torch.int32)


def _histogram(chunks: Iterable[torch.Tensor], *, prefix: int | None) -> np.ndarray:
    """Counts of the high 16 bits, or the low 16 bits of entries whose high 16 are ``prefix``.

    The 65 536-bin bookkeeping runs in NumPy: single-threaded and cheap, where torch's
    multi-threaded kernels on 64K-element tensors stall on a busy machine.
    """
    counts = np.zeros(_BINS, dtype=np.int64)
    for chunk in chunks:
        bits = _magnitude_bits(chunk)
        if prefix is None:
            keys = bits >> _LOW_BITS
        else:
            keys = bits[(bits >> _LOW_BITS) == prefix] & (_BINS - 1)
        counts += np.bincount(keys.cpu().numpy(), minlength=_BINS)
    return counts


def _select_bucket(counts: np.ndarray, k: int) -> tuple[int, int]:
    """Bucket holding the ``k``-th largest entry, and that entry's rank inside the bucket."""
    at_or_above = np.cumsum(counts[::-1])[::-1]  # (bins,) entries in this bucket or higher
    bucket = int(np.flatnonzero(at_or_above >= k).max())
    above = int(at_or_above[bucket] - counts[bucket])
    return bucket, k - above


def elect_sign(
    tasks: Sequence[torch.Tensor] | torch.Tensor,
    *,
    method: SignMethod = "total",
    tie: TieRule = "majority",
) -> torch.Tensor:
    """Elected sign per coordinate, ``T × (...) -> (...)`` with values in {-1, 0, +1}.

    Args:
        tasks: trimmed task tensors of one shape: a list, or one tensor with the task on dim 0.
            They are accumulated one at a time (no ``(T, ...)`` stack is built).
        method: ``"total"`` = sign of the summed values (TIES "mass", official and PEFT default);
            ``"frequency"`` = sign of the summed signs (PEFT's other option).
        tie: what a zero score becomes. ``"majority"`` (official ``resolve_zero_signs``): the sign
            of the sum of all elected signs of this tensor, 0 if that is 0 too; ``"positive"``
            (PEFT, mergekit): +1.

    Raises:
        ValueError: unknown ``method`` or ``tie``, or no tasks.
    """
    if method not in ("total", "frequency"):
        raise ValueError(f"sign method must be 'total' or 'frequency', got {method!r}")
    if tie not in ("majority", "positive"):
        raise ValueError(f"tie rule must be 'majority' or 'positive', got {tie!r}")
    if len(tasks) == 0:
        raise ValueError("cannot elect a sign from zero task tensors")
    score = torch.zeros_like(tasks[0])
    for x in tasks:
        score += x if method == "total" else x.sign()
    if tie == "positive":
        return torch.where(score >= 0, 1.0, -1.0).to(score.dtype)
    sign = score.sign()
    return torch.where(sign == 0, sign.sum().sign(), sign)


def disjoint_mean(
    tasks: Sequence[torch.Tensor] | torch.Tensor,
    sign: torch.Tensor,
    *,
    weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Mean over the tasks that agree with the elected sign, ``T × (...) -> (...)``.

    A task counts at a coordinate when its entry is non-zero and has the elected sign; the result
    is ``Σ_agreeing w_t τ_t / #agreeing`` (0 where none agrees). Weights scale the values but
    not the count, as in PEFT's ``disjoint_merge``. Tasks are accumulated one at a time.

    Args:
        tasks: trimmed task tensors (unweighted; signs are read from these), a list or a tensor
            with the task on dim 0.
        sign: ``(...)`` elected signs from :func:`elect_sign`.
        weights: ``T`` per-task weights (all 1 when None).

    Raises:
        ValueError: ``weights`` length differs from the number of tasks.
    """
    if weights is not None and len(weights) != len(tasks):
        raise ValueError(f"got {len(weights)} weights for {len(tasks)} task tensors")
    total = torch.zeros_like(sign)
    count = torch.zeros_like(sign)
    for t, x in enumerate(tasks):
        agree = (x.sign() == sign) & (x != 0)
        weighted = x if weights is None else x * float(weights[t])
        total += weighted * agree
        count += agree
    return total / count.clamp(min=1)


def drop_and_rescale(
    tensor: torch.Tensor, *, drop_rate: float, generator: torch.Generator | None
) -> torch.Tensor:
    """DARE: drop each entry with probability ``p``, scale survivors by ``1 / (1 - p)``.

    Args:
        tensor: any shape, on any device (the mask is drawn on CPU from ``generator``, so a
            seed gives the same mask everywhere).
        drop_rate: ``p`` in [0, 1). ``p = 0`` returns an exact copy and draws nothing.
        generator: the source of randomness (None uses torch's global RNG; the merge functions
            always pass one).

    Raises:
        ValueError: ``drop_rate`` outside [0, 1).
    """
    if not 0.0 <= drop_rate < 1.0:
        raise ValueError(f"drop_rate must be in [0, 1), got {drop_rate}")
    if drop_rate == 0.0:
        return tensor.clone()
    keep_prob = torch.full(tensor.shape, 1.0 - drop_rate, dtype=torch.float32)
    keep = torch.bernoulli(keep_prob, generator=generator).to(tensor.device, tensor.dtype)
    return tensor * keep / (1.0 - drop_rate)
