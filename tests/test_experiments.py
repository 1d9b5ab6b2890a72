"""Each experiment's rule, checked on synthetic runs both ways (it must be able to fail)."""

import math

import pandas as pd
import pytest

from experiments import calibration

from conftest import run_summary


def fake_sweep(folder, runs):
    """Job folders with the summary.json / metrics.csv fields the experiments read."""
    for i, run in enumerate(runs):
        job = folder / str(i)
        job.mkdir(parents=True)
        run_summary(clip=run["clip"], seed=run["seed"], overrides=[f"clip={run['clip']}", f"seed={run['seed']}"],
                    task="charlm", diverged=run.get("diverged", False), diverged_step=run.get("diverged_step"),
                    loss_spikes=run.get("spikes", 0), initial_loss=4.6, final_metric=run.get("final", 2.2),
                    best_metric=2.2, steps_to_target=300, clipped_fraction=0.01, grad_norm_median=0.2,
                    wall_time_s=20.0).write(job / "summary.json")
        pd.DataFrame({"step": [0, 1], "loss": [math.nan, 4.6]}).to_csv(job / "metrics.csv", index=False)


def test_calibration_accepts_unstable_noclip_and_stable_norm1(tmp_path, capsys):
    fake_sweep(tmp_path, [{"clip": "none", "seed": 0, "diverged": True, "diverged_step": 4},
                          {"clip": "none", "seed": 1, "spikes": 3}, {"clip": "none", "seed": 2, "spikes": 2},
                          {"clip": "norm1", "seed": 0}, {"clip": "norm1", "seed": 1}, {"clip": "norm1", "seed": 2}])
    assert calibration.main(str(tmp_path)) == 0
    assert "no-clip unstable on 2/3 seeds" in capsys.readouterr().out


@pytest.mark.parametrize("runs", [
    [{"clip": "none", "seed": 0, "spikes": 3}, {"clip": "none", "seed": 1, "spikes": 2},  # only 1/2: not most
     {"clip": "norm1", "seed": 0}, {"clip": "norm1", "seed": 1}],
    [{"clip": "none", "seed": 0, "diverged": True, "diverged_step": 3}, {"clip": "norm1", "seed": 0,
                                                                        "diverged": True, "diverged_step": 9}],
    [{"clip": "none", "seed": 0, "spikes": 9}, {"clip": "norm1", "seed": 0, "final": 7.0}],  # worse than at start
])
def test_calibration_rejects(tmp_path, runs):
    fake_sweep(tmp_path, runs)
    assert calibration.main(str(tmp_path)) == 1
