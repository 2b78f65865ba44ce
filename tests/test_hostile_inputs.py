"""A corpus of hostile and faulty inputs, each fed to the API, ``merge-lab inspect`` and
``merge-lab merge`` (and export, where it writes): every one gets a bounded answer.

Classes: catastrophic-backtracking patterns (hang), zero scale / absent targets / float32
overflow (silent), memory, OS errors and racing exports (crash), huge values and non-regular
files (unclear), and what an interrupted export leaves behind. The answer is always an
``AdapterLoadError`` / ``ValueError`` naming the file and the problem with values cut to ~80
characters, or a warning; the CLI prints one line and exits 2 (``inspect`` reports a refused
adapter as a row and exits 1), never a traceback.
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from merging_core import io
from merging_core.adapters import AdapterSet, LoraModule
from merging_core.cli import main
from merging_core.export import export_merge
from merging_core.io import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    AdapterLoadError,
    load_adapter,
    load_adapter_from_files,
    pattern_value,
    save_adapter,
)
from merging_core.keymatch import PatternRefused, peft_fullmatch, peft_key_matches
from merging_core.merge import merge

POSIX = os.name == "posix"
LONG_A = "x." + "a" * 34  # (a+)+b on this backtracks ~2^34 steps in re


@contextmanager
def bounded(seconds: float = 10.0):
    """Fail (instead of hanging the suite) if the block takes longer than ``seconds``."""
    if not POSIX:
        yield
        return

    def expire(*_):
        raise TimeoutError(f"took more than {seconds} s: unbounded")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _adapter(path: Path, names=("layers.0.q", "layers.1.q"), *, seed=0, rank=2) -> Path:
    g = torch.Generator().manual_seed(seed)
    mods = {
        n: LoraModule(B=torch.randn(6, rank, generator=g), A=torch.randn(rank, 5, generator=g))
        for n in names
    }
    return save_adapter(path, mods)


def _edit_config(path: Path, **changes) -> None:
    config = json.loads((path / CONFIG_NAME).read_text())
    config.update(changes)
    (path / CONFIG_NAME).write_text(json.dumps(config))


def _cli(capsys, *argv) -> tuple[int, str, str]:
    with bounded():
        rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, out, err


def _merge_cli(capsys, out: Path, *dirs) -> tuple[int, str, str]:
    return _cli(
        capsys, "merge", *dirs, "--method", "task_arithmetic", "--out", out, "--no-progress"
    )


def _refused_everywhere(capsys, folder: Path, needle: str, tmp_path: Path) -> None:
    """API, inspect and merge all refuse ``folder`` with a message containing ``needle``."""
    with bounded(), pytest.raises(AdapterLoadError, match=needle) as err:
        load_adapter(folder)
    assert len(str(err.value)) < 600
    rc, out, _ = _cli(capsys, "inspect", folder)
    assert rc == 1 and "REFUSED" in out and re.search(needle, out)
    rc, _, err_text = _merge_cli(capsys, tmp_path / "merged-out", folder)
    assert rc == 2 and re.search(needle, err_text) and len(err_text.splitlines()) == 1
    assert not (tmp_path / "merged-out").exists()


def _warned_everywhere(capsys, folder: Path, needle: str, tmp_path: Path) -> None:
    """API warns, inspect shows the warning, merge prints it as a note and still exports."""
    adapter = load_adapter(folder)
    assert any(re.search(needle, w) for w in adapter.warnings), adapter.warnings
    rc, out, _ = _cli(capsys, "inspect", folder)
    assert rc == 0 and re.search(needle, out)
    rc, _, err_text = _merge_cli(capsys, tmp_path / "merged-out", folder)
    assert rc == 0 and re.search("note: .*" + needle, err_text)


# --- 1. hang: catastrophic backtracking --------------------------------------------------------


@pytest.mark.parametrize("field", ["rank_pattern", "alpha_pattern"])
def test_backtracking_pattern_key_answers_at_once(tmp_path, capsys, field):
    folder = _adapter(tmp_path / "evil", names=(LONG_A, "x.q"))
    _edit_config(folder, **{"rank_pattern": {}, "alpha_pattern": {}, field: {"(a+)+b": 2}})
    with bounded(5):
        adapter = load_adapter(folder)
    assert adapter.config.r == 2 and set(adapter.modules) == {LONG_A, "x.q"}
    rc, out, _ = _cli(capsys, "inspect", folder)
    assert rc == 0 and "evil" in out
    rc, _, _ = _merge_cli(capsys, tmp_path / "out", folder)
    assert rc == 0
    data = {n: (tmp_path / "evil" / n).read_bytes() for n in (CONFIG_NAME, WEIGHTS_NAME)}
    with bounded(5):  # the app's upload path runs the same code
        assert set(load_adapter_from_files(data, name="up").modules) == {LONG_A, "x.q"}


def test_backtracking_target_modules_regex_answers_at_once(tmp_path):
    folder = _adapter(tmp_path / "evil", names=(LONG_A,))
    _edit_config(folder, target_modules="(a+)+b")
    with bounded(5):
        adapter = load_adapter(folder)
    assert any("matches none" in w for w in adapter.warnings)


@pytest.mark.parametrize(
    ("key", "needle"),
    [
        ("(a)\\2", "not a valid regex"),
        ("q(", "not a valid regex"),
        ("(?=a)a", "look-around"),
        ("(x{100}){100}", "more than"),
    ],
)
def test_keys_that_cannot_be_bounded_are_refused_naming_the_config(tmp_path, capsys, key, needle):
    folder = _adapter(tmp_path / "evil")
    _edit_config(folder, rank_pattern={key: 2})
    _refused_everywhere(capsys, folder, needle, tmp_path)
    with pytest.raises(AdapterLoadError, match=CONFIG_NAME):
        load_adapter(folder)


def test_key_matching_work_is_bounded_on_huge_names():
    with pytest.raises(PatternRefused, match="budget"):
        peft_key_matches("(a|b)*c", "a" * 10_000_000)
    assert peft_key_matches("(a+)+b", "x." + "a" * 100_000) is False  # linear: fast


def _random_pattern(rng: random.Random, depth: int = 0) -> str:
    atoms = [
        "a",
        "b",
        "q_proj",
        "\\.",
        ".",
        "[ab]",
        "[^a]",
        "\\d",
        "\\w",
        "(?i:A)",
        "\\b",
        "^",
        "$",
        "\\Z",
        "\\A",
        "0",
        "1",
        "(?s:.)",
        "[a-c]",
        "\\n",
        "layers",
        "\\.\\d+\\.",
    ]
    roll = rng.random()
    if depth > 3 or roll < 0.35:
        return rng.choice(atoms)
    if roll < 0.55:
        return _random_pattern(rng, depth + 1) + _random_pattern(rng, depth + 1)
    if roll < 0.7:
        return f"({_random_pattern(rng, depth + 1)}|{_random_pattern(rng, depth + 1)})"
    if roll < 0.9:
        quant = rng.choice(["*", "+", "?", "*?", "+?", "{2}", "{1,3}", "{0,2}?", "{2,}"])
        return f"(?:{_random_pattern(rng, depth + 1)}){quant}"
    return f"({_random_pattern(rng, depth + 1)})"


NAMES = [
    "",
    "a",
    "b",
    "ab",
    "aab",
    "x.a",
    "x.ab",
    "A",
    "x.A",
    "0.1",
    "a\nb",
    "q_proj\n",
    "x.a\n",
    "layers.0.q_proj",
    "layers.10.q_proj",
    "model.layers.3.self_attn.q_proj",
    "a.b.q_proj",
]


@pytest.mark.slow
def test_key_matching_agrees_with_peft_on_random_patterns():
    """Parity with peft's own lookup (tuners/lora/model.py): ``rank_pattern.get(
    get_pattern_key(rank_pattern.keys(), name), r)``, on every pattern peft accepts."""
    other = pytest.importorskip("peft.utils.other")
    rng = random.Random(13)
    compared = 0
    for _ in range(600):
        pattern = {_random_pattern(rng): 1, _random_pattern(rng): 2}
        try:
            for key in pattern:
                re.compile(rf"(.*\.)?({key})$")
        except re.error:
            continue
        names = [*NAMES, "".join(rng.choice("ab.01\nqA_") for _ in range(rng.randint(0, 9)))]
        for name in names:
            expected = pattern.get(other.get_pattern_key(pattern.keys(), name), 0)
            assert pattern_value(pattern, name, default=0) == expected, (pattern, name)
            compared += 1
    assert compared > 5000


def test_fullmatch_agrees_with_re_on_random_patterns():
    rng = random.Random(7)
    for _ in range(400):
        p = _random_pattern(rng)
        try:
            re.compile(p)
        except re.error:
            continue
        for name in NAMES:
            assert peft_fullmatch(p, name) == (re.fullmatch(p, name) is not None), (p, name)


# --- 2. silent: zero scale, absent targets, float32 overflow ----------------------------------


def test_zero_alpha_is_refused_everywhere(tmp_path, capsys):
    folder = _adapter(tmp_path / "zero")
    _edit_config(folder, lora_alpha=0, alpha_pattern={})
    _refused_everywhere(capsys, folder, "lora_alpha is 0 for every module.*exactly zero", tmp_path)


def test_zero_alpha_for_some_modules_is_a_warning(tmp_path, capsys):
    folder = _adapter(tmp_path / "half")
    _edit_config(folder, lora_alpha=2, alpha_pattern={"layers.1.q": 0})
    _warned_everywhere(capsys, folder, "1 of 2 modules have alpha 0", tmp_path)


def test_target_modules_matching_nothing_is_a_warning(tmp_path, capsys):
    folder = _adapter(tmp_path / "absent")
    _edit_config(folder, target_modules=["v_proj"])
    _warned_everywhere(capsys, folder, "target_modules .* matches none of the 2 modules", tmp_path)


def test_target_modules_missing_some_is_a_warning(tmp_path):
    folder = _adapter(tmp_path / "some", names=("layers.0.q", "layers.0.k"))
    _edit_config(folder, target_modules="layers\\.\\d+\\.q")
    (warning,) = [w for w in load_adapter(folder).warnings if "target_modules" in w]
    assert "does not match 1 of the 2" in warning and "layers.0.k" in warning


def test_matching_target_modules_say_nothing(tmp_path):
    folder = _adapter(tmp_path / "fine")
    for targets in (["q"], "layers\\.\\d\\.q", "all-linear", None):
        _edit_config(folder, target_modules=targets)
        assert not any("target_modules" in w for w in load_adapter(folder).warnings)


def test_finite_factors_whose_product_overflows_float32_are_refused(tmp_path, capsys):
    folder = tmp_path / "huge"
    _adapter(folder)
    tensors = load_file(folder / WEIGHTS_NAME)
    tensors = {k: torch.full_like(v, 1e20) for k, v in tensors.items()}
    save_file(tensors, folder / WEIGHTS_NAME, metadata={"format": "pt"})
    _refused_everywhere(capsys, folder, "overflows float32", tmp_path)


# --- 3. crash: memory, OS errors, racing exports ----------------------------------------------


def _sparse_adapter(folder: Path, elements: int) -> None:
    """A valid-looking adapter whose lora_A claims ``elements`` bf16 values (sparse file)."""
    folder.mkdir()
    (folder / CONFIG_NAME).write_text(json.dumps({"peft_type": "LORA", "r": 1, "lora_alpha": 1}))
    nbytes = 2 * elements
    header = {
        "base_model.model.fc.lora_A.weight": {
            "dtype": "BF16",
            "shape": [1, elements],
            "data_offsets": [0, nbytes],
        },
        "base_model.model.fc.lora_B.weight": {
            "dtype": "BF16",
            "shape": [1, 1],
            "data_offsets": [nbytes, nbytes + 2],
        },
    }
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(folder / WEIGHTS_NAME, "wb") as fh:
        fh.write(len(text).to_bytes(8, "little") + text)
        fh.truncate(8 + len(text) + nbytes + 2)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS semantics")
def test_huge_weights_under_an_address_space_limit_are_refused_not_crashed(tmp_path):
    _sparse_adapter(tmp_path / "big", 2 * 2**30)  # 4 GiB of bf16 claimed
    code = (
        "import resource, sys\n"
        "from merging_core.io import load_adapter, AdapterLoadError\n"
        "resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))\n"
        "try:\n    load_adapter(sys.argv[1])\n"
        "except AdapterLoadError as err:\n    print('REFUSED', err)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(io.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "big")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "REFUSED" in done.stdout and "not enough memory" in done.stdout
    assert WEIGHTS_NAME in done.stdout


def test_the_weights_file_is_never_read_whole(tmp_path, monkeypatch):
    folder = _adapter(tmp_path / "a")

    def forbidden(self, *args, **kwargs):
        raise AssertionError(f"read_bytes({self}) called")

    monkeypatch.setattr(Path, "read_bytes", forbidden)
    assert len(load_adapter(folder).modules) == 2


@pytest.mark.skipif(not POSIX or os.geteuid() == 0, reason="root reads anything")
def test_unreadable_weights_are_one_line(tmp_path, capsys):
    folder = _adapter(tmp_path / "locked")
    (folder / WEIGHTS_NAME).chmod(0)
    _refused_everywhere(capsys, folder, "cannot be read.*ermission", tmp_path)


def test_unreadable_folder_and_file_are_one_line(tmp_path, capsys, monkeypatch):
    folder = _adapter(tmp_path / "locked")
    real_open = os.open

    def deny(path, *args, **kwargs):
        if str(path).endswith(WEIGHTS_NAME):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(io.os, "open", deny)
    _refused_everywhere(
        capsys, folder, f"{WEIGHTS_NAME}: cannot be read .Permission denied", tmp_path
    )
    monkeypatch.undo()

    def deny_listing(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(Path, "iterdir", deny_listing)
    _refused_everywhere(capsys, folder, "locked: cannot be read .Permission denied", tmp_path)


def test_merge_to_a_file_as_parent_is_one_line(tmp_path, capsys):
    folder = _adapter(tmp_path / "a")
    (tmp_path / "plain").write_text("x")
    rc, _, err = _merge_cli(capsys, tmp_path / "plain" / "out", folder)
    assert rc == 2 and "plain" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("code", "words"), [(errno.EACCES, "Permission denied"), (errno.EROFS, "Read-only")]
)
def test_merge_to_a_read_only_target_is_one_line(tmp_path, capsys, monkeypatch, code, words):
    folder = _adapter(tmp_path / "a")

    def refuse(*args, dir=None, **kwargs):
        raise OSError(code, os.strerror(code), str(Path(dir) / ".out.tmp-1-x"))

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    rc, _, err = _merge_cli(capsys, tmp_path / "out", folder)
    assert rc == 2 and f"{tmp_path / 'out'}: {words}" in err and ".tmp-" not in err
    assert not (tmp_path / "out").exists()


def test_merge_with_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, capsys, monkeypatch):
    folder = _adapter(tmp_path / "a")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    rc, _, err = _merge_cli(capsys, tmp_path / "out", folder)
    assert rc == 2 and "No space left on device" in err and str(tmp_path / "out") in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]


def _ta(folder: Path):
    return merge(AdapterSet.from_adapters([load_adapter(folder)]), "task_arithmetic")


def test_racing_exports_to_a_new_target_get_the_documented_refusal(tmp_path, monkeypatch):
    result, out = _ta(_adapter(tmp_path / "a")), tmp_path / "out"
    real_fsync, fired = io.os.fsync, []

    def other_export_lands_first(fd):
        real_fsync(fd)
        if not fired:
            fired.append(1)
            export_merge(result, out, rank=1)  # the racing export completes mid-write

    monkeypatch.setattr(io.os, "fsync", other_export_lands_first)
    with pytest.raises(ValueError, match="already exists .another save wrote it"):
        export_merge(result, out, rank=2)
    assert load_adapter(out).ranks == {"layers.0.q": 1, "layers.1.q": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "out"]


# --- 4. unclear: huge values, non-regular files -------------------------------------------------


def test_huge_config_strings_are_cut_in_every_message(tmp_path, capsys):
    folder = _adapter(tmp_path / "long")
    _edit_config(folder, peft_type="X" * 1_000_000)
    with pytest.raises(AdapterLoadError, match="peft_type is 'XXX") as err:
        load_adapter(folder)
    assert len(str(err.value)) < 400 and "1,000,000 characters" in str(err.value)
    rc, _, err_text = _merge_cli(capsys, tmp_path / "o", folder)
    assert rc == 2 and len(err_text) < 500


def test_configs_over_the_size_limit_are_refused_unread(tmp_path, capsys):
    folder = _adapter(tmp_path / "huge")
    _edit_config(folder, peft_type="X" * (io.MAX_CONFIG_BYTES + 10))
    _refused_everywhere(capsys, folder, "configs over 16 MiB are refused unread", tmp_path)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("target_parameters", ["p" * 5000]),
        ("r", "9" * 5000),
        ("lora_alpha", "big" * 5000),
        ("use_rslora", "y" * 5000),
        ("rank_pattern", {"(" * 5000: 2}),
        ("alpha_pattern", {"q": "z" * 5000}),
        ("target_modules", {"x": "y" * 5000}),
    ],
)
def test_every_echoed_value_is_short(tmp_path, field, value):
    folder = _adapter(tmp_path / "v")
    _edit_config(folder, **{field: value})
    with pytest.raises(AdapterLoadError) as err:
        load_adapter(folder)
    assert len(str(err.value)) < 450, str(err.value)


def test_echoed_warnings_are_short(tmp_path):
    folder = _adapter(tmp_path / "w")
    _edit_config(folder, modules_to_save=["m" * 5000], bias="b" * 5000)
    assert all(len(w) < 300 for w in load_adapter(folder).warnings)


def _make_odd(path: Path, kind: str) -> None:
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "dev-zero":
        path.symlink_to("/dev/zero")
    elif kind == "dangling":
        path.symlink_to(path.parent / "nowhere")


ODD = [
    ("folder", "is a folder"),
    pytest.param("fifo", "is a FIFO", marks=pytest.mark.skipif(not POSIX, reason="POSIX")),
    pytest.param(
        "dev-zero",
        "is a character device .a symbolic link to '/dev/zero'",
        marks=pytest.mark.skipif(not Path("/dev/zero").exists(), reason="no /dev/zero"),
    ),
    pytest.param(
        "dangling", "is a broken symbolic link", marks=pytest.mark.skipif(not POSIX, reason="")
    ),
]


@pytest.mark.parametrize("file_name", [CONFIG_NAME, WEIGHTS_NAME])
@pytest.mark.parametrize(("kind", "words"), ODD)
def test_non_regular_files_are_named_and_never_read(tmp_path, capsys, file_name, kind, words):
    folder = _adapter(tmp_path / "odd")
    _make_odd(folder / file_name, kind)
    _refused_everywhere(capsys, folder, f"{file_name}: {words}", tmp_path)


@pytest.mark.skipif(not POSIX, reason="FIFOs are POSIX")
def test_a_fifo_passed_directly_or_as_recipe_never_blocks(tmp_path, capsys):
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    with bounded(5), pytest.raises(AdapterLoadError, match="is a FIFO"):
        load_adapter(fifo)
    recipe = tmp_path / "recipe.json"
    os.mkfifo(recipe)
    rc, _, err = _cli(capsys, "merge", "--recipe", recipe, "--out", tmp_path / "o")
    assert rc == 2 and "not a regular file" in err


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (lambda d: d[:8] + b"\xff" * 8 + d[16:], "header"),  # smashed JSON
        (lambda d: (2**62).to_bytes(8, "little") + d[8:], "the header claims"),
        (lambda d: d + b"\0" * 16, "file holds"),  # trailing bytes
        (lambda d: d[:-4], "file holds"),  # truncated data
        (lambda d: d.replace(b'"F32"', b'"F33"', 1), "unknown dtype"),
        (lambda d: d.replace(b'"shape":[2,5]', b'"shape":[2,6]', 1), "needs"),
        (lambda d: d[:5], "shorter than the 8-byte"),
    ],
)
def test_safetensors_header_is_checked_before_any_data(tmp_path, damage, needle):
    folder = _adapter(tmp_path / "bad")
    data = (folder / WEIGHTS_NAME).read_bytes()
    (folder / WEIGHTS_NAME).write_bytes(damage(data))
    with pytest.raises(AdapterLoadError, match="truncated or corrupt") as err:
        load_adapter(folder)
    assert needle in str(err.value) and WEIGHTS_NAME in str(err.value)


# --- also seen: export leftovers and left-out modules -----------------------------------------


def _dead_pid() -> int:
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(done.stdout)


@pytest.mark.skipif(not POSIX, reason="liveness by process id is POSIX-only")
def test_stale_temp_folders_of_a_killed_export_are_removed(tmp_path):
    result, out = _ta(_adapter(tmp_path / "a")), tmp_path / "merged"
    stale = tmp_path / f".merged.tmp-{_dead_pid()}-abc123"
    stale.mkdir()
    (stale / WEIGHTS_NAME).write_bytes(b"half")
    live = tmp_path / f".merged.tmp-{os.getpid()}-live01"  # another thread's save: kept
    live.mkdir()
    foreign = tmp_path / ".merged.tmp-notours"  # no pid, fresh: kept for now
    foreign.mkdir()
    report = export_merge(result, out, rank=1)
    assert not stale.exists() and live.exists() and foreign.exists()
    assert any("removed .merged.tmp-" in n for n in report.notes)
    os.utime(foreign, (0, 0))  # an hour old: whoever wrote it is gone
    export_merge(result, out, rank=1, overwrite=True)
    assert not foreign.exists()


@pytest.mark.skipif(not POSIX, reason="liveness by process id is POSIX-only")
def test_an_overwrite_killed_between_its_renames_is_restored(tmp_path, capsys):
    folder = _adapter(tmp_path / "a")
    result, out = _ta(folder), tmp_path / "merged"
    export_merge(result, out, rank=2)
    before = (out / WEIGHTS_NAME).read_bytes()
    pid = _dead_pid()  # the killed process: moved the old export aside, never renamed the new
    out.rename(tmp_path / f".merged.old-{pid}-0011aabb")
    (tmp_path / f".merged.tmp-{pid}-xyz").mkdir()
    with pytest.raises(ValueError, match="restored from an interrupted overwrite"):
        export_merge(result, out, rank=1)
    assert (out / WEIGHTS_NAME).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "merged"]
    # the CLI path: restore, then overwrite as asked, with a note
    out.rename(tmp_path / f".merged.old-{pid}-0011aabb")
    rc, _, err = _merge_cli(capsys, out, folder, "--overwrite")
    assert rc == 0 and "note: restored" in err and (out / WEIGHTS_NAME).exists()


def test_left_out_modules_are_recorded_in_recipe_and_card(tmp_path, capsys):
    one = _adapter(tmp_path / "one", names=("layers.0.q", "layers.1.q", "layers.2.q"))
    two = _adapter(tmp_path / "two", names=("layers.0.q", "layers.1.q"), seed=1)
    clash = save_adapter(
        tmp_path / "three",
        {
            "layers.0.q": LoraModule(B=torch.ones(6, 1), A=torch.ones(1, 5)),
            "layers.1.q": LoraModule(B=torch.ones(7, 1), A=torch.ones(1, 5)),
        },
    )
    rc, _, _ = _merge_cli(capsys, tmp_path / "out", one, two, clash)
    assert rc == 0
    recipe = json.loads((tmp_path / "out" / "recipe.json").read_text())
    left = {i["name"]: i.get("left_out", []) for i in recipe["inputs"]}
    assert [e["module"] for e in left["one"]] == ["layers.1.q", "layers.2.q"]
    assert "missing from two, three" in left["one"][1]["reason"]
    assert "shapes or layouts differ" in left["three"][0]["reason"]
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Left out of the merge" in card and "| one | layers.2.q | missing from" in card
    # replay reproduces the same recipe and bytes
    rc, _, _ = _cli(
        capsys,
        "merge",
        "--recipe",
        tmp_path / "out" / "recipe.json",
        "--out",
        tmp_path / "again",
        "--no-progress",
    )
    assert rc == 0
    for name in ("recipe.json", WEIGHTS_NAME, "README.md"):
        same = (tmp_path / "again" / name).read_bytes() == (tmp_path / "out" / name).read_bytes()
        assert same or name == "recipe.json", name
