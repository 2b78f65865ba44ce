"""Parameter search with Optuna: tune chosen parameters on the validation split, report the best
recipe and its test score.

The spec's ``search`` section names the parameters and their ranges::

    search:
      params:
        scaling: {low: 0.05, high: 1.0}          # float (int / choice follow the method's spec)
        lr: {low: 1.0e-4, high: 1.0e-2, log: true}
        scalarisation: {choices: [stch, linear]}
      objective: average        # or a task name (its normalised validation accuracy)
      sampler: tpe              # or random
      seed: 0                   # seeds the sampler: the same spec gives the same trials

The study lives in ``DIR/search.sqlite`` (resumable: a re-run adds only the missing trials) and
every trial is an ordinary sweep point in ``DIR/points/`` (scored on validation and test), so a
repeated recipe is read back instead of merged again and ``sweep collect`` works on the folder.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from merging_core.sweep import store
from merging_core.sweep.spec import SweepSpec, point_for
from merging_core.sweep.worker import GroupTask, Source, Worker

SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class SearchSummary:
    """The study's outcome: trials in the study, those run now, the best trial's parameters,
    validation objective, point key and test scores."""

    trials: int
    ran: int
    best_params: Mapping[str, Any]
    best_value: float
    best_key: str
    best_test: Mapping[str, Any]
    objective: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "ran": self.ran,
            "best_params": dict(self.best_params),
            "best_value": self.best_value,
            "best_key": self.best_key,
            "best_test": dict(self.best_test),
            "objective": self.objective,
        }


def run_search(
    spec: SweepSpec,
    folder: str | Path,
    *,
    trials: int,
    executor: str = "serial",
    workers: int = 1,
    address: str | None = None,
    on_trial: Callable[[int, int, float | None], None] | None = None,
) -> SearchSummary:
    """Run the study of ``spec.search`` in ``folder`` until it holds ``trials`` trials.

    Trials are asked in batches of one per worker (``executor``: ``serial``, ``local`` or
    ``ray``, as for sweeps) and told back in order, so a run is deterministic for a given seed
    and worker count (one worker reproduces Optuna's sequential ``optimize``).

    Args:
        on_trial: ``callback(finished trials, target, best value so far)`` after each batch.

    Raises:
        ValueError: no search section, an unknown parameter or sampler, or no trial finished.
        ImportError: Optuna (or, for ``ray``, Ray) is not installed.
    """
    import optuna

    from merging_core.sweep.runner import open_pool

    if trials < 1:
        raise ValueError(f"trials must be >= 1, got {trials}")
    search = _check_search(spec)
    spec = replace(spec, splits=("validation", "test"))
    folder = Path(folder)
    driver = Worker(Source.from_spec(spec))
    store.save_spec(folder, spec.to_dict())
    study = _study(optuna, spec, search, folder)
    todo = max(0, trials - len(study.trials))
    batch = _Batch(spec, search, driver, folder)
    if todo:
        with open_pool(executor, spec, driver, workers, address) as pool:
            left = todo
            while left:
                asked = [study.ask() for _ in range(min(pool.workers, left))]
                for trial, value in zip(asked, batch.run(asked, pool), strict=True):
                    _tell(optuna, study, trial, value)
                left -= len(asked)
                if on_trial is not None:
                    on_trial(len(study.trials), trials, _best_value(study))
    if _best_value(study) is None:
        raise ValueError(f"no trial of the search in {folder} finished; see failed/ for errors")
    best = study.best_trial
    record = store.read_json(store.point_path(folder, best.user_attrs["key"]))
    return SearchSummary(
        trials=len(study.trials),
        ran=todo,
        best_params=best.params,
        best_value=float(best.value),
        best_key=best.user_attrs["key"],
        best_test=record["scores"]["test"],
        objective=search.get("objective", "average"),
    )


class _Batch:
    """Trials -> points: suggest values, run the points not on disk yet on the pool, read all
    records back, and score them on the validation split (None for a failed point)."""

    def __init__(self, spec: SweepSpec, search: Mapping[str, Any], driver: Worker, folder: Path):
        from merging_core.methods import get_method

        self.spec, self.search, self.driver, self.folder = spec, search, driver, folder
        self.params = {p.name: p for p in get_method(spec.method).params}

    def run(self, trials: list[Any], pool: Any) -> list[float | None]:
        points = [self._point(t) for t in trials]
        fresh = {p.key: p for p in points if not store.point_path(self.folder, p.key).is_file()}
        tasks = [GroupTask((p,), {}) for p in fresh.values()]
        pool.run(tasks, lambda task: None, self._save)
        return [self._value(p.key) for p in points]

    def _point(self, trial: Any) -> Any:
        values = {n: self._suggest(trial, n, r) for n, r in self.search["params"].items()}
        point = point_for(
            self.spec, values, tasks=self.driver.tasks, identity=self.driver.identity()
        )
        trial.set_user_attr("key", point.key)
        return point

    def _save(self, records: list[dict[str, Any]]) -> None:
        for record in records:
            record.pop("_state", None)
            store.save_point(self.folder, record)

    def _value(self, key: str) -> float | None:
        path = store.point_path(self.folder, key)
        if not path.is_file():
            return None  # failed: its error is in failed/<key>.json
        record = store.read_json(path)
        return _score(record["scores"]["validation"], self.search.get("objective", "average"))

    def _suggest(self, trial: Any, name: str, rng: Mapping[str, Any]) -> Any:
        if "choices" in rng:
            return trial.suggest_categorical(name, list(rng["choices"]))
        kind = "int" if name == "seed" else self.params[name].kind
        if kind == "int":
            return trial.suggest_int(
                name, int(rng["low"]), int(rng["high"]), log=bool(rng.get("log"))
            )
        return trial.suggest_float(
            name, float(rng["low"]), float(rng["high"]), log=bool(rng.get("log"))
        )


def _tell(optuna: Any, study: Any, trial: Any, value: float | None) -> None:
    if value is None:
        study.tell(trial, state=optuna.trial.TrialState.FAIL)
    else:
        study.tell(trial, value)


def _score(scores: Mapping[str, Any], objective: str) -> float:
    if objective == "average":
        return float(scores["average_normalized"])
    if objective not in scores["tasks"]:
        raise ValueError(
            f"search objective {objective!r} is not 'average' or a scored task "
            f"({list(scores['tasks'])})"
        )
    return float(scores["tasks"][objective]["normalized"])


def _check_search(spec: SweepSpec) -> Mapping[str, Any]:
    from merging_core.methods import get_method

    search = spec.search
    if not isinstance(search, Mapping) or not isinstance(search.get("params"), Mapping):
        raise ValueError("the spec needs a search section with params (name -> range)")
    known = {p.name for p in get_method(spec.method).params} | {"seed"}
    for name, rng in search["params"].items():
        if name not in known:
            raise ValueError(
                f"search parameter {name!r} is not a parameter of {spec.method!r}; "
                f"use one of {sorted(known)}"
            )
        if not isinstance(rng, Mapping) or not ("choices" in rng or {"low", "high"} <= set(rng)):
            raise ValueError(
                f"search parameter {name!r} needs low and high, or choices; got {rng!r}"
            )
    if search.get("sampler", "tpe") not in SAMPLERS:
        raise ValueError(
            f"search sampler must be one of {list(SAMPLERS)}, got {search['sampler']!r}"
        )
    return search


def _study(optuna: Any, spec: SweepSpec, search: Mapping[str, Any], folder: Path) -> Any:
    """Create or reopen the study; the sampler is seeded with the spec's seed plus the number of
    trials already stored, so a resumed study continues deterministically instead of
    repeating its first suggestions."""
    folder.mkdir(parents=True, exist_ok=True)
    name = (
        "search-"
        + hashlib.sha256(
            json.dumps(spec.to_dict(), sort_keys=True, default=str).encode()
        ).hexdigest()[:12]
    )
    study = optuna.create_study(
        study_name=name,
        storage=f"sqlite:///{(folder / 'search.sqlite').resolve()}",
        direction="maximize",
        load_if_exists=True,
    )
    seed = int(search.get("seed", 0)) + len(study.trials)
    if search.get("sampler", "tpe") == "random":
        study.sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        study.sampler = optuna.samplers.TPESampler(seed=seed)
    return study


def _best_value(study: Any) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None
