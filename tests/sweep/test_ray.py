"""The Ray executor: the same sweep on a local Ray instance with two resident actors."""

import pytest

from merging_core.sweep import run_sweep
from merging_core.sweep.ray_executor import actor_plan
from tests.sweep.conftest import scores_by


def test_actor_plan_one_per_gpu_or_per_cores():
    assert actor_plan({"CPU": 64, "GPU": 8}, "auto", 0, None) == (8, 8, 1)
    assert actor_plan({"CPU": 64, "GPU": 8}, "cpu", 4, None) == (4, 16, 0)
    assert actor_plan({"CPU": 16}, "auto", 0, 4) == (4, 4, 0)
    with pytest.raises(ValueError, match="no GPU"):
        actor_plan({"CPU": 16}, "cuda", 0, None)


@pytest.mark.ray
@pytest.mark.slow
def test_ray_two_actors_equal_the_serial_cli(ta_spec, serial_cli_scores, tmp_path):
    pytest.importorskip("ray")
    summary = run_sweep(ta_spec, tmp_path, executor="ray", workers=2)
    assert (summary.done, summary.failed) == (6, 0)
    assert scores_by(tmp_path, "scaling") == serial_cli_scores
