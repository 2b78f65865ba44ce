"""Running merges from the app: cached per session by content, with a progress bar.

Data-free merges are fast: they run in the session's own thread and are kept in a small
per-session LRU keyed by the adapter set's content key, the method, its parameters and the seed.
Data-driven merges (TARA, AdaMerging) go to the server's one job queue (:mod:`app_support.jobs`),
which runs them one at a time and lets their page show progress, a time estimate and a Stop.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

from app_support import state
from app_support.jobs import Job, server_queue
from app_support.library import device_label
from app_support.session_cache import progress_bar, remember
from app_support.workset import load_bundle
from merging_core.adapters import AdapterSet
from merging_core.merge import MergedModule, MergeResult, merge
from merging_core.methods import get_method

Progress = Callable[[float, str], None]


def params_key(params: Mapping[str, Any]) -> str:
    """Stable text form of merge parameters (cache key and recipe)."""
    return json.dumps(dict(params), sort_keys=True, default=list)


def run_with_progress(
    adapter_set: AdapterSet,
    set_key: str,
    method: str,
    params: Mapping[str, Any],
    *,
    seed: int = 0,
) -> MergeResult:
    """Run (or fetch) a data-free merge in this session's thread under a progress bar.

    A merge opened from elsewhere (a trade-off point) with these exact settings is shown as it is.
    """
    opened = opened_result(method, params, seed, adapter_set.names)
    if opened is not None:
        return opened
    info = get_method(method)
    report, done = progress_bar(f"{info.pretty_name} on {device_label()}:", show_message=False)
    key = (set_key, method, params_key(params), int(seed))
    try:
        return remember(
            "merge", key, lambda: call_merge(adapter_set, method, params, seed=seed,
                                             progress=report),
        )  # fmt: skip
    finally:
        done()


def submit_run(
    adapter_set: AdapterSet,
    set_key: str,
    method: str,
    params: Mapping[str, Any],
    *,
    seed: int,
    task_data: Any,
) -> Job:
    """Queue a data-driven merge on the server's queue, warm-started from this session's last run.

    The job's key is ``(set_key, method, params, seed)`` so the page can tell whether the settings
    on screen are the ones running; its result is a :class:`MergeResult` (partial when stopped).
    """
    info = get_method(method)
    generation, warm = warm_start_for(method, set_key)
    key = run_key(set_key, method, params, seed)
    history = os.environ.get(HISTORY_ENV)
    bundle = load_bundle(st.session_state.get(state.BUNDLE_NAME, ""))[0] if history else None

    def work(progress: Progress, should_stop: Callable[[], bool], _publish: Any) -> MergeResult:
        start = time.perf_counter()
        result = call_merge(
            adapter_set,
            method,
            params,
            seed=seed,
            progress=progress,
            task_data=task_data,
            warm_start=warm,
            should_stop=should_stop,
        )
        if bundle is not None and not result.run.get("stopped"):
            record_run(history, result, bundle, time.perf_counter() - start)
        return result

    label = f"{info.pretty_name} on {len(adapter_set)} adapters"
    job = server_queue().submit(key, label, work, stop_in_progress=False, isolated=True)
    job.meta.update(generation=generation, steps=params.get("steps"), set_key=set_key)
    return job


def keep_result(result: MergeResult) -> None:
    """Make ``result`` the app's current merge (what Export writes, with its recipe)."""
    st.session_state[state.MERGE_RESULT] = result
    st.session_state[state.MERGE_RECIPE] = {
        "method": result.method,
        "params": dict(result.params),
        "seed": int(result.seed),
        "adapters": list(result.adapter_names),
        "params_key": params_key(result.params),
    }


HISTORY_ENV = "MERGE_LAB_HISTORY"  # a folder: finished data-driven runs are recorded there


def record_run(folder: str, result: MergeResult, bundle: Any, seconds: float) -> None:
    """Record a finished run (test scores, learned state) in the run history ``folder``."""
    from merging_core.sweep.history import record_bundle_run

    scores = bundle.evaluate(result, tasks=list(result.adapter_names), split="test")
    record_bundle_run(folder, result, bundle, {"test": scores}, seconds)


def run_key(set_key: str, method: str, params: Mapping[str, Any], seed: int) -> tuple:
    """What a run computes, without its warm start: equal keys = the same settings on screen."""
    return (set_key, method, params_key(params), int(seed))


def remember_warm_start(method: str, set_key: str, result: MergeResult, generation: int) -> None:
    """Keep ``result``'s learned state as the next run's starting point."""
    learned = learned_state(result)
    if learned is not None and get_method(method).needs_data:
        st.session_state[state.WARM_START][(method, set_key)] = (generation + 1, learned)


def learned_state(result: MergeResult) -> Any:
    """The learned state of a data-driven result (φ / λ), or None."""
    return result.state or None


def opened_key(method: str, params: Mapping[str, Any], seed: int, names) -> tuple:
    """Key of a merge opened from elsewhere (a trade-off point): method, params, seed, inputs."""
    checked = get_method(method).validate_params(dict(params))
    return (method, params_key(checked), int(seed), tuple(names))


def open_result(result: MergeResult) -> None:
    """Make the Merge page show ``result`` itself when its settings are asked for next."""
    key = opened_key(result.method, result.params, result.seed, result.adapter_names)
    st.session_state[state.OPENED_RESULT] = {key: result}


def opened_result(method: str, params: Mapping[str, Any], seed: int, names) -> Any:
    """The opened merge with exactly these settings, or None."""
    return st.session_state[state.OPENED_RESULT].get(opened_key(method, params, seed, names))


def warm_start_for(method: str, set_key: str) -> tuple[int, Any]:
    """(generation, learned state) of this session's last run of ``method`` here, or (0, None)."""
    if not get_method(method).needs_data:
        return 0, None
    return st.session_state[state.WARM_START].get((method, set_key), (0, None))


def call_merge(
    adapter_set: AdapterSet,
    method: str,
    params: Mapping[str, Any],
    *,
    seed: int = 0,
    progress: Progress | None = None,
    task_data: Any = None,
    warm_start: Any = None,
    should_stop: Callable[[], bool] | None = None,
) -> MergeResult:
    """:func:`merging_core.merge.merge` (data-free methods ignore the data-driven arguments)."""
    return merge(
        adapter_set, method, seed=int(seed), progress=progress, task_data=task_data,
        warm_start=warm_start, should_stop=should_stop, **params,
    )  # fmt: skip


def identity_error(adapter_set: AdapterSet, name: str) -> float:
    """Max |ΔW error| of Task Arithmetic at scaling 1 on adapter ``name`` alone.

    Merging one adapter with weight 1 must give that adapter back; the dense comparison is the
    point of the check, one module at a time. Returns the largest absolute entry difference.
    """
    index = adapter_set.names.index(name)
    single = adapter_set.subset([index])
    result = merge(single, "task_arithmetic", scaling=1.0)
    adapter = single.adapters[0]
    worst = 0.0
    for module in single.modules:
        diff = result.delta(module) - adapter.delta(module)  # (d_out, d_in)
        worst = max(worst, float(diff.abs().max()))
    return worst


@dataclass(frozen=True)
class SetTerms:
    """What :func:`weight_space_retention` needs of the adapter set alone (fixed while a slider
    moves): per module the concatenated factors and each column's task, and per task ``Σ‖T‖²``."""

    factors: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]  # path -> (B, A, owner)
    task_sq: torch.Tensor  # (T,) float64


def set_terms(adapter_set: AdapterSet) -> SetTerms:
    """The adapter set's half of :func:`weight_space_retention` (computed once per set)."""
    factors = {}
    task_sq = torch.zeros(len(adapter_set), dtype=torch.float64)
    for module in adapter_set.modules:
        mods = adapter_set.factors(module)
        owner = torch.repeat_interleave(torch.tensor([m.rank for m in mods]))  # (R,) task of col
        B = torch.cat([m.B for m in mods], dim=1).double()  # (d_out, R)
        A = torch.cat([m.A for m in mods], dim=0).double()  # (R, d_in)
        task_sq += _per_task(_gram(B, B) * _gram(A.T, A.T), owner, len(mods))
        factors[module] = (B, A, owner)
    return SetTerms(factors, task_sq)


def weight_space_retention(
    adapter_set: AdapterSet, result: MergeResult, terms: SetTerms | None = None
) -> dict[str, dict[str, float]]:
    """Per task, how much of its update the merge keeps, measured in weight space (no data).

    Space: ΔW (via factors; nothing dense unless the merge itself is dense).
    Summed over modules m, with ``M`` the merged update and ``T`` the task's update:

    * ``cosine``: ``Σ⟨M, T⟩ / sqrt(Σ‖M‖² Σ‖T‖²)`` (direction kept; scale-free);
    * ``coefficient``: ``Σ⟨M, T⟩ / Σ‖T‖²`` (the task's effective weight in the merge: λ·w_t for
      Task Arithmetic on orthogonal tasks).

    ``terms``: :func:`set_terms` of ``adapter_set``, when the caller keeps them across merges.
    """
    terms = set_terms(adapter_set) if terms is None else terms
    dots = torch.zeros(len(adapter_set), dtype=torch.float64)
    merged_sq = 0.0
    for module, (B, A, owner) in terms.factors.items():
        dots += _per_task_dots(result.modules[module], B, A, owner, len(adapter_set))
        merged_sq += result.modules[module].norm() ** 2
    task_sq = terms.task_sq
    names = adapter_set.names
    cosine = {n: _ratio(float(dots[i]), (merged_sq * float(task_sq[i])) ** 0.5)
              for i, n in enumerate(names)}  # fmt: skip
    coefficient = {n: _ratio(float(dots[i]), float(task_sq[i])) for i, n in enumerate(names)}
    return {"cosine": cosine, "coefficient": coefficient}


def _gram(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    return X.T @ Y  # (k, d) @ (d, R) -> (k, R)


def _per_task(products: torch.Tensor, owner: torch.Tensor, count: int) -> torch.Tensor:
    """Sum the entries of an ``(R, R)`` product over each task's diagonal block -> ``(T,)``."""
    same = owner[:, None] == owner[None, :]  # (R, R) block-diagonal mask
    rows = (products * same).sum(dim=1)  # (R,)
    return torch.zeros(count, dtype=torch.float64).index_add_(0, owner, rows)


def _per_task_dots(
    merged: MergedModule, B: torch.Tensor, A: torch.Tensor, owner: torch.Tensor, count: int
) -> torch.Tensor:
    """``⟨M, B_t A_t⟩_F`` for every task t at once -> ``(T,)``."""
    if merged.factors is not None:
        # ⟨Bm Am, B_t A_t⟩ = Σ (Bmᵀ B_t) ⊙ (Am A_tᵀ): (k, R) ⊙ (k, R), summed per task block
        terms = _gram(merged.factors.B.double(), B) * _gram(merged.factors.A.double().T, A.T)
    else:
        # ⟨D, B_t A_t⟩ = Σ_j (Dᵀ... ) : column j of B against row j of A, (R,) terms
        terms = ((merged.dense.double().T @ B) * A.T).sum(dim=0, keepdim=True)  # (1, R)
    return torch.zeros(count, dtype=torch.float64).index_add_(0, owner, terms.sum(dim=0))


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0
