"""app_support helpers: weight-space retention vs a dense reference, simplex maths, settings."""

from __future__ import annotations

import pytest
import torch
from apptest_support import make_adapter

from app_support import widgets
from app_support.loading import adapter_folders, group_uploads
from app_support.merging import identity_error, set_terms, weight_space_retention
from app_support.settings import widget_values
from app_support.state import param_key
from merging_core.adapters import AdapterSet
from merging_core.merge import merge
from merging_core.methods import get_method


@pytest.fixture
def adapter_set(adapters) -> AdapterSet:
    return AdapterSet.from_adapters(adapters)


@pytest.mark.parametrize("method", ["task_arithmetic", "ties"])  # factored and dense results
def test_retention_matches_dense_formula(adapter_set, method):
    result = merge(adapter_set, method)
    kept = weight_space_retention(adapter_set, result)
    for a in adapter_set.adapters:
        dot = sum(float((result.delta(m) * a.delta(m)).sum()) for m in adapter_set.modules)
        t2 = sum(float(a.delta(m).pow(2).sum()) for m in adapter_set.modules)
        m2 = sum(float(result.delta(m).pow(2).sum()) for m in adapter_set.modules)
        assert kept["coefficient"][a.name] == pytest.approx(dot / t2, rel=1e-4)
        assert kept["cosine"][a.name] == pytest.approx(dot / (t2 * m2) ** 0.5, rel=1e-4)


def test_retention_with_kept_set_terms_is_the_same(adapter_set):
    terms = set_terms(adapter_set)  # what the Merge page keeps while a slider moves
    for scaling in (0.3, 0.9):
        result = merge(adapter_set, "task_arithmetic", scaling=scaling)
        assert weight_space_retention(adapter_set, result, terms) == weight_space_retention(
            adapter_set, result
        )


def test_retention_of_a_single_adapter_is_its_weight(adapters):
    single = AdapterSet.from_adapters(adapters[:1])
    kept = weight_space_retention(single, merge(single, "task_arithmetic", scaling=0.7))
    assert kept["coefficient"]["task0"] == pytest.approx(0.7, rel=1e-5)
    assert kept["cosine"]["task0"] == pytest.approx(1.0, rel=1e-5)


def test_identity_check_is_exact(adapter_set):
    assert identity_error(adapter_set, "task1") < 1e-5


def test_identity_check_sees_a_factorisation_change(adapters):
    # (B·M, M⁻¹·A) is the same update: the identity check must still pass.
    a = adapters[0]
    M = torch.randn(4, 4, generator=torch.Generator().manual_seed(9)) + 4 * torch.eye(4)
    mods = {k: m.with_factors(m.B @ M, torch.linalg.solve(M, m.A)) for k, m in a.modules.items()}
    moved = type(a)(name="moved", modules=mods, config=a.config)
    s = AdapterSet.from_adapters([moved])
    assert identity_error(s, "moved") < 1e-4


class TestSimplex:
    def test_rebalanced_keeps_the_moved_value_and_sums_to_one(self):
        out = widgets.rebalanced([0.5, 0.3, 0.2], moved=0)
        assert out[0] == 0.5
        out = widgets.rebalanced([0.8, 0.3, 0.2], moved=0)
        assert out == pytest.approx([0.8, 0.12, 0.08])
        assert sum(out) == pytest.approx(1.0)

    def test_rebalanced_from_all_zero_others_spreads_evenly(self):
        assert widgets.rebalanced([0.4, 0.0, 0.0], moved=0) == pytest.approx([0.4, 0.3, 0.3])

    def test_normalise(self):
        assert widgets.normalise([2.0, 2.0]) == [0.5, 0.5]
        assert widgets.normalise([0.0, 0.0, 0.0]) == pytest.approx([1 / 3] * 3)

    def test_log_grid(self):
        grid = widgets.log_grid(0.001, 1000.0)
        assert grid[0] == 0.001 and grid[-1] == 1000.0 and 1.0 in grid
        assert grid == sorted(grid)
        with pytest.raises(ValueError, match="low=0"):
            widgets.log_grid(0.0, 1.0)


def test_widget_values_spread_weights_by_name_and_snap_log_params():
    values = widget_values(get_method("tara_b"), {"rho": [0.2, 0.8], "alpha": 0.9}, ["a", "b"])
    assert values[param_key("tara_b", "rho", "a")] == 0.2
    assert values[param_key("tara_b", "rho", "b")] == 0.8
    assert values[param_key("tara_b", "alpha")] in widgets.log_grid(0.001, 1000.0)
    assert values[param_key("tara_b", "alpha")] == pytest.approx(1.0, rel=0.2)


def test_widget_values_shown_adapters_without_a_value_get_the_default():
    info = get_method("task_arithmetic")
    values = widget_values(info, {"weights": [0.5]}, ["b"], shown=["a", "b"])
    assert values == {param_key("task_arithmetic", "weights", "a"): 1.0,
                      param_key("task_arithmetic", "weights", "b"): 0.5}  # fmt: skip
    with pytest.raises(KeyError, match="no parameter"):
        widget_values(info, {"density": 0.5}, ["a"])


def test_count_grid_and_param_grid_keep_the_default():
    assert widgets.count_grid(0, 5000, 250) == [
        0, 1, 2, 5, 10, 20, 50, 100, 200, 250, 500, 1000, 2000, 5000]  # fmt: skip
    lr = get_method("tara_b").param("lr")  # 1e-3 is not on the 41-point grid by itself
    assert lr.default in widgets.param_grid(lr)
    assert widgets.snap(widgets.param_grid(lr), 0.00101) == lr.default


def test_job_queue_runs_in_order_and_stops(monkeypatch):
    import threading

    from app_support.jobs import JobQueue

    queue, gate = JobQueue(), threading.Event()

    def slow(progress, should_stop, publish):
        for i in range(1000):
            gate.wait(0.01)
            progress(i / 1000, f"step {i}")
        return "never"

    first = queue.submit("a", "first", slow)
    second = queue.submit("b", "second", lambda p, s, publish: "done")
    while first.status == "queued":
        gate.wait(0.01)
    assert queue.ahead_of(second) == 1
    first.cancel()  # stops at its next progress report
    while not second.finished_:
        gate.wait(0.01)
    assert (first.status, first.result) == ("stopped", None)
    assert (second.status, second.result) == ("done", "done")


class FakeUpload:
    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def test_group_uploads_by_folder():
    files = [
        FakeUpload("adapters/a/adapter_config.json", b"{}"),
        FakeUpload("adapters/a/adapter_model.safetensors", b"w"),
        FakeUpload("b/adapter_config.json", b"{}"),
        FakeUpload("loose.safetensors", b"x"),
    ]
    groups = group_uploads(files, "mine")
    assert set(groups) == {"a", "b", "mine"}
    assert groups["a"] == {"adapter_config.json": b"{}", "adapter_model.safetensors": b"w"}


def test_adapter_folders_refusals(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        adapter_folders(str(tmp_path / "missing"))
    with pytest.raises(ValueError, match="no adapter_config.json"):
        adapter_folders(str(tmp_path))
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "adapter_config.json").write_text("{}")
    assert adapter_folders(str(tmp_path)) == [tmp_path / "x"]
    assert adapter_folders(str(tmp_path / "x")) == [tmp_path / "x"]


def test_make_adapter_is_seeded():
    a, b = make_adapter("a", 1), make_adapter("b", 1)
    assert torch.equal(a.modules["blocks.0.attn.q"].B, b.modules["blocks.0.attn.q"].B)


def test_torch_threads_policy():
    from merging_core.runtime import torch_threads

    assert torch_threads(2, None) == 1
    assert torch_threads(16, None) == 8
    assert torch_threads(None, None) == 1
    assert torch_threads(16, "3") == 3
    with pytest.raises(ValueError, match="positive whole number"):
        torch_threads(16, "0")


def test_run_status_in_plain_words():
    from app_support.jobs import Job
    from app_support.run_view import describe, duration

    job = Job(key=None, label="TARA-B on 8 adapters", work=lambda p, s: None)
    assert describe(job, 2) == "Waiting for 2 runs ahead of yours (the server runs one at a time)."
    job.status = "running"
    assert "preparing" in describe(job, 0)
    job._report(1 / 250, "step 1 of 250 · 0.0 steps/s · about 99999 s left")  # slow 1st step
    assert describe(job, 0) == "TARA-B on 8 adapters: step 1 of 250 · measuring its speed…"
    job._first = (job._first[0] - 12.0, 1 / 250)  # then 36 more steps in 12 s: 3 steps/s
    job._report(37 / 250, "step 37 of 250 · 0.7 steps/s · about 300 s left")
    assert describe(job, 0) == (
        "TARA-B on 8 adapters: step 37 of 250 · 3.00 steps/s · about 1 min 11 s left"
    )
    assert (duration(45), duration(185), duration(3725)) == ("45 s", "3 min 05 s", "1 h 02 min")


def _wait(job, timeout=60.0):
    import time

    end = time.monotonic() + timeout
    while not job.finished_ and time.monotonic() < end:
        time.sleep(0.02)
    assert job.finished_, job.status


def test_isolated_job_runs_in_a_low_priority_child_and_streams_back():
    import os

    from app_support.jobs import JobQueue, can_isolate

    if not can_isolate():
        pytest.skip("this platform runs jobs in the worker thread")

    def work(progress, should_stop, publish):
        for i in range(3):
            publish({"point": i})
            progress((i + 1) / 3, f"step {i + 1} of 3")
        return os.getpid(), os.nice(0)

    job = JobQueue().submit("k", "child", work, isolated=True)
    _wait(job)
    assert job.status == "done", job.error
    pid, niceness = job.result
    assert pid != os.getpid() and niceness >= os.nice(0) + 1
    assert job.items == [{"point": 0}, {"point": 1}, {"point": 2}]
    assert job.fraction == 1.0 and job.message == "step 3 of 3"


def test_isolated_job_stops_through_its_flag_and_reports_failures():
    import os
    import time

    from app_support.jobs import JobQueue, can_isolate

    if not can_isolate():
        pytest.skip("this platform runs jobs in the worker thread")
    queue = JobQueue()

    def polls(progress, should_stop, publish):
        steps = 0
        while not should_stop():
            time.sleep(0.01)
            steps += 1
            progress(0.5, f"step {steps} of 100000")
        return f"stopped after {steps}"

    job = queue.submit("a", "polls", polls, stop_in_progress=False, isolated=True)
    while job.status != "running" or job.fraction == 0.0:
        time.sleep(0.02)
    job.cancel()
    _wait(job)
    assert job.status == "stopped" and job.result.startswith("stopped after")

    failing = queue.submit("b", "raises", lambda p, s, u: 1 / 0, isolated=True)
    _wait(failing)
    assert failing.status == "failed" and "ZeroDivisionError" in failing.error

    dies = queue.submit("c", "dies", lambda p, s, u: os._exit(3), isolated=True)
    _wait(dies)
    assert dies.status == "failed" and "exit code 3" in dies.error

    unpicklable = queue.submit("d", "lambda", lambda p, s, u: (lambda: 0), isolated=True)
    _wait(unpicklable)
    assert unpicklable.status == "failed" and "could not send" in unpicklable.error
