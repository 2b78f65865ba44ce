"""The v2 build recipe of vision8 (real MNIST digits, ten-class digit tasks, broad pretraining)
and the build's premise checks."""

import pytest
import torch

from merging_core.bundles import premise, pretrain_data, tasks, vision8

V2 = [t.name for t in tasks.TASKS_V2]


def test_v2_has_eight_tasks_of_similar_class_counts():
    assert len(V2) == 8 and len(set(V2)) == 8
    counts = [len(t.classes) for t in tasks.TASKS_V2]
    assert min(counts) >= 6 and max(counts) <= 10  # no 2-class task among 10-class ones


def test_real_mnist_pool_is_balanced_split_and_disjoint():
    pools = tasks._mnist5k_pools()
    fit, test = pools["fit"], pools["test"]
    assert len(fit[1]) + len(test[1]) == 5000
    assert fit[0].shape[1:] == (1, 20, 20) and float(fit[0].max()) <= 1.0
    assert torch.bincount(torch.cat([fit[1], test[1]])).tolist() == [500] * 10
    a = {tuple(g.flatten().tolist()) for g in test[0][:200]}
    assert not a & {tuple(g.flatten().tolist()) for g in fit[0]}


@pytest.mark.parametrize("name", V2)
def test_v2_generators_are_deterministic_and_well_formed(name):
    x1, y1 = tasks.generate(name, "validation", 32, seed=1, tasks="v2")
    x2, y2 = tasks.generate(name, "validation", 32, seed=1, tasks="v2")
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (32, 3, 32, 32) and x1.dtype == torch.uint8
    assert 0 <= int(y1.min()) and int(y1.max()) < len(tasks.get_task(name, "v2").classes)
    assert x1.float().std() > 10


def test_v2_pretraining_mix_is_deterministic_with_more_captions():
    a = pretrain_data.draw_pretrain(64, torch.Generator().manual_seed(2), "v2")
    b = pretrain_data.draw_pretrain(64, torch.Generator().manual_seed(2), "v2")
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    v1, v2 = pretrain_data.concept_prompts(), pretrain_data.concept_prompts("v2")
    assert len(v1) == len(v2) and all(len(q) > len(p) for p, q in zip(v1, v2, strict=True))


def test_recipes_and_their_quick_versions():
    v2 = vision8.get_recipe("v2")
    assert v2.rank * 8 <= v2.config.width // 2  # adapters a small fraction of the width
    assert v2.n_validation >= 512 and v2.n_test >= 2048
    quick = vision8.get_recipe("v2", quick=True)
    assert quick.lora_steps < v2.lora_steps and quick.name == "v2-quick"
    with pytest.raises(KeyError, match="v9"):
        vision8.get_recipe("v9")
    with pytest.raises(KeyError, match="nope"):
        tasks.get_task("nope", "v2")


def test_premise_helpers():
    assert premise._pearson([0, 1, 2], [2, 1, 0]) == pytest.approx(-1.0)
    assert premise._slope((0.1, 0.2, 0.3), [3.0, 2.0, 1.0]) == pytest.approx(-10.0)


@pytest.mark.slow
def test_premise_gradients_match_finite_differences(bundle, adapters):
    deltas = [{m: a.delta(m) for m in a.modules} for a in adapters]
    g_h, g_ce = premise.gradients_at(bundle, deltas, 0.3, "validation", 1.0)
    assert g_h.shape == g_ce.shape == (8, len(deltas[0]))

    def summed_entropy(coeff_first_task: float) -> float:
        merged = premise._scaled(deltas[1:], 0.3)
        for m, dw in deltas[0].items():
            merged[m] = merged[m] + coeff_first_task * dw
        return sum(
            float(premise._entropy(premise._cos(bundle, t, f).double()))
            for t, f in bundle.features(merged, split="validation").items()
        )

    eps = 1e-2
    fd = (summed_entropy(0.3 + eps) - summed_entropy(0.3 - eps)) / (2 * eps)
    assert float(g_h[0].sum()) == pytest.approx(fd, rel=0.05, abs=1e-4)


@pytest.mark.slow
def test_shipped_premise_record_matches_a_fresh_evaluation(bundle):
    recorded = bundle.manifest.get("premise")
    if recorded is None:
        pytest.skip("the shipped bundle was built by the v1 recipe, before the premise checks")
    fresh = premise.premise_checks(bundle)
    assert fresh["ta_lambda"] == recorded["ta_lambda"]
    assert fresh["all_pass"] == recorded["all_pass"]
    for name, rec in recorded["tasks"].items():
        got = fresh["tasks"][name]
        for key in ("calibration_gap", "gradient_cosine", "entropy_accuracy_correlation"):
            assert got[key] == pytest.approx(rec[key], abs=1e-4), (name, key)
        assert got["own_entropy"] == pytest.approx(rec["own_entropy"], abs=1e-5)
        assert got["passes"] == rec["passes"]


def test_centred_heads_are_unit_rows_with_the_shared_direction_removed():
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(1, 16, generator=g)
    heads = torch.nn.functional.normalize(3 * shared + torch.randn(5, 16, generator=g), dim=-1)
    centred = vision8.centre_heads(heads)
    assert torch.allclose(centred.norm(dim=-1), torch.ones(5), atol=1e-6)
    off = ~torch.eye(5, dtype=torch.bool)
    assert (centred @ centred.T)[off].mean() < (heads @ heads.T)[off].mean() - 0.3


def test_concept_loss_runs_a_softmax_within_each_family():
    g = torch.Generator().manual_seed(1)
    families = torch.tensor([0, 0, 0, 1, 1])
    logits, concept = torch.randn(4, 5, generator=g), torch.tensor([0, 2, 3, 4])
    plain = vision8._concept_loss(logits, concept, None, 0.1)
    assert plain == pytest.approx(float(torch.nn.functional.cross_entropy(
        logits, concept, label_smoothing=0.1)))  # fmt: skip
    by_hand = (
        2 * torch.nn.functional.cross_entropy(logits[:2, :3], concept[:2])
        + 2 * torch.nn.functional.cross_entropy(logits[2:, 3:], concept[2:] - 3)
    ) / 4
    assert float(vision8._concept_loss(logits, concept, families, 0.0)) == pytest.approx(
        float(by_hand)
    )


def test_concept_families_follow_the_prompt_order():
    fams = pretrain_data.concept_families()
    assert len(fams) == len(pretrain_data.concept_prompts("v2"))
    assert torch.equal(fams, fams.sort().values)  # contiguous, in family order
    assert fams.bincount().tolist() == [len(f.concepts) for f in pretrain_data.FAMILIES]


def test_a_fixed_logit_scale_is_not_learned():
    heads = torch.nn.functional.normalize(torch.randn(len(pretrain_data.concept_families()), 384))
    _, scale = vision8.pretrain(
        heads, config=vision8.ViTConfig(depth=1), steps=2, batch=16, seed=0, mix="v2",
        fixed_logit_scale=50.0, max_logit_scale=20.0, families=pretrain_data.concept_families(),
    )  # fmt: skip
    assert scale == pytest.approx(50.0)  # neither learned nor capped by the learned scale's cap
