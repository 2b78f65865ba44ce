"""Per-task evaluation of merges on the sample bundle, cached per session.

Accuracy needs labelled test data, so it exists only when every adapter of the set is a task of
the open bundle; otherwise the functions say why there is nothing to show. Scores are the
paper's normalised accuracy in percent: 100 = the task's own fine-tuned adapter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import streamlit as st

from app_support import state
from app_support.session_cache import remember
from app_support.workset import load_bundle
from merging_core.adapters import AdapterSet
from merging_core.merge import MergeResult, merge

BASELINE_METHOD = "task_arithmetic"


def current_bundle() -> Any | None:
    """The open bundle, or None."""
    name = st.session_state.get(state.BUNDLE_NAME, "")
    return load_bundle(name)[0] if name else None


def result_key(result: MergeResult) -> tuple[Any, ...]:
    """A content key of a merge result: what produced it plus its per-module norms."""
    norms = tuple(round(m.norm(), 9) for m in result.modules.values())
    return (result.method, repr(sorted(result.params.items())), result.seed,
            result.adapter_names, norms)  # fmt: skip


def normalised_scores(
    bundle: Any,
    result: MergeResult,
    tasks: Sequence[str],
    *,
    on_task: Callable[[str], None] | None = None,
) -> dict[str, float]:
    """{task: normalised accuracy in %} of ``result`` on the bundle's test split (cached).

    Tasks are scored one at a time and ``on_task`` is called before each, so a page can draw
    between tasks (which also lets Streamlit stop a run that a newer slider value made stale).
    """
    key = (bundle.manifest.get("name"), result_key(result))
    scores = {}
    for task in tasks:
        if on_task is not None:
            on_task(task)
        scores[task] = remember("evaluate", (*key, task),
                                lambda t=task: _score(bundle, result, t), size=512)  # fmt: skip
    return scores


def _score(bundle: Any, result: MergeResult, task: str) -> float:
    report = bundle.evaluate(result, tasks=[task])["tasks"][task]
    return 100.0 * float(report["normalized"])


def accuracy_series(
    adapter_set: AdapterSet,
    result: MergeResult,
    context: Any,
    *,
    on_task: Callable[[str], None] | None = None,
) -> tuple[dict[str, dict[str, float]], str]:
    """{series -> {task -> normalised accuracy}} for the merge and its baselines, or a reason."""
    bundle = current_bundle()
    if context is None or bundle is None:
        return {}, "needs the sample bundle's labelled test data for these adapters."
    tasks = list(adapter_set.names)
    baseline = remember(
        "baseline", (result_key(result)[3], BASELINE_METHOD),
        lambda: merge(adapter_set, BASELINE_METHOD), size=8,
    )  # fmt: skip
    individual = bundle.individual_accuracy()
    zero_shot = bundle.zero_shot_accuracy()
    return {
        f"this merge ({result.method})": normalised_scores(bundle, result, tasks, on_task=on_task),
        "Task Arithmetic (λ = 0.4)": normalised_scores(bundle, baseline, tasks, on_task=on_task),
        "zero-shot base model": {t: 100.0 * zero_shot[t] / individual[t] for t in tasks},
    }, ""
