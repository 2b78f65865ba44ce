"""Contract over every registered merge method, including ones added later.

Each method must describe itself (name, display name, paper link, space, a spec whose defaults
validate, a docstring that states its space), accept exactly its spec as keyword-only options,
and on a tiny seeded AdapterSet return every module in the base layout, float32, finite and
identical under the same seed, for its defaults and for every value of each choice parameter.
Data-driven methods (``needs_data=True``) are skipped in the merge checks: they need a bundle
and have their own tests.
"""

import inspect
from pathlib import Path

import pytest
import torch

import merging_core.methods as methods_pkg
from merging_core import AdapterSet, merge
from merging_core.methods import available_methods

METHODS = [m for m in available_methods() if m.fn.__module__.startswith("merging_core.methods.")]
CHOICES = [
    pytest.param(m, p.name, c, id=f"{m.name}-{p.name}={c}")
    for m in METHODS
    for p in m.params
    if p.kind == "choice"
    for c in p.choices
    if c != p.default
]
WITH_WEIGHTS = [m for m in METHODS if "weights" in m.param_names]


def _ids(info):
    return info.name


def _skip_if_data_driven(info):
    if info.needs_data:
        pytest.skip(f"{info.name} learns from a bundle's unlabeled data; its own tests cover it")


def _check_result(res, adapter_set: AdapterSet, name: str) -> None:
    assert res.method == name
    assert res.adapter_names == tuple(adapter_set.names)
    assert list(res.modules) == list(adapter_set.modules)
    for module in adapter_set.modules:
        want = adapter_set.adapters[0].delta(module)
        got = res.delta(module)
        assert got.shape == want.shape, f"{name}: {module} came back {tuple(got.shape)}"
        assert got.dtype == torch.float32, f"{name}: {module} is {got.dtype}"
        assert bool(torch.isfinite(got).all()), f"{name}: {module} has NaN or inf"
        assert res.modules[module].transposed == adapter_set.factors(module)[0].transposed


def _assert_same(a, b, adapter_set: AdapterSet) -> None:
    for module in adapter_set.modules:
        assert torch.equal(a.delta(module), b.delta(module)), f"{module} differs under one seed"


def test_the_library_registers_methods():
    assert {"task_arithmetic", "ties", "dare", "cat", "knots"} <= {m.name for m in METHODS}


def test_tradeoff_baselines_are_tagged_and_data_free():
    """Two-task trade-off plots draw every method tagged "tradeoff-baseline" at its defaults."""
    tagged = [m for m in METHODS if "tradeoff-baseline" in m.tags]
    expected = {"ties", "knots", "iso_c", "tsv_m", "pico", "lora_lego"}
    assert expected <= {m.name for m in tagged}
    assert not [m.name for m in tagged if m.needs_data]


def test_every_module_that_registers_a_method_is_imported():
    folder = Path(methods_pkg.__file__).parent
    registered = {m.fn.__module__.rsplit(".", 1)[-1] for m in METHODS}
    for path in sorted(folder.glob("*.py")):
        if "@register_method(" in path.read_text(encoding="utf-8"):
            assert path.stem in registered, (
                f"{path.name} registers a method but merging_core/methods/__init__.py "
                "does not import it"
            )


@pytest.mark.parametrize("info", METHODS, ids=_ids)
class TestDescription:
    def test_metadata(self, info):
        assert info.pretty_name.strip() and info.summary.strip()
        assert info.reference_url.startswith("https://")
        assert info.space in ("factors", "delta")

    def test_docstring_states_the_space(self, info):
        docs = (inspect.getmodule(info.fn).__doc__ or "") + (info.fn.__doc__ or "")
        assert "space" in docs.lower(), f"{info.name}: say in the docstring which space it acts in"

    def test_defaults_validate(self, info):
        assert info.validate_params({}) == info.defaults()
        for p in info.params:
            assert p.validate(p.default) == p.default
            if p.kind in ("float", "int") and p.low is not None and p.high is not None:
                assert p.low <= p.default <= p.high
                assert p.low < p.high
            if p.kind == "choice":
                assert len(p.choices) >= 2 and p.default in p.choices

    def test_signature_takes_the_spec_keyword_only(self, info):
        sig = inspect.signature(info.fn).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values()):
            return  # forwards **kwargs; its own tests check what it accepts
        for name in [*info.param_names, "generator", "progress"]:
            assert name in sig, f"{info.name} does not accept {name!r}"
            assert sig[name].kind is inspect.Parameter.KEYWORD_ONLY, f"{name} is not keyword-only"
        for p in info.params:
            assert sig[p.name].default == p.default, (
                f"{info.name}.{p.name}: signature default {sig[p.name].default!r} "
                f"differs from the spec's {p.default!r}"
            )


@pytest.mark.parametrize("info", METHODS, ids=_ids)
def test_defaults_merge_and_are_deterministic(info, tiny_set):
    _skip_if_data_driven(info)
    a = merge(tiny_set, info.name, seed=3)
    b = merge(tiny_set, info.name, seed=3)
    _check_result(a, tiny_set, info.name)
    _assert_same(a, b, tiny_set)


@pytest.mark.parametrize(("info", "param", "choice"), CHOICES)
def test_every_choice_merges(info, param, choice, tiny_set):
    _skip_if_data_driven(info)
    a = merge(tiny_set, info.name, seed=5, **{param: choice})
    b = merge(tiny_set, info.name, seed=5, **{param: choice})
    _check_result(a, tiny_set, info.name)
    _assert_same(a, b, tiny_set)


@pytest.mark.parametrize("info", METHODS, ids=_ids)
def test_tolerates_an_untrained_adapter(info, make_set):
    """PEFT initialises B = 0: such an adapter (ΔW = 0) must not produce NaN."""
    _skip_if_data_driven(info)
    s = make_set(3)
    zero = s.adapters[1]
    untrained = zero.__class__(
        name=zero.name,
        modules={n: m.with_factors(torch.zeros_like(m.B), m.A) for n, m in zero.modules.items()},
    )
    s = AdapterSet.from_adapters([s.adapters[0], untrained, s.adapters[2]])
    _check_result(merge(s, info.name, seed=1), s, info.name)


@pytest.mark.parametrize("info", METHODS, ids=_ids)
def test_reports_progress_in_unit_interval(info, tiny_set):
    _skip_if_data_driven(info)
    seen = []
    merge(tiny_set, info.name, progress=lambda f, msg: seen.append((f, msg)))
    assert seen, f"{info.name} never called progress"
    assert all(0.0 <= f <= 1.0 and isinstance(msg, str) for f, msg in seen)


@pytest.mark.parametrize("info", WITH_WEIGHTS, ids=_ids)
def test_weights_of_the_wrong_length_are_refused(info, tiny_set):
    _skip_if_data_driven(info)
    with pytest.raises(ValueError, match="weights"):
        merge(tiny_set, info.name, weights=[1.0, 1.0])
