"""analyse_geometry: rows agree with the single-module functions, invariance, edge cases, API."""

from __future__ import annotations

import json
import math

import pytest
import torch
from geometry_helpers import adapter_set_from, random_factors, refactor

from merging_core.adapters import Adapter, AdapterSet, LoraModule
from merging_core.geometry import (
    COLUMNS,
    analyse_geometry,
    coverage_stacks,
    crowding_metrics,
    sign_conflict_rates,
    svd_vs_cur,
)
from merging_core.geometry import report as report_mod

SHAPES = {"q": (12, 10, [3, 3, 3]), "k": (6, 10, [3, 3, 3]), "v": (8, 10, [2, 4, 1])}


def _factors(seed: int = 0):
    Bs, As = {}, {}
    for layer in range(2):
        for i, (proj, (m, n, ranks)) in enumerate(SHAPES.items()):
            name = f"model.layers.{layer}.attn.{proj}"
            Bs[name], As[name] = random_factors(seed + 10 * layer + i, m, n, ranks)
    return Bs, As


@pytest.fixture(scope="module")
def factors():
    return _factors()


@pytest.fixture(scope="module")
def report(factors):
    return analyse_geometry(adapter_set_from(*factors), sign_density=0.3)


def test_rows_agree_with_single_module_functions(factors, report):
    Bs, As = factors
    for row in report.per_module:
        name = row["module"]
        expected = coverage_stacks(Bs[name], As[name]) | crowding_metrics(Bs[name], As[name])
        for key, value in expected.items():
            assert row[key] == pytest.approx(value, rel=1e-9, abs=1e-12), (name, key)
        cur = svd_vs_cur(Bs[name], As[name])
        assert row["cur_k"] == cur.k and row["cur_misalignment"] == pytest.approx(cur.misalignment)
        assert report.principal_angles(name)["left"] == pytest.approx(list(cur.left_angles))
        rates = sign_conflict_rates(Bs[name], As[name], densities=(1.0, 0.3))
        assert (row["sign_conflict_rate"], row["sign_conflict_rate_trimmed"]) == pytest.approx(
            rates
        )


def test_rows_are_flat_complete_json_and_finite(report):
    ids = ["module", "layer", "d_out", "d_in", "num_tasks", "rank_sum"]
    for row in report.per_module:
        assert list(row) == ids + list(COLUMNS)
        assert all(isinstance(v, (int, float, str)) for v in row.values())
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))
    text = json.dumps(report.to_dict(details=True))
    assert "NaN" not in text and "Infinity" not in text


def test_per_layer_rows_are_means_over_the_layer(report):
    assert [r["layer"] for r in report.per_layer] == ["model.layers.0", "model.layers.1"]
    layer0 = [r for r in report.per_module if r["layer"] == "model.layers.0"]
    agg = report.per_layer[0]
    assert agg["num_modules"] == 3
    for col in COLUMNS:
        assert agg[col] == pytest.approx(sum(r[col] for r in layer0) / 3)


def test_task_spectra_match_dense_svd(factors, report):
    Bs, As = factors
    name = "model.layers.1.attn.v"
    spectra = report.spectra(name)
    for t, (task, sigma) in enumerate(spectra["tasks"].items()):
        assert task == f"task{t}"
        dense = torch.linalg.svdvals(Bs[name][t] @ As[name][t])[: len(sigma)]
        assert sigma == pytest.approx(dense.tolist(), rel=1e-7)
    ta = torch.linalg.svdvals(sum(B @ A for B, A in zip(Bs[name], As[name], strict=True)))
    assert spectra["ta_sum"] == pytest.approx(ta[:7].tolist(), rel=1e-7, abs=1e-9)
    curves = report.energy_curves(name)
    assert curves["ta_sum"][-1] == pytest.approx(1.0)
    energies = report.component_energies(name)
    assert energies["B"][0] == pytest.approx(report.per_module[-1]["o_max_B"])
    assert sum(energies["A"]) == pytest.approx(1.0)
    O = report.overlaps(name)
    assert len(O["B"]) == 3 and all(len(r) == 3 for r in O["A"])


def test_dw_space_columns_are_refactoring_invariant(factors, report):
    Bs, As = factors
    B2, A2 = {}, {}
    for i, name in enumerate(Bs):
        B2[name], A2[name] = refactor(Bs[name], As[name], seed=100 + i)
    other = analyse_geometry(adapter_set_from(B2, A2), sign_density=0.3)
    changed = set()
    for r1, r2 in zip(report.per_module, other.per_module, strict=True):
        for col, (space, _) in COLUMNS.items():
            if space.startswith("ΔW"):
                assert r2[col] == pytest.approx(r1[col], rel=1e-6, abs=1e-9), (r1["module"], col)
            elif r2[col] != pytest.approx(r1[col], rel=1e-6):
                changed.add(col)
    assert {"erank_rank1_stack", "erank_B_stack", "coverage_ratio"} <= changed


def test_chunking_does_not_change_results(factors, report, monkeypatch):
    monkeypatch.setattr(report_mod, "CHUNK_ELEMENTS", 1)  # one module per batch
    again = analyse_geometry(adapter_set_from(*factors), sign_density=0.3)
    for r1, r2 in zip(report.per_module, again.per_module, strict=True):
        for col in COLUMNS:
            assert r2[col] == pytest.approx(r1[col], rel=1e-9, abs=1e-12)


def test_zero_rank1_and_transposed_modules_are_defined():
    gen = torch.Generator().manual_seed(0)
    adapters = []
    for t in range(2):
        mods = {
            "zero": LoraModule(B=torch.zeros(5, 2), A=torch.zeros(2, 4)),
            "rank1": LoraModule(
                B=torch.randn(5, 1, generator=gen), A=torch.randn(1, 4, generator=gen)
            ),
            "conv": LoraModule(
                B=torch.randn(6, 2, generator=gen),
                A=torch.randn(2, 3, generator=gen),
                transposed=True,
            ),
        }
        adapters.append(Adapter(name=f"t{t}", modules=mods))
    rep = analyse_geometry(AdapterSet.from_adapters(adapters))
    rows = {r["module"]: r for r in rep.per_module}
    assert all(v == 0.0 for k, v in rows["zero"].items() if k in COLUMNS and k != "cur_k")
    assert rows["zero"]["cur_k"] == 0 and rep.principal_angles("zero") == {"left": [], "right": []}
    assert rows["rank1"]["erank_task_mean"] == pytest.approx(1.0)
    assert (rows["conv"]["d_out"], rows["conv"]["d_in"]) == (6, 3)  # linear layout
    for row in rep.per_module:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float))


def test_sign_conflicts_switch_progress_and_errors(factors):
    aset = adapter_set_from(*factors)
    seen = []
    rep = analyse_geometry(aset, sign_conflicts=False, progress=lambda f, m: seen.append(f))
    assert all(r["sign_conflict_rate"] is None for r in rep.per_module)
    assert rep.per_layer[0]["sign_conflict_rate_trimmed"] is None
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    assert "reconstructed" in " ".join(rep.notes)
    with pytest.raises(KeyError, match="no geometry for module"):
        rep.spectra("nope")
    with pytest.raises(ValueError, match="k must be"):
        analyse_geometry(aset, k=0)
    with pytest.raises(ValueError, match="sign_density"):
        analyse_geometry(aset, sign_density=1.5)


def test_single_adapter_is_its_own_coverage():
    Bs, As = random_factors(6, 8, 5, [2])
    rep = analyse_geometry(adapter_set_from({"l.0.q": Bs}, {"l.0.q": As}))
    row = rep.per_module[0]
    assert row["coverage_ratio"] == pytest.approx(1.0) and row["ta_coverage"] == pytest.approx(1.0)
    assert row["erank_dw_stack"] == pytest.approx(1.0) and row["overlap_B_mean"] == 0.0
    assert row["sign_conflict_rate"] == 0.0


def test_per_task_metrics_equal_the_single_adapter_analysis(factors, report):
    Bs, As = factors
    assert [r["task"] for r in report.per_task[:3]] == ["task0", "task1", "task2"]
    assert len(report.per_task) == 3 * len(report.per_module)
    for t in range(3):
        alone = analyse_geometry(
            adapter_set_from({n: [Bs[n][t]] for n in Bs}, {n: [As[n][t]] for n in As}),
            sign_conflicts=False,
        )
        singles = {r["module"]: r for r in alone.per_module}
        for row in (r for r in report.per_task if r["task"] == f"task{t}"):
            single = singles[row["module"]]
            assert row["erank"] == pytest.approx(single["erank_task_mean"], rel=1e-9)
            assert row["stable_rank"] == pytest.approx(single["stable_rank_task_mean"], rel=1e-9)
            assert row["norm"] == pytest.approx(single["norm_task_mean"], rel=1e-9)
            dense = torch.linalg.matrix_norm(Bs[row["module"]][t] @ As[row["module"]][t])
            assert row["norm"] == pytest.approx(float(dense), rel=1e-9)


def test_per_task_layer_rows_and_heatmap_matrix(report):
    layer0 = [r for r in report.per_task if r["layer"] == "model.layers.0" and r["task"] == "task1"]
    agg = next(
        r for r in report.per_task_layer if (r["layer"], r["task"]) == ("model.layers.0", "task1")
    )
    assert agg["num_modules"] == 3
    assert agg["erank"] == pytest.approx(sum(r["erank"] for r in layer0) / 3)
    matrix = report.task_layer_matrix("stable_rank")
    assert matrix["tasks"] == ["task0", "task1", "task2"]
    assert matrix["layers"] == ["model.layers.0", "model.layers.1"]
    assert matrix["values"][1][0] == pytest.approx(agg["stable_rank"])
    with pytest.raises(ValueError, match="metric must be one of"):
        report.task_layer_matrix("nope")
    out = report.to_dict()
    assert len(out["per_task"]) == len(report.per_task) and set(out["task_metrics"]) == {
        "erank",
        "stable_rank",
        "norm",
    }


def test_sampled_sign_conflicts_are_labelled_estimates_that_cover_the_exact_rate():
    modules = {f"model.layers.{i}.attn.q": random_factors(i, 90, 80, [2, 3]) for i in range(2)}
    aset = adapter_set_from(
        {n: f[0] for n, f in modules.items()}, {n: f[1] for n, f in modules.items()}
    )
    rep = analyse_geometry(aset, sign_samples=1024, sign_confidence=0.99)
    exact = analyse_geometry(aset, sign_exact=True)
    assert (rep.sign_method, rep.sign_samples, rep.sign_confidence) == ("sampled", 1024, 0.99)
    assert exact.sign_method == "exact" and exact.sign_samples is None
    assert any("ESTIMATES" in note for note in rep.notes)
    assert not any("ESTIMATES" in note for note in exact.notes)
    for est, ex in zip(rep.per_module, exact.per_module, strict=True):
        for col in ("sign_conflict_rate", "sign_conflict_rate_trimmed"):
            assert est[f"{col}_low"] <= ex[col] <= est[f"{col}_high"], (est["module"], col)
            assert est[f"{col}_low"] < est[f"{col}_high"]
            assert ex[f"{col}_low"] == ex[col] == ex[f"{col}_high"]
    again = analyse_geometry(aset, sign_samples=1024, sign_confidence=0.99)
    assert again.per_module == rep.per_module  # seeded by default: same report twice
    other = analyse_geometry(aset, sign_samples=1024, generator=torch.Generator().manual_seed(9))
    assert other.per_module[0]["sign_conflict_rate"] != rep.per_module[0]["sign_conflict_rate"]
    assert rep.to_dict()["sign_method"] == "sampled"
