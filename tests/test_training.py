import json
import math
import os
import statistics

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import gradclip.training as training
from gradclip.clipping import Clipper
from gradclip.summary import RunSummary, count_spikes
from gradclip.sweep import read_summary

from conftest import train_one

FAST = ["task=adding", "model=rnn", "task.seq_len=20", "steps=30", "eval_every=10", "optim.lr=0.05"]


def run(make_cfg, tmp_path, *overrides, name="run"):
    return train_one(make_cfg(*overrides), tmp_path / name, name=name, overrides=list(overrides))


def test_job_files(make_cfg, tmp_path):
    summary = run(make_cfg, tmp_path, *FAST, "clip=norm1")
    job = tmp_path / "run"
    metrics = pd.read_csv(job / "metrics.csv")
    assert list(metrics.step) == list(range(31))  # step 0 = the evaluation before training
    assert metrics.val_mse.notna().sum() == 4  # steps 0, 10, 20, 30
    for column in ["loss", "grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "lr"]:
        assert metrics[column].iloc[1:].notna().all(), column
    assert list(metrics.step[metrics.update_norm.notna()]) == [10, 20, 30]  # diagnostics every diag_every=10 steps
    assert RunSummary.read(job / "summary.json") == summary
    assert summary.status == "ok" and summary.steps_run == 30
    assert summary.data["seq_len"] == 20 and summary.versions["torch"] == torch.__version__
    assert summary.versions["cpu_capability"] == torch.backends.cpu.get_cpu_capability()  # e.g. AVX2, AVX512
    assert (summary.task, summary.model, summary.clip, summary.clip_method, summary.optim) == (
        "adding", "rnn", "norm1", "norm", "sgd")
    assert summary.model_params == {"cell": "rnn", "embedding": 64, "hidden": 50, "layers": 1, "dropout": 0.0}
    assert (job / "config.yaml").read_text().startswith("task:")
    assert not list(job.glob(".*.tmp")) and not (job / "checkpoint.pt").exists()
    assert summary.step_time_ms_median > 0 and "step_time_ms" not in metrics  # timings stay out of metrics.csv


@pytest.mark.parametrize("clip, threshold", [("clip=none", math.inf), ("clip=norm clip.threshold=inf", math.inf),
                                             ("clip=norm clip.threshold=2.5", 2.5), ("clip=autoclip", None)])
def test_summary_keeps_the_threshold_and_the_lr_as_numbers(make_cfg, tmp_path, clip, threshold):
    """inf survives JSON (stored as "inf"); the lr is the one the optimizer used, lr x lr_scale."""
    summary = run(make_cfg, tmp_path, *FAST, "steps=2", "optim.lr_scale=0.5", *clip.split())
    assert summary.clip_threshold == threshold and RunSummary.read(tmp_path / "run" / "summary.json") == summary
    assert summary.lr == 0.025 and summary.lr_scale == 0.5
    assert pd.read_csv(tmp_path / "run" / "metrics.csv").lr.iloc[1:].eq(0.025).all()


@pytest.mark.parametrize("setup, higher", [
    (["setup=digits_mlp", "steps=200", "eval_every=20", "clip.threshold=1.5"], True),  # clips 8 % of the steps
    (["setup=regression_mlp", "steps=300", "eval_every=20", "clip.threshold=300", "task.target=10000"], False)])
def test_summary_numbers_from_a_real_metrics_csv(make_cfg, tmp_path, setup, higher):
    """Every number a verdict uses, recomputed from the run's own metrics.csv with plain loops."""
    summary = run(make_cfg, tmp_path, "clip=norm", *setup, "diag_every=5")
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv").to_dict("records")
    metric, target_metric, target = summary.metric, summary.target_metric, summary.target
    evals = [(r["step"], r[f"val_{metric}"], r[f"val_{target_metric}"]) for r in rows if not math.isnan(r["val_loss"])]
    steps = [r for r in rows if r["step"] > 0]
    assert summary.higher_is_better == higher and summary.final_metric == evals[-1][1]
    best = max(evals, key=lambda e: e[1]) if higher else min(evals, key=lambda e: e[1])
    assert (summary.best_step, summary.best_metric) == (best[0], best[1])
    reached = [step for step, _, value in evals if value <= target]
    assert len(reached) >= 2 and summary.steps_to_target == reached[0]  # the first, not the last, evaluation
    assert summary.clipped_fraction == sum(r["clipped"] for r in steps) / len(steps)
    assert 0 < summary.clipped_fraction < 1 or not higher
    losses = [r["loss"] for r in steps]
    assert summary.loss_spikes == spikes_by_hand(losses, summary.spike_factor, summary.spike_window)
    assert summary.loss_spikes <= 0.02 * len(steps)  # a run that trains fine: mini-batch noise is no spike
    norms = [r["grad_norm"] for r in steps]
    assert summary.grad_norm_median == statistics.median(norms) and summary.grad_norm_max == max(norms)
    assert summary.initial_loss == steps[0]["loss"] and summary.steps_run == len(steps)
    tail = [r["loss"] for r in steps[-(len(steps) // 10):]]
    assert summary.final_train_loss == pytest.approx(sum(tail) / len(tail), rel=1e-12)
    assert summary.cosine_median == pytest.approx(1.0, abs=1e-9)  # measured on every 5th step
    assert (summary.status, summary.diverged_step) == ("ok", None)


def test_same_seed_same_metrics_bit_for_bit(make_cfg, tmp_path):
    def metrics(*overrides, name):
        run(make_cfg, tmp_path, *FAST, *overrides, name=name)
        return (tmp_path / name / "metrics.csv").read_bytes()

    a, b, c = metrics(name="a"), metrics(name="b"), metrics("seed=1", name="c")
    assert a == b and a != c


def test_divergence_is_a_result_not_an_exception(make_cfg, tmp_path):
    """The run ends at the first step whose (finite) loss exceeds diverge_factor x the first step's loss."""
    exploding = ["task=regression", "model=mlp", "steps=30", "optim.lr=0.02", "optim.momentum=0.9"]
    summary = run(make_cfg, tmp_path, *exploding)
    assert summary.diverged and summary.status == "diverged"
    assert summary.diverged_reason == "loss > 5 x initial loss"
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    first = metrics.loss.iloc[1]
    above = metrics[(metrics.step > 0) & (metrics.loss > 5 * first)]
    assert summary.diverged_step == above.step.iloc[0] == metrics.step.iloc[-1] == summary.steps_run
    assert math.isfinite(above.loss.iloc[0]) and not metrics.val_loss.isna().iloc[-1]  # evaluated where it ended
    later = run(make_cfg, tmp_path, *exploding, "diverge_factor=1e30", name="tolerant")
    assert later.diverged_step > summary.diverged_step


def test_nonfinite_gradients_are_skipped_then_diverge(make_cfg, tmp_path, monkeypatch):
    """Gradients poisoned with inf at steps 5, 6 (skipped, counted), then from step 10 on (diverged after 3)."""
    calls, snapshots = {"n": 0}, {}

    clip = Clipper.__call__

    def poisoned(self, params, measure=False):
        calls["n"] += 1
        if calls["n"] in (5, 6) or calls["n"] >= 10:
            params[0].grad[0] = math.inf
        snapshots[calls["n"]] = [p.detach().clone() for p in params]
        return clip(self, params, measure)

    monkeypatch.setattr(Clipper, "__call__", poisoned)
    summary = run(make_cfg, tmp_path, *FAST, "max_nonfinite=3", "clip=norm1")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step")
    assert metrics.loc[[5, 6], "skipped"].tolist() == [1, 1] and metrics.loc[7, "skipped"] == 0
    assert metrics.loc[[5, 6], "update_norm"].tolist() == [0.0, 0.0]
    assert summary.diverged_step == 12 and "non-finite" in summary.diverged_reason
    assert summary.nonfinite_steps == 5
    assert all(torch.isfinite(p).all() for p in snapshots[12])  # no inf ever reached the weights


@pytest.mark.parametrize("optim", [
    {"_target_": "torch.optim.SGD", "lr": 0.1, "lr_scale": 1.0, "momentum": 0.0, "weight_decay": 0.0, "foreach": True},
    {"_target_": "torch.optim.SGD", "lr": 0.1, "lr_scale": 1.0, "momentum": 0.9, "weight_decay": 1e-3, "foreach": True},
    {"_target_": "torch.optim.Adam", "lr": 1e-3, "lr_scale": 1.0, "betas": [0.9, 0.999], "eps": 1e-8,
     "weight_decay": 1e-2, "foreach": True}])
def test_optimizers_step_every_tensor_at_once_with_the_numbers_of_torchs_loop(optim):
    """build_optimizer's foreach=True (one call per step) gives, bit for bit, torch's CPU default (a loop)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(9, 32), torch.nn.Tanh(), torch.nn.Linear(32, 3))
    copy = [p.detach().clone().requires_grad_() for p in net.parameters()]
    ours = training.build_optimizer(OmegaConf.create(optim), net)
    reference = type(ours)(copy, **{k: v for k, v in ours.defaults.items() if k != "foreach"}, foreach=False)
    for step in range(50):
        grads = [torch.randn_like(p) for p in copy]
        for p, q, g in zip(net.parameters(), copy, grads):
            p.grad, q.grad = g.clone(), g.clone()
        ours.step()
        reference.step()
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), copy))


def spikes_by_hand(losses, factor, window):
    """count_spikes with plain loops: loss > median + factor x 1.4826 x MAD of the (at least 5) losses before."""
    count = 0
    for i, loss in enumerate(losses):
        before = losses[max(0, i - window):i]
        if len(before) >= min(window, 5):
            median = statistics.median(before)
            count += loss > median + factor * 1.4826 * statistics.median(abs(b - median) for b in before)
    return count


def test_spike_count():
    losses = pd.Series([1.0, 1.1, 0.9, 1.0, 1.2, 1.0, 1.4, 5.0])
    # 1.4 < 1.0 + 6 x 1.4826 x 0.05 (median, MAD of the 6 before); 5.0 > 1.05 + 6 x 1.4826 x 0.1
    assert count_spikes(losses, 6.0, 6) == 1
    assert count_spikes(losses[:4], 6.0, 6) == 0  # too few losses before to estimate the noise


def noisy_decay(seed, sigma=0.3, steps=1000):
    """A healthy training curve: lognormal mini-batch noise around an exponential decay to 0.05."""
    t = np.arange(steps)
    return pd.Series((2 * np.exp(-t / 200) + 0.05) * np.exp(sigma * np.random.default_rng(seed).standard_normal(steps)))


@pytest.mark.parametrize("seed", range(5))
def test_healthy_noise_is_no_spike_and_a_tenfold_jump_is(seed):
    losses = noisy_decay(seed)
    old = int((losses > 1.5 * losses.shift(1).rolling(50, min_periods=1).min()).sum())  # the former definition
    assert old > 500 and count_spikes(losses, 6.0, 50) <= 2
    jumped = losses.copy()
    jumped[600] *= 10
    assert count_spikes(jumped, 6.0, 50) == count_spikes(losses, 6.0, 50) + 1


@pytest.mark.parametrize("extra", [["optim=adam", "optim.lr=0.01"], ["optim.momentum=0.9", "clip=value"],
                                   ["clip=per_tensor"]])
def test_optimisers_and_clip_methods_train(make_cfg, tmp_path, extra):
    summary = run(make_cfg, tmp_path, *FAST, *extra)
    assert summary.status == "ok" and math.isfinite(summary.final_metric)


class Killed(BaseException):
    """Stands in for SIGKILL inside one process: nothing after it runs, no handler catches it."""


@pytest.mark.parametrize("extra", [["clip=norm1"], ["clip=autoclip", "clip.warmup=5"], ["clip=zclip", "clip.warmup=5"],
                                   ["clip=random", "clip.threshold=0.01"], ["optim=adam", "optim.lr=0.01"],
                                   ["optim.momentum=0.9", "smoothness_every=7"], ["optim=stableadamw", "optim.lr=0.01"],
                                   ["optim=spam", "optim.lr=0.01", "optim.reset_interval=15", "optim.warmup_steps=10",
                                    "optim.spike_clip_delay=3"],  # SPAM: killed inside its ramp after a reset
                                   ["clip=adagc", "clip.warmup_steps=5"],
                                   ["clip=skip_step", "clip.window=8", "clip.min_values=5", "clip.sigma=1.0"],
                                   ["optim=skip_large_updates", "optim.inner=torch.optim.SGD", "~optim.betas",
                                    "~optim.eps", "+optim.momentum=0.9", "optim.max_squared_norm=0.02"]])  # skips from 12
def test_resumed_run_equals_uninterrupted_run(make_cfg, tmp_path, monkeypatch, extra):
    """Killed right after the step-20 checkpoint, then rerun: same metrics.csv, byte for byte, from step 21 on."""
    overrides = [*FAST, "checkpoint_every=10", *extra]
    run(make_cfg, tmp_path, *overrides, name="whole")
    save = training.Run.save_checkpoint

    def save_then_die(run):
        save(run)
        if run.state["step"] == 20:
            raise Killed

    monkeypatch.setattr(training.Run, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        run(make_cfg, tmp_path, *overrides, name="killed")
    assert not (tmp_path / "killed" / "summary.json").exists()
    assert torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["state"]["step"] == 20
    monkeypatch.setattr(training.Run, "save_checkpoint", save)
    summary = run(make_cfg, tmp_path, *overrides, name="killed")
    assert summary.resumed_from_step == 20 and not (tmp_path / "killed" / "checkpoint.pt").exists()
    assert (tmp_path / "killed" / "metrics.csv").read_bytes() == (tmp_path / "whole" / "metrics.csv").read_bytes()


def test_run_job_skips_a_finished_job(make_cfg, tmp_path):
    cfg = make_cfg(*FAST)
    first = train_one(cfg, tmp_path / "job")
    written = (tmp_path / "job" / "summary.json").stat().st_mtime_ns
    again = train_one(cfg, tmp_path / "job")
    assert again == first and (tmp_path / "job" / "summary.json").stat().st_mtime_ns == written


def test_a_crash_is_recorded_not_raised(make_cfg, tmp_path, monkeypatch, capsys):
    from gradclip.models.recurrent import Recurrent

    def broken(self, task):
        raise RuntimeError("shape mismatch\nsecond line")

    monkeypatch.setattr(Recurrent, "build", broken)
    summary = train_one(make_cfg(*FAST), tmp_path / "job", name="job", overrides=["seed=3"])
    stored = json.loads((tmp_path / "job" / "summary.json").read_text())
    assert stored["status"] == summary["status"] == "failed"
    assert stored["error"] == "RuntimeError: shape mismatch" and "Traceback" in stored["traceback"]
    assert stored["overrides"] == ["seed=3"] and "job job failed" in capsys.readouterr().err
    assert read_summary(tmp_path / "job") is None  # a failed job is rerun by the next run of the sweep


def test_disk_full_fails_the_job_not_the_sweep(make_cfg, tmp_path, monkeypatch, capsys):
    """No space for metrics.csv: the job fails with the OS's message; with no space at all, it says so on stderr."""
    write = training.write_atomic

    def full_disk(path, data):
        if path.name != "config.yaml":
            raise OSError(28, "No space left on device")
        return write(path, data)

    monkeypatch.setattr(training, "write_atomic", full_disk)
    summary = train_one(make_cfg(*FAST), tmp_path / "job")
    assert summary["error"] == "OSError: [Errno 28] No space left on device"
    assert json.loads((tmp_path / "job" / "summary.json").read_text())["status"] == "failed"
    monkeypatch.setattr(training, "write_json", full_disk)
    summary = train_one(make_cfg(*FAST), tmp_path / "job2", name="job2")
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


@pytest.mark.parametrize("umask,mode", [(0o022, 0o644), (0o077, 0o600)], ids=["umask-022", "umask-077"])
def test_write_atomic_gives_the_mode_open_would(tmp_path, umask, mode):
    """Job files and reports are readable as the umask allows (as figures are), not mkstemp's 0600."""
    import gradclip.files as files

    previous = os.umask(umask)
    try:
        target = files.write_atomic(tmp_path / "summary.json", "{}\n")
    finally:
        os.umask(previous)
    assert target.stat().st_mode & 0o777 == mode and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
