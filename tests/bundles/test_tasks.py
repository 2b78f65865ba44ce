"""The vision8 task and pretraining generators: deterministic under a seed, well-formed."""

import pytest
import torch

from merging_core.bundles import pretrain_data, render, tasks
from merging_core.bundles.vit import TinyViT, ViTConfig, lora_target_paths

NAMES = [t.name for t in tasks.TASKS]


def test_eight_distinct_tasks_with_prompts_per_class():
    assert len(NAMES) == 8 and len(set(NAMES)) == 8
    for task in tasks.TASKS:
        prompts = task.prompts()
        assert len(prompts) == len(task.classes) >= 2
        assert all(len(p) == len(task.templates) for p in prompts)


@pytest.mark.parametrize("name", NAMES)
def test_generator_is_deterministic_and_well_formed(name):
    x1, y1 = tasks.generate(name, "train", 48, seed=3)
    x2, y2 = tasks.generate(name, "train", 48, seed=3)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert x1.shape == (48, 3, 32, 32) and x1.dtype == torch.uint8
    assert y1.dtype == torch.int64
    assert 0 <= int(y1.min()) and int(y1.max()) < len(tasks.get_task(name).classes)
    x3, _ = tasks.generate(name, "train", 48, seed=4)
    x4, _ = tasks.generate(name, "test", 48, seed=3)
    assert not torch.equal(x1, x3) and not torch.equal(x1, x4)
    assert x1.float().std() > 10  # an image, not a constant


def test_splits_get_distinct_seeds():
    seeds = {tasks.split_seed(0, t, s) for t in NAMES for s in tasks.SPLITS}
    assert len(seeds) == len(NAMES) * len(tasks.SPLITS)


def test_test_digits_come_from_a_disjoint_pool():
    pools = tasks._digit_pools()
    fit = {tuple(g.flatten().tolist()) for g in pools["fit"][0]}
    test = {tuple(g.flatten().tolist()) for g in pools["test"][0]}
    assert len(pools["fit"][1]) + len(pools["test"][1]) == 1797
    assert len(fit & test) <= 2  # scikit-learn's digits contain a few exact duplicates


def test_parity_labels_follow_the_drawn_digit():
    gen = torch.Generator().manual_seed(0)
    _, y = tasks.draw_parity(64, gen, "train")
    assert set(y.tolist()) <= {0, 1}


def test_dot_masks_draw_the_requested_number_of_discs():
    from scipy.ndimage import label

    counts = torch.arange(1, 7).repeat(3)
    masks = tasks.dot_masks(counts, torch.Generator().manual_seed(1))
    found = [label(m[0].numpy() > 0.5)[1] for m in masks]
    assert found == counts.tolist()


def test_unknown_names_raise_key_errors_naming_them():
    with pytest.raises(KeyError, match="nope"):
        tasks.get_task("nope")
    with pytest.raises(ValueError, match="split"):
        tasks.generate("mnist", "dev", 4, seed=0)
    with pytest.raises(KeyError, match="hexagon"):
        render.shape_distance("hexagon", torch.zeros(1), torch.zeros(1))


def test_pretraining_mix_is_deterministic_and_covers_its_captions():
    a = pretrain_data.draw_pretrain(256, torch.Generator().manual_seed(5))
    b = pretrain_data.draw_pretrain(256, torch.Generator().manual_seed(5))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert int(a[1].max()) < len(pretrain_data.concept_prompts())
    assert float(a[0].min()) >= 0 and float(a[0].max()) <= 1


def test_vit_targets_are_linears_and_token_cache_matches_full_forward():
    cfg = ViTConfig(depth=2)
    model = TinyViT(cfg).eval()
    for path in lora_target_paths(cfg):
        assert isinstance(model.get_submodule(path), torch.nn.Linear)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(model.embed(x), embedded=True))
    assert model(x).shape == (3, cfg.embed_dim)
    with pytest.raises(ValueError, match="patch_size"):
        ViTConfig(image_size=30)
