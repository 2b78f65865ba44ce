"""PEFT's module-key regex matching, in time linear in the name: no catastrophic backtracking.

PEFT resolves ``rank_pattern`` / ``alpha_pattern`` keys with ``re.match(rf"(.*\\.)?({key})$",
name)`` and a string ``target_modules`` with ``re.fullmatch(target_modules, name)``. Both the
pattern and the name come from the adapter's files, and Python's backtracking engine takes
exponential time on patterns such as ``(a+)+b`` (a 1 KB config could tie up a server for
minutes). Only a yes/no answer is needed, so we run the same regex as a Thompson NFA over the
name (a Pike VM without captures): every position is visited once per NFA state, so the work is
``O(len(name) · len(program))`` whatever the pattern.

Exact parity with ``re``: the pattern is parsed by Python's own regex parser, and every
single-character test (literals, classes, ``\\w``, case folding, scoped flags) and every
zero-width anchor (``^``, ``$``, ``\\b``, ``\\A``, ``\\Z``) is answered by a one-atom pattern
compiled by ``re`` itself, so only the control flow (sequence, alternation, repetition) is ours;
greedy and lazy repeats accept the same strings. Constructs whose meaning is not a plain
regular language (back-references, look-arounds, conditionals, atomic groups, possessive
repeats) and programs too large to run in bounded time are refused with
:class:`PatternRefused`, never run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

try:  # Python >= 3.11
    from re import _compiler as _sre_compile  # type: ignore[attr-defined]
    from re import _constants as _C  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - Python 3.10
    import sre_compile as _sre_compile  # type: ignore[no-redef]
    import sre_constants as _C  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

MAX_PROGRAM = 5_000
"""Most NFA instructions a pattern may expand to (``x{1000}`` counts as 1000 copies of ``x``)."""

MAX_PATTERN_CHARS = 100_000
"""Longest pattern parsed at all; PEFT keys are module paths (tens of characters), and a longer
one could not be matched within :data:`MAX_WORK` against a real module name anyway."""

MAX_WORK = 20_000_000
"""Most ``len(name) × program size`` steps one match may take (about a second in the worst
case); anything larger is refused instead of run."""

__all__ = [
    "MAX_PATTERN_CHARS",
    "MAX_PROGRAM",
    "MAX_WORK",
    "PatternRefused",
    "peft_fullmatch",
    "peft_key_matches",
]


class PatternRefused(ValueError):
    """A pattern (or pattern + name) that cannot be matched in bounded time or is not a regex."""


_CHAR_OPS = {_C.LITERAL, _C.NOT_LITERAL, _C.ANY, _C.IN}
_UNSUPPORTED = {
    getattr(_C, name): words
    for name, words in (
        ("GROUPREF", "a back-reference"),
        ("GROUPREF_EXISTS", "a conditional group"),
        ("ASSERT", "a look-around"),
        ("ASSERT_NOT", "a look-around"),
        ("ATOMIC_GROUP", "an atomic group"),
        ("POSSESSIVE_REPEAT", "a possessive repeat"),
    )
    if hasattr(_C, name)
}

# Instructions: ("char", test) consumes one character; ("assert", test) is zero-width;
# ("split", a, b) and ("jump", a) are epsilon moves; ("match",) accepts.
_Instr = tuple[Any, ...]


def peft_key_matches(key: str, name: str) -> bool:
    """``re.match(rf"(.*\\.)?({key})$", name) is not None``, in bounded time.

    Raises:
        PatternRefused: ``key`` is not a valid regex, uses a construct that is not a plain
            regular language, or is too large for ``name``.
    """
    return _run(_plan(rf"(.*\.)?({key})$", key), name, full=False)


def peft_fullmatch(pattern: str, name: str) -> bool:
    """``re.fullmatch(pattern, name) is not None``, in bounded time (PEFT's string
    ``target_modules``).

    Raises:
        PatternRefused: as :func:`peft_key_matches`.
    """
    return _run(_plan(pattern, pattern), name, full=True)


def first_matching_key(pattern: Mapping[str, Any] | Sequence[str], name: str) -> str | None:
    """The first key (dict order) whose PEFT regex matches ``name``, like
    ``peft.utils.other.get_pattern_key`` (which returns ``name`` itself when none does)."""
    for key in pattern:
        if peft_key_matches(key, name):
            return key
    return None


# --- compiling ------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _plan(pattern: str, key: str) -> re.Pattern[str] | tuple[_Instr, ...]:
    """``re``'s own compiled pattern when ``key`` has no repeat and no alternation (fixed
    width: ``re`` cannot backtrack more than ``len(name) · len(key)`` steps; module names and
    escaped names are such keys), else the NFA program of the whole ``pattern``."""
    if len(key) > MAX_PATTERN_CHARS:
        raise PatternRefused(f"{len(key):,} characters long (at most {MAX_PATTERN_CHARS:,})")
    try:
        compiled = re.compile(pattern)
    except re.error as err:
        raise PatternRefused(f"not a valid regex ({err})") from None
    except RecursionError:
        raise PatternRefused("nested too deeply to parse") from None
    try:  # a key such as "a)|(b" is only valid inside PEFT's wrapper: run it as a whole
        simple = _fixed_width(_sre_parse.parse(key).data)
    except re.error:
        simple = False
    if simple:
        return compiled
    return _program(_sre_parse.parse(pattern))


def _fixed_width(items: Sequence[tuple[Any, Any]]) -> bool:
    for op, av in items:
        if op is _C.SUBPATTERN:
            if not _fixed_width(av[3].data):
                return False
        elif op not in _CHAR_OPS and op is not _C.AT:
            return False
    return True


def _program(parsed: Any) -> tuple[_Instr, ...]:
    prog: list[_Instr] = []
    try:
        _emit(parsed.data, parsed.state, (), prog)
    except RecursionError:
        raise PatternRefused("nested too deeply to match") from None
    prog.append(("match",))
    return tuple(prog)


def _emit(items: Sequence[tuple[Any, Any]], state: Any, scopes: tuple, prog: list) -> None:
    """Append the NFA of a parsed sequence; ``scopes`` are the enclosing flag groups."""
    for op, av in items:
        if len(prog) > MAX_PROGRAM:
            raise PatternRefused(f"expands to more than {MAX_PROGRAM} matching steps")
        if op in _CHAR_OPS:
            prog.append(("char", _atom(state, scopes, op, av)))
        elif op is _C.AT:
            prog.append(("assert", _atom(state, scopes, op, av)))
        elif op is _C.SUBPATTERN:
            _group, add_flags, del_flags, sub = av
            inner = scopes + ((add_flags, del_flags),) if (add_flags or del_flags) else scopes
            _emit(sub.data, state, inner, prog)
        elif op is _C.BRANCH:
            _emit_branch(av[1], state, scopes, prog)
        elif op in (_C.MAX_REPEAT, _C.MIN_REPEAT):  # greedy or lazy: same accepted strings
            _emit_repeat(av, state, scopes, prog)
        else:
            raise PatternRefused(f"uses {_UNSUPPORTED.get(op, str(op).lower())}, not supported")


def _emit_branch(alternatives: Sequence[Any], state: Any, scopes: tuple, prog: list) -> None:
    jumps = []
    for i, alt in enumerate(alternatives):
        split = None
        if i < len(alternatives) - 1:
            split = len(prog)
            prog.append(None)
        _emit(alt.data, state, scopes, prog)
        if split is not None:
            jumps.append(len(prog))
            prog.append(None)
            prog[split] = ("split", split + 1, len(prog))
    for j in jumps:
        prog[j] = ("jump", len(prog))


def _emit_repeat(av: tuple[int, int, Any], state: Any, scopes: tuple, prog: list) -> None:
    low, high, item = av
    for _ in range(low):
        _emit(item.data, state, scopes, prog)
    if high == _C.MAXREPEAT:
        loop = len(prog)
        prog.append(None)
        _emit(item.data, state, scopes, prog)
        prog.append(("jump", loop))
        prog[loop] = ("split", loop + 1, len(prog))
        return
    splits = []
    for _ in range(high - low):
        splits.append(len(prog))
        prog.append(None)
        _emit(item.data, state, scopes, prog)
    for s in splits:
        prog[s] = ("split", s + 1, len(prog))


def _atom(state: Any, scopes: tuple, op: Any, av: Any) -> Callable[[str, int], Any]:
    """``re``'s own compiled one-atom pattern, inside the same flag scopes; ``.match(s, pos)``."""
    node = _sre_parse.SubPattern(state, [(op, av)])
    for add_flags, del_flags in reversed(scopes):
        node = _sre_parse.SubPattern(state, [(_C.SUBPATTERN, (None, add_flags, del_flags, node))])
    return _sre_compile.compile(node, state.flags).match


# --- running --------------------------------------------------------------------------------


def _run(plan: re.Pattern[str] | tuple[_Instr, ...], name: str, *, full: bool) -> bool:
    size = len(plan.pattern) if isinstance(plan, re.Pattern) else len(plan)
    if size * (len(name) + 1) > MAX_WORK:
        raise PatternRefused(
            f"a {size}-step pattern on a {len(name)}-character name exceeds the matching "
            f"budget ({MAX_WORK:,} steps)"
        )
    if isinstance(plan, re.Pattern):
        return (plan.fullmatch(name) if full else plan.match(name)) is not None
    return _simulate(plan, name, full=full)


def _simulate(prog: tuple[_Instr, ...], name: str, *, full: bool) -> bool:
    """Pike VM: the set of live NFA states, advanced one character at a time."""
    current = _closure(prog, [0], name, 0)
    for pos in range(len(name) + 1):
        if ("match",) in (prog[pc] for pc in current) and (not full or pos == len(name)):
            return True
        if pos == len(name) or not current:
            return False
        moved = [pc + 1 for pc in current if prog[pc][0] == "char" and prog[pc][1](name, pos)]
        current = _closure(prog, moved, name, pos + 1)
    return False


def _closure(prog: tuple[_Instr, ...], pcs: list[int], name: str, pos: int) -> list[int]:
    """The states reachable from ``pcs`` at ``pos`` through epsilon moves and true anchors."""
    seen: set[int] = set()
    out: list[int] = []
    stack = list(reversed(pcs))
    while stack:
        pc = stack.pop()
        if pc in seen:
            continue
        seen.add(pc)
        instr = prog[pc]
        kind = instr[0]
        if kind == "jump":
            stack.append(instr[1])
        elif kind == "split":
            stack += [instr[2], instr[1]]
        elif kind == "assert":
            if instr[1](name, pos):
                stack.append(pc + 1)
        else:
            out.append(pc)
    return out
