"""``merge-lab merge``: merge PEFT adapters and export the result, or replay a recipe.

    merge-lab merge DIR... --method NAME [--set k=v ...] [--rank N] [--seed S] --out OUT
                           [--overwrite] [--json]
    merge-lab merge --bundle B --method tara_b [--set k=v ...] --out OUT     (data-driven)
    merge-lab merge --recipe recipe.json [--bundle B] --out OUT [DIR...] [--overwrite] [--json]

``--set`` values go through the method's parameter spec (weights as comma lists, ``none`` for
the default). ``--bundle`` (a shipped bundle name or a bundle folder) supplies the task data of
data-driven methods, and its adapters when no DIR is given. With ``--recipe`` the inputs' weight
hashes and the task data's fingerprint are checked; DIRs, when given, replace the recorded paths
(same order). A text progress bar goes to stderr, results to stdout.
"""

from __future__ import annotations

import argparse
import json
import os
import stat
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from merging_core.adapters import AdapterSet
from merging_core.export import DENSE_RANK_CAP, ExportReport, check_rank, export_merge
from merging_core.merge import Progress, merge
from merging_core.methods import MethodInfo, get_method
from merging_core.recipe import build_recipe, parse_recipe, recipe_inputs, version_differences
from merging_core.replay import replay_recipe


def add_set_option(parser: argparse.ArgumentParser, *, example: str) -> None:
    """``--set K=V`` (repeatable), parsed later by :func:`parse_sets` against the method's spec."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="K=V",
        dest="sets",
        help=f"method parameter, repeatable (e.g. --set {example})",
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge",
        help="merge adapters and export a PEFT adapter (or replay a recipe)",
        description="Merge PEFT LoRA adapters with a registered method (see `merge-lab methods`) "
        "and write a PEFT adapter with recipe.json and a README model card; or replay a "
        "recipe.json bit for bit.",
    )
    parser.add_argument("dirs", nargs="*", metavar="DIR", help="PEFT adapter folders, task order")
    parser.add_argument("--method", help="method id (see `merge-lab methods`)")
    add_set_option(parser, example="weights=1,0.5,1")
    parser.add_argument(
        "--rank",
        type=int,
        default=None,
        help="export rank per module (default: exact rank; dense results "
        f"capped at {DENSE_RANK_CAP})",
    )
    parser.add_argument("--seed", type=int, default=None, help="seed for stochastic methods (0)")
    parser.add_argument(
        "--base-model", default=None, help="base model id for the config (default: the inputs' own)"
    )
    parser.add_argument("--recipe", type=Path, help="replay this recipe.json instead")
    parser.add_argument(
        "--history", default=os.environ.get("MERGE_LAB_HISTORY"),
        help="record the run in this history folder (default $MERGE_LAB_HISTORY)",
    )  # fmt: skip
    parser.add_argument("--bundle", default=None,
                        help="bundle name or folder: task data for data-driven methods (and its "
                             "adapters when no DIR is given)")  # fmt: skip
    parser.add_argument("--out", required=True, type=Path, help="output adapter folder")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    parser.add_argument("--json", action="store_true", help="print the export report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Merge or replay; every failure is one line on stderr and exit code 2 (via ``main``).

    Library refusals are ``ValueError``/``KeyError`` already; file-system errors (an unreadable
    input, a read-only or file-as-parent ``--out``, a full disk) and running out of memory are
    turned into a ``ValueError`` naming the file and the problem, never a traceback.
    """
    try:
        return _run(args)
    except OSError as err:
        raise ValueError(os_error_message(err, out=args.out)) from None
    except MemoryError:
        raise ValueError(
            "not enough memory to finish; try fewer adapters or a lower --rank"
        ) from None


def os_error_message(err: OSError, *, out: Path | None = None) -> str:
    """``"<file>: <problem>"`` for an ``OSError``; temp folders of a save are named as ``out``."""
    problem = err.strerror or str(err) or type(err).__name__
    where = err.filename
    if where is None:
        return f"cannot write {out}: {problem}" if out is not None else problem
    name = Path(os.fsdecode(where)).name
    if out is not None and name.startswith(f".{out.name}.") and ("tmp-" in name or "old-" in name):
        where = out
    target = f" -> {err.filename2}" if err.filename2 is not None else ""
    return f"{os.fsdecode(where)}{target}: {problem}"


def _run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.overwrite:
        raise ValueError(f"--out {str(args.out)!r} already exists; pass --overwrite to replace it")
    check_rank(args.rank)
    bar = None if args.no_progress else TextBar(sys.stderr)
    try:
        report, summary = _replay(args, bar) if args.recipe else _merge(args, bar)
    finally:
        if bar is not None:
            bar.close()
    _print(report, summary, as_json=args.json)
    return 0


def _merge(args: argparse.Namespace, bar: Progress | None) -> tuple[ExportReport, dict[str, Any]]:
    if not args.method:
        raise ValueError("merge needs --method NAME (or --recipe recipe.json)")
    info = get_method(args.method)
    params = parse_sets(info, args.sets)
    bundle = _bundle(args.bundle, needed=info.needs_data, method=info.name)
    adapter_set, dirs = _adapters(args.dirs, bundle)
    _notes([*adapter_set.issues, *(w for a in adapter_set for w in a.warnings)])
    seed = 0 if args.seed is None else args.seed
    task_data = bundle.task_data() if info.needs_data else None
    start = time.perf_counter()
    result = merge(adapter_set, info.name, seed=seed, progress=_part(bar, 0.0, 0.5),
                   task_data=task_data, **params)  # fmt: skip
    if args.history:
        _record(args.history, result, adapter_set, bundle, time.perf_counter() - start)
    base = args.base_model if args.base_model is not None else _common_base(adapter_set)
    recipe = build_recipe(
        result, inputs=recipe_inputs(adapter_set, dirs), rank=args.rank, base_model=base
    )
    report = export_merge(
        result,
        args.out,
        rank=args.rank,
        base_model=base,
        overwrite=args.overwrite,
        recipe=recipe,
        progress=_part(bar, 0.5, 0.5),
    )
    return report, {"method": info.name, "params": recipe["params"], "seed": seed}


def _replay(args: argparse.Namespace, bar: Progress | None) -> tuple[ExportReport, dict[str, Any]]:
    clashes = [
        flag
        for flag, given in (
            ("--method", args.method),
            ("--set", args.sets),
            ("--rank", args.rank is not None),
            ("--seed", args.seed is not None),
            ("--base-model", args.base_model is not None),
        )
        if given
    ]
    if clashes:
        raise ValueError(f"--recipe fixes the merge; drop {', '.join(clashes)}")
    recipe = parse_recipe(_read_recipe_text(args.recipe), source=str(args.recipe))
    _notes([f"{note}; the replay may not be bit-exact" for note in version_differences(recipe)])
    needs = bool(recipe.get("task_data"))
    bundle = _bundle(args.bundle, needed=needs, method=recipe["method"])
    report = replay_recipe(
        recipe, args.out, paths=args.dirs or None, overwrite=args.overwrite, progress=bar,
        task_data=bundle.task_data("cpu") if needs else None, recipe_dir=args.recipe.parent,
    )  # fmt: skip
    summary = {"method": recipe["method"], "params": recipe["params"], "seed": recipe["seed"]}
    return report, {**summary, "recipe": str(args.recipe)}


def _record(folder: str, result: Any, adapters: AdapterSet, bundle: Any, seconds: float) -> None:
    """Record the run in a history folder: scored on the bundle's test split when there is one
    whose tasks are these adapters, unscored (weights only) otherwise."""
    from merging_core.sweep.history import RunHistory, record_bundle_run, single_run_record

    if bundle is not None and set(adapters.names) <= set(bundle.task_names):
        scores = bundle.evaluate(result, tasks=list(adapters.names))
        record_bundle_run(folder, result, bundle, {"test": scores}, seconds)
        return
    inputs = {"adapters": [{"name": a.name, "sha256": a.sha256 or a.content_hash(),
                            "path": a.source} for a in adapters]}  # fmt: skip
    RunHistory(folder).record(single_run_record(result, inputs=inputs, scores={}, seconds=seconds))


def _bundle(name: str | None, *, needed: bool, method: str) -> Any:
    """The ``--bundle`` (None when not given and not needed)."""
    if name is None:
        if needed:
            raise ValueError(
                f"method {method!r} learns from unlabeled task data; pass --bundle NAME or FOLDER "
                "(e.g. --bundle vision8)"
            )
        return None
    from merging_core.bundles import load_bundle

    return load_bundle(name)


def _adapters(dirs: list[str], bundle: Any) -> tuple[AdapterSet, list[str]]:
    """The DIRs' adapters, or (no DIR) the bundle's, with the paths a recipe records."""
    from merging_core import io

    if dirs:
        return AdapterSet.from_adapters(io.load_adapters(dirs)), list(dirs)
    if bundle is None:
        raise ValueError("merge needs at least one adapter folder DIR (or --bundle)")
    adapters = bundle.adapter_set()
    return adapters, [a.source for a in adapters]


MAX_RECIPE_BYTES = 16 * 2**20


def _read_recipe_text(path: Path) -> str:
    """The recipe file's text; a folder, FIFO or device (or a huge file) is refused unread."""
    mode = path.stat().st_mode  # FileNotFoundError / PermissionError name the file
    if not stat.S_ISREG(mode):
        raise ValueError(f"--recipe {path}: not a regular file (a folder, FIFO or device?)")
    if path.stat().st_size > MAX_RECIPE_BYTES:
        raise ValueError(f"--recipe {path}: over {MAX_RECIPE_BYTES // 2**20} MiB, not a recipe")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"--recipe {path}: not UTF-8 text ({err.reason})") from None


def parse_sets(info: MethodInfo, sets: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> validated values through each parameter's spec.

    Raises:
        ValueError: an item without ``=``, a repeated key, or a value the spec rejects.
        KeyError: a parameter the method does not have.
    """
    raw: dict[str, Any] = {}
    for item in sets:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise ValueError(f"--set expects K=V, got {item!r}")
        if key in raw:
            raise ValueError(f"--set {key} given twice")
        raw[key] = _coerce(info.param(key), value.strip())
    return info.validate_params(raw)


def _coerce(param: Any, value: str) -> Any:
    """Text -> what ``Param.validate`` expects: ``none`` for None, choices matched by text."""
    if value.lower() in ("none", "null") and param.default is None:
        return None
    if param.kind == "choice":
        for choice in param.choices:
            if str(choice) == value:
                return choice
    return value


def _common_base(adapter_set: AdapterSet) -> str:
    bases = {a.config.base_model for a in adapter_set if a.config.base_model}
    return bases.pop() if len(bases) == 1 else ""


def _notes(notes: list[str]) -> None:
    for note in notes:
        print(f"note: {note}", file=sys.stderr)


def _part(progress: Progress | None, start: float, width: float) -> Progress | None:
    if progress is None:
        return None
    return lambda fraction, message: progress(start + width * fraction, message)


def _print(report: ExportReport, summary: dict[str, Any], *, as_json: bool) -> None:
    _notes(list(report.notes))
    if as_json:
        print(json.dumps({**summary, "report": report.to_dict()}, indent=2, ensure_ascii=False))
        return
    mods = report.modules
    print(f"wrote {report.path} ({summary['method']}, seed {summary['seed']})")
    print(f"  params      {json.dumps(summary['params'])}")
    print(
        f"  modules     {len(mods)}, rank {min(m.rank for m in mods)}–{report.max_rank}, "
        f"{report.num_params:,} LoRA parameters"
    )
    print(
        f"  rel. error  max {report.max_rel_error:.3e} "
        f"(retained energy min {report.min_retained_energy:.6f})"
    )
    capped = [
        m
        for m in mods
        if not m.factored and report.requested_rank is None and m.exact_rank > m.rank
    ]
    if capped:
        print(
            f"  note        {len(capped)} dense module(s) capped at rank {DENSE_RANK_CAP}; "
            "pass --rank to choose"
        )


class TextBar:
    """A one-line ``[#####     ]  42% message`` bar, redrawn in place on ``stream``."""

    def __init__(self, stream: TextIO, width: int = 30) -> None:
        self.stream, self.width, self.last, self.drawn = stream, width, -1, False

    def __call__(self, fraction: float, message: str) -> None:
        pct = int(round(100 * min(max(fraction, 0.0), 1.0)))
        if pct == self.last:
            return
        self.last, self.drawn = pct, True
        filled = "#" * (self.width * pct // 100)
        self.stream.write(f"\r[{filled:<{self.width}}] {pct:3d}% {message[:48]:<48}")
        self.stream.flush()

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\n")
            self.stream.flush()
