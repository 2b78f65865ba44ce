"""``merge-lab bundle init``: make a bundle of your own model, adapters and data (in place).

    merge-lab bundle init OUT --base MODEL_DIR --adapter NAME=ADAPTER_DIR ...
                          --data NAME=VALIDATION.jsonl[,TEST.jsonl] ... [--num-labels N]
                          [--classes NAME=a,b,c ...] [--max-length L] [--name N] [--overwrite]

Writes ``OUT/manifest.json`` only (paths referenced, not copied); every command takes the folder
as ``--bundle OUT`` and the app's Adapters page opens it.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "bundle", help="make a bundle of your own transformers classifier, adapters and data"
    )
    sub = parser.add_subparsers(dest="bundle_command", required=True)
    init = sub.add_parser(
        "init",
        help="write OUT/manifest.json referencing a base model, SEQ_CLS adapters and JSONL data",
        description="A transformers-classification bundle: base model folder, one PEFT SEQ_CLS "
        "LoRA adapter (with its trained head) and JSONL data (text, text_pair?, label?) per task.",
    )
    init.add_argument("out", help="bundle folder to create")
    init.add_argument("--base", required=True, help="local transformers model folder")
    init.add_argument("--adapter", action="append", default=[], metavar="NAME=DIR", required=True,
                      help="task name and its PEFT SEQ_CLS adapter folder (repeatable)")  # fmt: skip
    init.add_argument("--data", action="append", default=[], metavar="NAME=VAL[,TEST]", required=True,
                      help="task name and its validation (unlabeled use) and test JSONL")  # fmt: skip
    init.add_argument("--classes", action="append", default=[], metavar="NAME=a,b,c",
                      help="class names of a task (default: 0..num_labels-1)")  # fmt: skip
    init.add_argument("--num-labels", type=int, default=None, help="head rows (default: read)")
    init.add_argument("--max-length", type=int, default=128, help="tokenizer truncation (128)")
    init.add_argument("--name", default=None, help="bundle name (default: the folder name)")
    init.add_argument("--overwrite", action="store_true", help="replace an existing manifest")
    init.set_defaults(func=run)


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip() or not value.strip():
            raise ValueError(f"{flag} expects NAME=VALUE, got {item[:80]!r}")
        if name in out:
            raise ValueError(f"{flag} names task {name!r} twice")
        out[name.strip()] = value.strip()
    return out


def run(args: argparse.Namespace) -> int:
    from merging_core.bundles.user_bundle import init_bundle

    manifest = init_bundle(
        args.out, base=args.base, adapters=_pairs(args.adapter, "--adapter"),
        data={k: v.split(",") for k, v in _pairs(args.data, "--data").items()},
        num_labels=args.num_labels,
        classes={k: v.split(",") for k, v in _pairs(args.classes, "--classes").items()},
        max_length=args.max_length, name=args.name, overwrite=args.overwrite,
    )  # fmt: skip
    tasks = ", ".join(t["name"] for t in manifest["tasks"])
    print(f"wrote {args.out}/manifest.json: bundle {manifest['name']!r} with tasks {tasks}")
    print(f"use it as --bundle {args.out} (merge-lab evaluate|tara|tradeoff|sensitivity|merge)")
    return 0
