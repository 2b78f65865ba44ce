"""merge(): parameter validation, result layout, MergedModule accessors."""

import pytest
import torch

from merging_core import Adapter, AdapterSet, LoraModule, MergedModule, merge
from merging_core.methods.registry import Param, register_method


def _set(transposed=False):
    g = torch.Generator().manual_seed(1)
    ads = []
    for i in range(2):
        mod = LoraModule(
            torch.randn(6, 2, generator=g), torch.randn(2, 5, generator=g), transposed=transposed
        )
        ads.append(Adapter(f"t{i}", {"blocks.0.q_proj": mod}))
    return AdapterSet.from_adapters(ads)


def test_merge_fills_defaults_and_records_seed():
    res = merge(_set(), "task_arithmetic", seed=7)
    assert res.method == "task_arithmetic"
    assert res.params == {"scaling": 0.4, "weights": None}
    assert res.seed == 7 and res.adapter_names == ("t0", "t1")


def test_merge_rejects_unknown_method_and_parameter():
    with pytest.raises(KeyError, match="unknown merge method 'nope'"):
        merge(_set(), "nope")
    with pytest.raises(ValueError, match="has no parameter"):
        merge(_set(), "task_arithmetic", density=0.5)
    with pytest.raises(ValueError, match="scaling must be <= 4.0, got 9.0"):
        merge(_set(), "task_arithmetic", scaling=9)


def test_weights_length_is_checked():
    with pytest.raises(ValueError, match="weights has 3 entries but there are 2 adapters"):
        merge(_set(), "task_arithmetic", weights=[1, 1, 1])


def test_transposed_layout_round_trips_through_merge():
    s = _set(transposed=True)
    res = merge(s, "task_arithmetic", scaling=1.0)
    want = sum(a.delta("blocks.0.q_proj") for a in s)
    assert res.delta("blocks.0.q_proj").shape == (5, 6)
    torch.testing.assert_close(res.delta("blocks.0.q_proj"), want)


def test_merged_module_needs_exactly_one_payload():
    with pytest.raises(ValueError, match="exactly one"):
        MergedModule()


def test_merged_module_svd_agrees_between_factored_and_dense():
    like = _set().factors("blocks.0.q_proj")[0]
    fac = MergedModule.from_factors(like, like.B, like.A)
    den = MergedModule.from_dense(like, like.B @ like.A)
    torch.testing.assert_close(fac.svd().S, den.svd().S, atol=1e-5, rtol=1e-5)
    assert fac.rank_bound() == den.rank_bound() == 2
    assert fac.norm() == pytest.approx(den.norm(), rel=1e-6)


def test_registry_rejects_bad_and_duplicate_names():
    with pytest.raises(ValueError, match="lower snake case"):
        register_method(name="Bad-Name", pretty_name="x", reference_url="", space="factors")
    with pytest.raises(ValueError, match="already registered"):
        register_method(name="task_arithmetic", pretty_name="x", reference_url="", space="factors")
    with pytest.raises(ValueError, match="space must be"):
        register_method(name="fresh_name", pretty_name="x", reference_url="", space="dense")


def test_param_validation_messages_name_the_value():
    p = Param("density", "float", 0.2, low=0.0, high=1.0)
    assert p.validate("0.5") == 0.5
    with pytest.raises(ValueError, match="density must be <= 1.0, got 1.5"):
        p.validate(1.5)
    with pytest.raises(ValueError, match="must be finite"):
        p.validate(float("nan"))
    w = Param("weights", "weights", None, low=-1, high=1)
    assert w.validate("0.5, -1") == (0.5, -1.0)
    with pytest.raises(ValueError, match=r"weights\[1\] must be >= -1"):
        w.validate([0, -2])
    c = Param("variant", "choice", "a", choices=("a", "b"))
    with pytest.raises(ValueError, match="must be one of"):
        c.validate("c")
    i = Param("steps", "int", 10, low=1)
    with pytest.raises(ValueError, match="whole number"):
        i.validate(2.5)
