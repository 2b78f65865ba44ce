"""House rule: no method file imports another method file (CONVENTIONS.md, rule 12).

Options shared by several methods (parameter specs, weights) live in ``methods/shared.py``, the
algorithms they share outside the package (``merging_core/elementwise/``, ``spectral.py``).
``registry.py`` and ``shared.py`` are not method files, and ``__init__.py`` imports every method
on purpose. A method that needs another method's *result* calls the public
``merging_core.merge.merge()`` (Pico does).
The check parses every file with ``ast``, so it also sees imports inside functions.
"""

import ast
from pathlib import Path

import pytest

import merging_core.methods as methods_pkg

FOLDER = Path(methods_pkg.__file__).parent
NOT_METHODS = {"__init__", "registry", "shared"}
METHOD_FILES = sorted(p for p in FOLDER.glob("*.py") if p.stem not in NOT_METHODS)
METHOD_NAMES = {p.stem for p in METHOD_FILES}
PACKAGE = "merging_core.methods"
# Known offenders, {file stem: {imported method stems}}; keep empty (a stop-gap, never a rule).
PENDING: dict[str, set[str]] = {}


def imported_method_modules(source: str) -> set[str]:
    """Names of method modules that ``source`` imports (absolute or relative)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found |= _from_dotted(alias.name)
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level > 0:  # relative: "." is the methods package itself
                module = f"{PACKAGE}.{module}" if module else PACKAGE
            found |= _from_dotted(module)
            if module == PACKAGE:
                found |= {a.name for a in node.names if a.name in METHOD_NAMES}
    return found


def _from_dotted(dotted: str) -> set[str]:
    prefix = PACKAGE + "."
    if not dotted.startswith(prefix):
        return set()
    head = dotted[len(prefix) :].split(".")[0]
    return {head} if head in METHOD_NAMES else set()


def test_the_parser_sees_every_import_form():
    src = (
        "import merging_core.methods.ties\n"
        "from merging_core.methods.dare import dare\n"
        "from merging_core.methods import knots, registry\n"
        "from . import cat\n"
        "from .tsv_m import polar_factor\n"
        "def f():\n    from merging_core.methods.iso_c import iso_c\n"
        "from merging_core.methods.shared import adapter_weights\n"
        "from merging_core.merge import merge\n"
    )
    assert imported_method_modules(src) == {"ties", "dare", "knots", "cat", "tsv_m", "iso_c"}


def test_there_are_method_files():
    assert {"task_arithmetic", "ties", "dare", "knots"} <= METHOD_NAMES


@pytest.mark.parametrize("path", METHOD_FILES, ids=lambda p: p.name)
def test_no_method_file_imports_another(path):
    imported = imported_method_modules(path.read_text(encoding="utf-8")) - {path.stem}
    imported -= PENDING.get(path.stem, set())
    assert not imported, (
        f"{path.name} imports method file(s) {sorted(imported)}; move the shared helpers to "
        "merging_core/elementwise/, merging_core/spectral.py or merging_core/methods/shared.py "
        "(or call merging_core.merge.merge for a result)"
    )


def test_shared_and_registry_import_no_method_file():
    for name in ("shared", "registry"):
        source = (FOLDER / f"{name}.py").read_text(encoding="utf-8")
        assert not imported_method_modules(source), f"{name}.py imports a method file"
