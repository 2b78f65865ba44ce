"""Core Space merging: exact bases and cores, parity with a dense reading of the official code,
exact equivalence of TA / TSV / CART with their full-space definitions, and the properties of the
element-wise rules (which are different methods from TIES / DARE on ΔW)."""

import math

import pytest
import torch

from merging_core import AdapterSet, merge
from merging_core.elementwise.steps import drop_and_rescale
from merging_core.elementwise.streaming import mask_seeds
from merging_core.methods.core_space import RULES, core_space

EXACT_RULES = ("ta", "tsv", "cart")
ORDER_FREE = ("ta", "ties", "tsv", "cart")


def _deltas(result, module):
    return result.modules[module].linear_delta().double()


def _close(a, b, tol=1e-4):
    scale = max(float(b.abs().max()), 1.0)
    return float((a - b).abs().max()) <= tol * scale


# ---- a dense, independent reading of the official code (task_merger.py) -------------------


def dense_reference_cores(adapter_set: AdapterSet, module: str):
    """Official route: SVD of the stacks, ``M_t = U_refᵀ ΔW_t Vh_refᵀ`` from dense ΔW_t."""
    mods = adapter_set.factors(module)
    B_stack = torch.cat([m.B.double() for m in mods], dim=1)
    A_stack = torch.cat([m.A.double() for m in mods], dim=0)
    U_ref = torch.linalg.svd(B_stack, full_matrices=False)[0]
    Vh_ref = torch.linalg.svd(A_stack, full_matrices=False)[2]
    cores = [U_ref.T @ (m.B.double() @ m.A.double()) @ Vh_ref.T for m in mods]
    return U_ref, Vh_ref, cores


def dense_ties(cores, density):
    """Per-core trim (PEFT count), sign by summed values with the majority tie rule, mean."""
    trimmed = []
    for c in cores:
        k = int(density * c.numel())
        flat = c.reshape(-1)
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[torch.topk(flat.abs(), k).indices] = True
        trimmed.append((flat * mask).reshape(c.shape))
    stack = torch.stack(trimmed)
    sign = stack.sum(0).sign()
    sign[sign == 0] = sign.sum().sign()
    agree = (stack.sign() == sign) & (stack != 0)
    return (stack * agree).sum(0) / agree.sum(0).clamp(min=1)


def dense_cart(deltas, k, strength):
    mean = torch.stack(deltas).mean(0)
    total = torch.zeros_like(mean)
    for d in deltas:
        U, S, Vh = torch.linalg.svd(d - mean, full_matrices=False)
        total += (U[:, :k] * S[:k]) @ Vh[:k]
    return mean + strength * total


# ---- bases and cores ----------------------------------------------------------------------


def test_cores_are_exact_and_bases_orthonormal(tiny_set):
    for module in tiny_set.modules:
        mods = tiny_set.factors(module)
        space = core_space([m.B for m in mods], [m.A for m in mods])
        eye_u = torch.eye(space.U.shape[1], dtype=torch.float64)
        eye_v = torch.eye(space.V.shape[1], dtype=torch.float64)
        assert torch.allclose(space.U.T @ space.U, eye_u, atol=1e-10)
        assert torch.allclose(space.V.T @ space.V, eye_v, atol=1e-10)
        R = sum(m.rank for m in mods)  # mixed ranks 4/3/4
        assert space.cores[0].shape == (min(mods[0].d_out, R), min(mods[0].d_in, R))
        for m, core in zip(mods, space.cores, strict=True):
            want = m.B.double() @ m.A.double()
            assert torch.allclose(space.U @ core @ space.V.T, want, atol=1e-9)


def test_bases_are_the_official_singular_vectors_up_to_sign(tiny_set):
    module = tiny_set.modules[0]
    mods = tiny_set.factors(module)
    space = core_space([m.B for m in mods], [m.A for m in mods])
    U_ref, Vh_ref, cores = dense_reference_cores(tiny_set, module)
    signs_u = torch.sign((space.U * U_ref).sum(0))
    signs_v = torch.sign((space.V * Vh_ref.T).sum(0))
    assert torch.allclose(space.U, U_ref * signs_u, atol=1e-8)
    assert torch.allclose(space.V, Vh_ref.T * signs_v, atol=1e-8)
    for ours, theirs in zip(space.cores, cores, strict=True):
        assert torch.allclose(ours, signs_u[:, None] * theirs * signs_v, atol=1e-8)


# ---- exact rules: parity with the full-space definitions ---------------------------------


def test_ta_rule_is_task_arithmetic(tiny_set):
    ours = merge(tiny_set, "core_space", rule="ta", scaling=0.7)
    ta = merge(tiny_set, "task_arithmetic", scaling=0.7)
    for module in tiny_set.modules:
        assert _close(_deltas(ours, module), _deltas(ta, module), 1e-5)


def test_tsv_rule_is_low_rank_tsv_m_when_budgets_cover_the_ranks(pair_set):
    # two rank-4 adapters: core budget ⌊8/2⌋ = 4 and full budget ⌊12/2⌋ = 6 both cover r = 4
    ours = merge(pair_set, "core_space", rule="tsv", scaling=0.9)
    tsv = merge(pair_set, "tsv_m", mode="low_rank", scaling=0.9)
    for module in pair_set.modules:
        assert _close(_deltas(ours, module), _deltas(tsv, module), 1e-5)


def test_cart_rule_is_dense_cart_at_the_same_rank(tiny_set):
    res = merge(tiny_set, "core_space", rule="cart", cart_rank_fraction=0.25, cart_strength=0.6)
    for module in tiny_set.modules:
        mods = tiny_set.factors(module)
        deltas = [m.B.double() @ m.A.double() for m in mods]
        R = sum(m.rank for m in mods)
        k = math.ceil(0.25 * min(mods[0].d_out, mods[0].d_in, R))
        assert _close(_deltas(res, module), dense_cart(deltas, k, 0.6), 1e-5)


# ---- element-wise rules: parity with the official definition on cores --------------------


def test_ties_rule_matches_the_official_reading(tiny_set):
    res = merge(tiny_set, "core_space", rule="ties", density=0.3, scaling=1.3)
    for module in tiny_set.modules:
        U_ref, Vh_ref, cores = dense_reference_cores(tiny_set, module)
        want = 1.3 * U_ref @ dense_ties(cores, 0.3) @ Vh_ref
        assert _close(_deltas(res, module), want, 1e-4)


@pytest.mark.parametrize("rule", ["dare", "dare_ties"])
def test_dare_rules_match_the_official_reading(tiny_set, rule):
    seed, p = 11, 0.4
    res = merge(tiny_set, "core_space", seed=seed, rule=rule, drop_rate=p, density=0.5)
    seeds = mask_seeds(torch.Generator().manual_seed(seed), len(tiny_set.modules), len(tiny_set))
    for i, module in enumerate(tiny_set.modules):
        U_ref, Vh_ref, cores = dense_reference_cores(tiny_set, module)
        dropped = [
            drop_and_rescale(c.float(), drop_rate=p, generator=torch.Generator().manual_seed(s))
            for c, s in zip(cores, seeds[i], strict=True)
        ]
        merged = sum(dropped) if rule == "dare" else dense_ties(dropped, 0.5)
        want = U_ref @ merged.double() @ Vh_ref
        assert _close(_deltas(res, module), want, 1e-4)


def test_ties_golden_hand_case_on_axis_aligned_stacks():
    """Stacks whose singular bases are the coordinate axes: core TIES = TIES on ΔW.

    B_stk = [[2, -1], [2, 4]] (orthogonal rows), A_stk = [[1, 2], [1, -2]] (orthogonal columns).
    ΔW_1 = [[2, 4], [2, 4]], ΔW_2 = [[-1, 2], [4, -8]]; keep 2 of 4 entries each:
    [[0, 4], [0, 4]] and [[0, 0], [4, -8]]; signs [[0→+, +], [+, -]]; mean -> [[0, 4], [4, -8]].
    """
    from merging_core import Adapter, LoraModule

    a1 = Adapter(
        "t0", {"w": LoraModule(B=torch.tensor([[2.0], [2.0]]), A=torch.tensor([[1.0, 2.0]]))}
    )
    a2 = Adapter(
        "t1", {"w": LoraModule(B=torch.tensor([[-1.0], [4.0]]), A=torch.tensor([[1.0, -2.0]]))}
    )
    s = AdapterSet.from_adapters([a1, a2])
    res = merge(s, "core_space", rule="ties", density=0.5, scaling=1.0)
    want = torch.tensor([[0.0, 4.0], [4.0, -8.0]])
    assert torch.allclose(res.delta("w"), want, atol=1e-5)
    assert torch.allclose(merge(s, "ties", density=0.5, threshold="per_tensor").delta("w"), want)


def test_ties_rule_is_a_different_method_from_ties_on_delta(tiny_set):
    core = merge(tiny_set, "core_space", rule="ties", density=0.2)
    full = merge(tiny_set, "ties", density=0.2, threshold="per_tensor")
    module = tiny_set.modules[0]
    assert not _close(_deltas(core, module), _deltas(full, module), 1e-2)


# ---- properties -----------------------------------------------------------------------------

IDENTITY = {
    "ta": {},
    "ties": {"density": 1.0},
    "dare": {"drop_rate": 0.0},
    "dare_ties": {"drop_rate": 0.0, "density": 1.0},
    "tsv": {},
    "cart": {},
}


@pytest.mark.parametrize("rule", RULES)
def test_one_adapter_alone_comes_back(single_set, rule):
    res = merge(single_set, "core_space", rule=rule, scaling=1.0, **IDENTITY[rule])
    for module in single_set.modules:
        assert torch.allclose(res.delta(module), single_set.adapters[0].delta(module), atol=1e-4)


@pytest.mark.parametrize("rule", ORDER_FREE)
def test_order_of_adapters_does_not_matter(tiny_set, rule):
    flipped = AdapterSet.from_adapters(list(reversed(tiny_set.adapters)))
    a = merge(tiny_set, "core_space", rule=rule)
    b = merge(flipped, "core_space", rule=rule)
    for module in tiny_set.modules:
        assert _close(_deltas(a, module), _deltas(b, module), 1e-4)


@pytest.mark.parametrize("rule", EXACT_RULES)
def test_exact_rules_are_factorisation_invariant(tiny_set, reparam, rule):
    a = merge(tiny_set, "core_space", rule=rule)
    b = merge(reparam(tiny_set), "core_space", rule=rule)
    for module in tiny_set.modules:
        assert _close(_deltas(a, module), _deltas(b, module), 1e-4)


def test_ties_rule_depends_on_the_factorisation(tiny_set, reparam):
    a = merge(tiny_set, "core_space", rule="ties")
    b = merge(reparam(tiny_set), "core_space", rule="ties")
    module = tiny_set.modules[0]
    assert not _close(_deltas(a, module), _deltas(b, module), 1e-3)


@pytest.mark.parametrize("rule", RULES)
def test_result_is_factored_with_rank_at_most_the_stacked_rank(tiny_set, rule):
    res = merge(tiny_set, "core_space", rule=rule)
    for module in tiny_set.modules:
        R = sum(m.rank for m in tiny_set.factors(module))
        assert res.modules[module].is_factored
        assert res.modules[module].factors.rank <= R


def test_negated_twin_cancels_under_ta(twin_of, negate, tiny_set):
    s = negate(twin_of(tiny_set), 1)
    res = merge(s, "core_space", rule="ta", scaling=1.0)
    for module in s.modules:
        assert float(res.delta(module).abs().max()) < 1e-5


def test_many_tasks_more_than_the_width(make_set):
    s = make_set(6, ranks=(4, 2, 3))  # R = 18 > d = 12 or 16
    res = merge(s, "core_space", rule="ta", scaling=1.0)
    for module in s.modules:
        want = sum(m.B.double() @ m.A.double() for m in s.factors(module))
        assert _close(_deltas(res, module), want, 1e-5)


def test_unknown_rule_is_refused(tiny_set):
    with pytest.raises(ValueError, match="rule"):
        merge(tiny_set, "core_space", rule="mean")
