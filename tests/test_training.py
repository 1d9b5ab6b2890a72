import json
import math

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import gradclip.training as training
from gradclip.training import count_spikes, run_job

FAST = ["task=adding", "model=rnn", "task.seq_len=20", "steps=30", "eval_every=10", "optim.lr=0.05"]


def run(make_cfg, tmp_path, *overrides, name="run"):
    return run_job(make_cfg(*overrides), tmp_path / name, group="test", name=name, overrides=list(overrides))


def test_job_files(make_cfg, tmp_path):
    summary = run(make_cfg, tmp_path, *FAST, "clip=norm1")
    job = tmp_path / "run"
    metrics = pd.read_csv(job / "metrics.csv")
    assert list(metrics.step) == list(range(31))  # step 0 = the evaluation before training
    assert metrics.val_mse.notna().sum() == 4  # steps 0, 10, 20, 30
    for column in ["loss", "grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "lr"]:
        assert metrics[column].iloc[1:].notna().all(), column
    assert list(metrics.step[metrics.update_norm.notna()]) == [10, 20, 30]  # diagnostics every diag_every=10 steps
    assert json.loads((job / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["status"] == "ok" and summary["steps_run"] == 30
    assert summary["data"]["seq_len"] == 20 and summary["versions"]["torch"] == torch.__version__
    assert (job / "config.yaml").read_text().startswith("task:")
    assert not list(job.glob(".*.tmp")) and not (job / "checkpoint.pt").exists()
    assert summary["step_time_ms_median"] > 0 and "step_time_ms" not in metrics  # timings stay out of metrics.csv


def test_same_seed_same_metrics_bit_for_bit(make_cfg, tmp_path):
    def metrics(*overrides, name):
        run(make_cfg, tmp_path, *FAST, *overrides, name=name)
        return (tmp_path / name / "metrics.csv").read_bytes()

    a, b, c = metrics(name="a"), metrics(name="b"), metrics("seed=1", name="c")
    assert a == b and a != c


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


@pytest.mark.parametrize("optim", [
    {"name": "sgd", "lr": 0.1, "lr_scale": 1.0, "momentum": 0.0, "weight_decay": 0.0},
    {"name": "sgd", "lr": 0.1, "lr_scale": 1.0, "momentum": 0.9, "weight_decay": 1e-3},
    {"name": "adam", "lr": 1e-3, "lr_scale": 1.0, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2}])
def test_optimizers_step_every_tensor_at_once_with_the_numbers_of_torchs_loop(optim):
    """build_optimizer's foreach=True (one call per step) gives, bit for bit, torch's CPU default (a loop)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(9, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    copy = [p.detach().clone().requires_grad_() for p in net.parameters()]
    ours = training.build_optimizer(OmegaConf.create(optim), list(net.parameters()))
    reference = type(ours)(copy, **{k: v for k, v in ours.defaults.items() if k != "foreach"}, foreach=False)
    for step in range(50):
        grads = [torch.randn_like(p) for p in copy]
        for p, q, g in zip(net.parameters(), copy, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        reference.step()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), copy))


def test_spike_count():
    losses = pd.Series([4.0, 3.0, 2.0, 2.1, 3.5, 2.0, 1.9])
    assert count_spikes(losses, 1.5, 3) == 1  # 3.5 > 1.5 x min(3.0, 2.0, 2.1)


@pytest.mark.parametrize("extra", [["optim=adam", "optim.lr=0.01"], ["optim.momentum=0.9", "clip=value"],
                                   ["clip=per_tensor"]])
def test_optimisers_and_clip_methods_train(make_cfg, tmp_path, extra):
    summary = run(make_cfg, tmp_path, *FAST, *extra)
    assert summary["status"] == "ok" and math.isfinite(summary["final_metric"])


class Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after it runs, no handler catches it."""


@pytest.mark.parametrize("extra", [["clip=norm1"], ["clip=autoclip", "clip.warmup=5"], ["clip=zclip", "clip.warmup=5"],
                                   ["clip=random", "clip.threshold=0.01"], ["optim=adam", "optim.lr=0.01"],
                                   ["optim.momentum=0.9", "smoothness_every=7"]])
def test_resumed_run_equals_uninterrupted_run(make_cfg, tmp_path, monkeypatch, extra):
    """Killed right after the step-20 checkpoint, then rerun: same metrics.csv, byte for byte, from step 21 on."""
    overrides = [*FAST, "checkpoint_every=10", *extra]
    run(make_cfg, tmp_path, *overrides, name="whole")
    save = training.save_checkpoint

    def save_then_die(path, run):
        save(path, run)
        if run.state["step"] == 20:
            raise Killed

    monkeypatch.setattr(training, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(make_cfg, tmp_path, *overrides, name="killed")
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["state"]["step"] == 20
    monkeypatch.setattr(training, "save_checkpoint", save)
    summary = run(make_cfg, tmp_path, *overrides, name="killed")
    assert summary["resumed_from_step"] == 20 and not (tmp_path / "killed" / "checkpoint.pt").exists()
    assert (tmp_path / "killed" / "metrics.csv").read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()


def test_run_job_skips_a_finished_job(make_cfg, tmp_path):
    cfg = make_cfg(*FAST)
    first = training.run_job(cfg, tmp_path / "job", group="g", name="job", overrides=[])
    written = (tmp_path / "job" / "summary.json").stat().st_mtime_ns
    again = training.run_job(cfg, tmp_path / "job", group="g", name="job", overrides=[])
    assert again == json.loads(json.dumps(first)) and (tmp_path / "job" / "summary.json").stat().st_mtime_ns == written


def test_a_crash_is_recorded_not_raised(make_cfg, tmp_path, monkeypatch, capsys):
    def broken(cfg, task):
        raise RuntimeError("shape mismatch\nsecond line")

    monkeypatch.setattr(training, "build_model", broken)
    summary = training.run_job(make_cfg(*FAST), tmp_path / "job", group="g", name="job", overrides=["seed=3"])
    stored = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert stored["status"] == summary["status"] == "failed"
    assert stored["error"] == "RuntimeError: shape mismatch" and "Traceback" in stored["traceback"]
    assert stored["overrides"] == ["seed=3"] and "job job failed" in capsys.readouterr().err
    assert training.read_summary(tmp_path / "job") is None  # a failed job is rerun by the next run of the sweep


def test_disk_full_fails_the_job_not_the_sweep(make_cfg, tmp_path, monkeypatch, capsys):
    """No space for metrics.csv: the job fails with the OS's message; with no space at all, it says so on stderr."""
    write = training.write_atomic

    def full_disk(path, data):
        if path.name != "config.yaml":
            raise OSError(28, "No space left on device")
        return write(path, data)

    monkeypatch.setattr(training, "write_atomic", full_disk)
    summary = training.run_job(make_cfg(*FAST), tmp_path / "job", group="g", name="job", overrides=[])
    assert summary["error"] == "OSError: [Errno 28] No space left on device"
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["status"] == "failed"
    monkeypatch.setattr(training, "write_json", full_disk)
    summary = training.run_job(make_cfg(*FAST), tmp_path / "job2", group="g", name="job2", overrides=[])
    assert summary["status"] == "failed" and not (tmp_path / "job2" / "summary.json").exists()
    assert "could not record the failure" in capsys.readouterr().err


def test_write_atomic_never_leaves_a_partial_file(tmp_path, monkeypatch):
    """A full disk mid-write: the old file is untouched and no temporary file is left behind."""
    import gradclip.files as files

    target = files.write_atomic(tmp_path / "summary.json", "old and complete\n")

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(files.os, "fsync", no_space)
    with pytest.raises(OSError, match="No space"):
        files.write_atomic(target, "new" * 1000)
    assert target.read_text() == "old and complete\n" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
