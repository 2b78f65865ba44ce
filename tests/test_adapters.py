"""Value types: LoraModule layout, Adapter accessors and hashing, AdapterSet alignment."""

from __future__ import annotations

import pytest
import torch

from merging_core.adapters import Adapter, AdapterConfig, AdapterSet, LoraModule, layer_key


def _mod(d_out=4, d_in=3, r=2, seed=0, **kw) -> LoraModule:
    g = torch.Generator().manual_seed(seed)
    return LoraModule(
        B=torch.randn(d_out, r, generator=g), A=torch.randn(r, d_in, generator=g), **kw
    )


def _adapter(name, modules, base="org/base") -> Adapter:
    return Adapter(name=name, modules=modules, config=AdapterConfig(base_model=base))


# --- LoraModule -----------------------------------------------------------------------------


def test_lora_module_delta_golden_and_layout():
    B = torch.tensor([[1.0], [2.0]])  # (d_out=2, r=1)
    A = torch.tensor([[3.0, 4.0, 5.0]])  # (r=1, d_in=3)
    lin = LoraModule(B=B, A=A)
    assert lin.delta().tolist() == [[3.0, 4.0, 5.0], [6.0, 8.0, 10.0]]
    assert (lin.rank, lin.d_out, lin.d_in, lin.shape) == (1, 2, 3, (2, 3))
    flipped = LoraModule(B=B, A=A, transposed=True)
    assert flipped.shape == (3, 2) and torch.equal(flipped.delta(), lin.delta().T)
    other = flipped.with_factors(B * 2, A)
    assert other.transposed and torch.equal(other.delta(), 2 * flipped.delta())


def test_lora_module_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be 2-D"):
        LoraModule(B=torch.zeros(2, 1, 1), A=torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"rank mismatch: B is \(2, 2\) but A is \(1, 3\)"):
        LoraModule(B=torch.zeros(2, 2), A=torch.zeros(1, 3))


def test_lora_module_delta_upcasts_half():
    mod = LoraModule(B=torch.ones(2, 1, dtype=torch.bfloat16), A=torch.ones(1, 2).half())
    assert mod.delta().dtype == torch.float32


# --- Adapter --------------------------------------------------------------------------------


def test_adapter_accessors():
    a = _adapter("a", {"x.q": _mod(r=2), "x.v": _mod(5, 3, 4, seed=1)})
    assert a.ranks == {"x.q": 2, "x.v": 4}
    assert a.num_params == (4 * 2 + 2 * 3) + (5 * 4 + 4 * 3)
    torch.testing.assert_close(a.delta("x.v"), a.modules["x.v"].B @ a.modules["x.v"].A)
    with pytest.raises(KeyError, match="adapter 'a' has no module 'x.k'"):
        a.delta("x.k")


def test_content_hash_tracks_factors():
    a = _adapter("a", {"q": _mod(seed=0)})
    same = _adapter("renamed", {"q": _mod(seed=0)})
    other = _adapter("a", {"q": _mod(seed=1)})
    moved = _adapter("a", {"k": _mod(seed=0)})
    assert a.content_hash() == same.content_hash()
    assert len({a.content_hash(), other.content_hash(), moved.content_hash()}) == 3
    pinned = Adapter(name="a", modules=a.modules, sha256="abc")
    assert pinned.content_hash() == "abc"


# --- AdapterSet -----------------------------------------------------------------------------


def test_mixed_ranks_align_without_issues():
    a = _adapter("a", {"l.0.q": _mod(r=2), "l.0.v": _mod(r=2)})
    b = _adapter("b", {"l.0.v": _mod(r=8, seed=1), "l.0.q": _mod(r=1, seed=2)})
    s = AdapterSet.from_adapters([a, b])
    assert s.modules == ("l.0.q", "l.0.v")  # the first adapter's order
    assert s.issues == ()
    assert s.names == ["a", "b"] and len(s) == 2 and [x.name for x in s] == ["a", "b"]
    assert [m.rank for m in s.factors("l.0.v")] == [2, 8]


def test_missing_modules_are_left_out_and_named():
    a = _adapter("a", {"q": _mod(), "v": _mod(), "k": _mod()})
    b = _adapter("b", {"q": _mod(), "o": _mod()})
    s = AdapterSet.from_adapters([a, b])
    assert s.modules == ("q",)
    text = " | ".join(s.issues)
    assert "2 module(s) of 'a' are missing from other adapters" in text and "'v'" in text
    assert "1 module(s) of 'b'" in text and "'o'" in text


def test_shape_and_layout_clashes_are_left_out():
    a = _adapter("a", {"q": _mod(4, 3), "v": _mod(4, 3), "c": _mod(4, 3)})
    b = _adapter("b", {"q": _mod(4, 3), "v": _mod(6, 3), "c": _mod(4, 3, transposed=True)})
    s = AdapterSet.from_adapters([a, b])
    assert s.modules == ("q",)
    text = " | ".join(s.issues)
    assert "module 'v' has clashing shapes {'a': (4, 3), 'b': (6, 3)}" in text
    assert "module 'c' has clashing shapes" in text


def test_different_base_models_are_reported():
    a = _adapter("a", {"q": _mod()}, base="org/one")
    b = _adapter("b", {"q": _mod()}, base="org/two")
    c = _adapter("c", {"q": _mod()}, base="")
    s = AdapterSet.from_adapters([a, b, c])
    assert s.modules == ("q",)
    assert len(s.issues) == 1 and "a: org/one" in s.issues[0] and "b: org/two" in s.issues[0]
    assert AdapterSet.from_adapters([a, c]).issues == ()  # unknown base is not a clash


def test_alignment_refusals():
    a = _adapter("a", {"q": _mod()})
    with pytest.raises(ValueError, match="at least one adapter"):
        AdapterSet.from_adapters([])
    with pytest.raises(ValueError, match=r"duplicates \['a'\]"):
        AdapterSet.from_adapters([a, a])
    with pytest.raises(ValueError, match="share no module"):
        AdapterSet.from_adapters([a, _adapter("b", {"v": _mod()})])


def test_subset_and_layer_key():
    ads = [_adapter(n, {"q": _mod(seed=i)}) for i, n in enumerate("abc")]
    s = AdapterSet.from_adapters(ads)
    assert s.subset([2, 0]).names == ["c", "a"]
    with pytest.raises(ValueError, match="adapter index 3 out of range for 3"):
        s.subset([3])
    assert layer_key("model.layers.12.self_attn.q_proj") == "model.layers.12"
    assert layer_key("encoder.head.fc") == "encoder.head"
    assert layer_key("fc") == "fc"
    assert s.layer_of("h.0.attn.c_attn") == "h.0"
