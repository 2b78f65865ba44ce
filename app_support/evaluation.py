"""Per-task evaluation of merges on the sample bundle, and the Merge page's headline numbers.

Accuracy needs labelled data, so it exists only when every adapter of the set is a task of the
open bundle; otherwise the functions say why there is nothing to show. Scores are the paper's
normalised accuracy in percent (100 = the task's own fine-tuned adapter), on the **test** split.

Scores are cached per server (``st.cache_resource``) keyed by what produced the merge and its
per-module norms, so five sessions showing the same default merge score it once.
Task Arithmetic's reference point is its best λ on the **validation** split (never the test
split; the first ``TA_CHOICE_ROWS`` inputs of each task), scored on the test split like
everything else.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from app_support import state
from app_support.session_cache import per_object
from app_support.workset import load_bundle
from merging_core.adapters import AdapterSet
from merging_core.merge import MergeResult, merge
from merging_core.methods import get_method

BASELINE_METHOD = "task_arithmetic"
TA_GRID = tuple(round(0.1 * i, 1) for i in range(1, 11))  # λ candidates, chosen on validation
TA_CHOICE_ROWS = 64  # validation inputs per task that choose λ (a transformer bundle's forward
#   costs ~1 GFLOP per input on the CPU: 10 λ × all rows would take minutes)
SPLIT = "test"


def current_bundle() -> Any | None:
    """The open bundle, or None."""
    name = st.session_state.get(state.BUNDLE_NAME, "")
    return load_bundle(name)[0] if name else None


def bundle_name(bundle: Any) -> str:
    return str(bundle.manifest.get("name", "bundle"))


def result_key(result: MergeResult) -> tuple[Any, ...]:
    """A content key of a merge result: what produced it plus its per-module norms (computed
    once per result object in a session: the baseline's key is asked for on every rerun)."""
    return per_object("evaluation.result_key", result, lambda: _content_key(result), size=64)


def _content_key(result: MergeResult) -> tuple[Any, ...]:
    norms = tuple(round(m.norm(), 9) for m in result.modules.values())
    return (result.method, repr(sorted(result.params.items())), result.seed,
            result.adapter_names, norms)  # fmt: skip


@st.cache_resource(max_entries=4096, show_spinner=False)
def _score(name: str, key: str, task: str, split: str, _bundle: Any, _result: Any) -> float:
    # a bundle's fixed slider subset (None: every row), normalised by its own individual accuracies
    report = _bundle.evaluate(_result, tasks=[task], split=split, rows=_bundle.slider_rows)
    report = report["tasks"][task]
    return 100.0 * float(report["normalized"])


def normalised_scores(
    bundle: Any,
    result: MergeResult,
    tasks: Sequence[str],
    *,
    on_task: Callable[[str], None] | None = None,
    split: str = SPLIT,
) -> dict[str, float]:
    """{task: normalised accuracy in %} of ``result`` on ``split`` (cached per server).

    Tasks are scored one at a time and ``on_task`` is called before each, so a page can draw
    between tasks (which also lets Streamlit stop a run that a newer slider value made stale).
    """
    key = repr(result_key(result))
    scores = {}
    for task in tasks:
        if on_task is not None:
            on_task(task)
        scores[task] = _score(bundle_name(bundle), key, task, split, bundle, result)
    return scores


@st.cache_resource(max_entries=32, show_spinner=False)
def _ta_best(name: str, set_key: str, _bundle: Any, _adapter_set: AdapterSet) -> tuple[float, Any]:
    tasks = list(_adapter_set.names)
    best, best_avg, best_result = TA_GRID[0], -1.0, None
    for lam in TA_GRID:
        result = merge(_adapter_set, BASELINE_METHOD, scaling=lam)
        scores = _bundle.evaluate(result, tasks=tasks, split="validation", rows=TA_CHOICE_ROWS)
        avg = scores["average_normalized"]
        if avg is not None and avg > best_avg:
            best, best_avg, best_result = lam, avg, result
    return best, best_result


def ta_best(bundle: Any, adapter_set: AdapterSet, set_key: str) -> tuple[float, MergeResult]:
    """Task Arithmetic at the λ in ``TA_GRID`` with the best validation average (cached)."""
    with st.spinner("Choosing Task Arithmetic's best λ on the validation split (once)…"):
        return _ta_best(bundle_name(bundle), set_key, bundle, adapter_set)


@dataclass(frozen=True)
class Scores:
    """What the Merge page shows: per-task series and their averages (all in %, test split).

    Attributes:
        series: label -> {task -> normalised accuracy}; the merge first.
        averages: label -> mean over the tasks.
        merge, ta, zero_shot: the labels of the three rows.
        ta_lambda: Task Arithmetic's λ chosen on validation.
    """

    series: dict[str, dict[str, float]]
    averages: dict[str, float]
    merge: str
    ta: str
    zero_shot: str
    ta_lambda: float


def accuracy_series(
    adapter_set: AdapterSet,
    result: MergeResult,
    context: Any,
    set_key: str,
    *,
    on_task: Callable[[str], None] | None = None,
) -> tuple[Scores | None, str]:
    """This merge, Task Arithmetic at its best λ and the zero-shot base model, or a reason."""
    bundle = current_bundle()
    if context is None or bundle is None:
        return None, "needs the sample bundle's labelled test data for these adapters."
    tasks = list(adapter_set.names)
    lam, baseline = ta_best(bundle, adapter_set, set_key)
    individual = bundle.individual_accuracy()
    zero_shot = bundle.zero_shot_accuracy()
    labels = (f"this merge ({get_method(result.method).pretty_name})",
              f"Task Arithmetic, best λ = {lam:g}", "zero-shot base model")  # fmt: skip
    series = {
        labels[0]: normalised_scores(bundle, result, tasks, on_task=on_task),
        labels[1]: normalised_scores(bundle, baseline, tasks, on_task=on_task),
        labels[2]: {t: 100.0 * zero_shot[t] / individual[t] for t in tasks},
    }
    averages = {k: sum(v.values()) / len(v) for k, v in series.items()}
    return Scores(series, averages, *labels, ta_lambda=lam), ""
