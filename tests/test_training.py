import json
import math

import pandas as pd
import pytest
import torch

import gradclip.training as training
from gradclip.training import count_spikes, train

FAST = ["task=adding", "model=rnn", "task.seq_len=20", "steps=30", "eval_every=10", "optim.lr=0.05"]


def run(make_cfg, tmp_path, *overrides, name="run"):
    return train(make_cfg(*overrides), tmp_path / name, group="test", name=name, overrides=list(overrides))


def test_job_files(make_cfg, tmp_path):
    summary = run(make_cfg, tmp_path, *FAST, "clip=norm1")
    job = tmp_path / "run"
    metrics = pd.read_csv(job / "metrics.csv")
    assert list(metrics.step) == list(range(31))  # step 0 = the evaluation before training
    assert metrics.val_mse.notna().sum() == 4  # steps 0, 10, 20, 30
    for column in ["loss", "grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "update_norm", "lr",
                   "step_time_ms"]:
        assert metrics[column].iloc[1:].notna().all(), column
    assert json.loads((job / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["status"] == "ok" and summary["steps_run"] == 30
    assert summary["data"]["seq_len"] == 20 and summary["versions"]["torch"] == torch.__version__
    assert (job / "config.yaml").read_text().startswith("task:")
    assert not list(job.glob(".*.tmp"))


def test_same_seed_same_metrics(make_cfg, tmp_path):
    def metrics(*overrides, name):
        run(make_cfg, tmp_path, *FAST, *overrides, name=name)
        return pd.read_csv(tmp_path / name / "metrics.csv").drop(columns=["step_time_ms"])

    a, b, c = metrics(name="a"), metrics(name="b"), metrics("seed=1", name="c")
    pd.testing.assert_frame_equal(a, b)
    assert not a.loss.iloc[1:].equals(c.loss.iloc[1:])


def test_divergence_is_a_result_not_an_exception(make_cfg, tmp_path):
    summary = run(make_cfg, tmp_path, "task=regression", "model=mlp", "steps=30", "optim.lr=1000")
    assert summary["diverged"] and summary["status"] == "diverged"
    assert 1 <= summary["diverged_step"] < 30 and summary["steps_run"] == summary["diverged_step"]
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert metrics.step.iloc[-1] == summary["diverged_step"]


def test_nonfinite_gradients_are_skipped_then_diverge(make_cfg, tmp_path, monkeypatch):
    """Gradients poisoned with inf at steps 5, 6 (skipped, counted), then from step 10 on (diverged after 3)."""
    calls, snapshots = {"n": 0}, {}

    class Poisoned(training.Clipper):
        def __call__(self, params, measure=False):
            calls["n"] += 1
            if calls["n"] in (5, 6) or calls["n"] >= 10:
                params[0].grad[0] = math.inf
            snapshots[calls["n"]] = [p.detach().clone() for p in params]
            return super().__call__(params, measure)

    monkeypatch.setattr(training, "Clipper", Poisoned)
    summary = run(make_cfg, tmp_path, *FAST, "max_nonfinite=3", "clip=norm1")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step")
    assert metrics.loc[[5, 6], "skipped"].tolist() == [1, 1] and metrics.loc[7, "skipped"] == 0
    assert metrics.loc[[5, 6], "update_norm"].tolist() == [0.0, 0.0]
    assert summary["diverged_step"] == 12 and "non-finite" in summary["diverged_reason"]
    assert summary["nonfinite_steps"] == 5
    assert all(torch.isfinite(p).all() for p in snapshots[12])  # no inf ever reached the weights


def test_spike_count():
    losses = pd.Series([4.0, 3.0, 2.0, 2.1, 3.5, 2.0, 1.9])
    assert count_spikes(losses, 1.5, 3) == 1  # 3.5 > 1.5 x min(3.0, 2.0, 2.1)


@pytest.mark.parametrize("extra", [["optim=adam", "optim.lr=0.01"], ["optim.momentum=0.9", "clip=value"],
                                   ["clip=per_tensor"]])
def test_optimisers_and_clip_methods_train(make_cfg, tmp_path, extra):
    summary = run(make_cfg, tmp_path, *FAST, *extra)
    assert summary["status"] == "ok" and math.isfinite(summary["final_metric"])
