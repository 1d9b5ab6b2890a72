"""The spike remedies beyond clipping, each step by step against its reference written out here in plain numpy:
AdaGC (per-tensor adaptive clipping) and the statistical skip-step (OLMo-core); each test also shows plausible wrong
variants (mutants) of the formula disagreeing with what the code does. Then the remedies in training and through
run.py (skip_large_updates too, tested on its own in test_skip_large_updates.py)."""

import copy
import io
import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

import gradclip.training as training
from gradclip.clipping import method_class
from gradclip.component import typed

from conftest import run_cli, train_one

STEPS = 320
SHAPES = [(8, 5), (5,), (3, 4), (6,)]


def gradient_stream(seed=0, steps=STEPS):
    """Per step, one gradient per tensor: norms decaying with training, lognormal noise, and spikes (x 30) in one
    tensor at a time at a few steps after the warm-up."""
    rng = np.random.default_rng(seed)
    spikes = {130: 0, 131: 0, 180: 2, 240: 1, 300: 3}
    stream = []
    for t in range(steps):
        level = math.exp(-t / 40) + 0.2
        grads = []
        for i, shape in enumerate(SHAPES):
            g = rng.standard_normal(shape)
            g *= level * math.exp(0.1 * rng.standard_normal()) / np.linalg.norm(g)
            grads.append(g * (30.0 if spikes.get(t) == i else 1.0))
        stream.append(grads)
    return stream


def params_with(grads):
    params = [torch.nn.Parameter(torch.zeros(g.shape)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=torch.float32)
    return params


# --- AdaGC -------------------------------------------------------------------------------------------------------

ADAGC = {"warmup_steps": 100, "warmup_max_norm": 1.0, "lambda_rel": 1.05, "beta": 0.98}


def reference_adagc(stream, warmup_steps, warmup_max_norm, lambda_rel, beta, mutant=None):
    """The clipped gradients and the share of tensors clipped, per step, by the authors' formula
    (lishuai-97/AdaGC, clip_grads.py), in float64 loops."""
    gamma, out, shares = None, [], []
    for t, grads in enumerate(stream):
        norms = [float(np.linalg.norm(g)) for g in grads]
        if t < warmup_steps:
            total = math.sqrt(sum(n * n for n in norms))
            scales = [min(1.0, warmup_max_norm / (total + 1e-6))] * len(grads)
            clipped = [n * s for n, s in zip(norms, scales)]
            if mutant == "warmup_ema" and gamma is not None:
                gamma = [beta * g + (1 - beta) * c for g, c in zip(gamma, clipped)]
            else:
                gamma = clipped if gamma is None else [min(g, c) for g, c in zip(gamma, clipped)]
        elif mutant == "global":
            limit = lambda_rel * math.sqrt(sum(g * g for g in gamma))
            total = math.sqrt(sum(n * n for n in norms))
            scales = [limit / (total + 1e-6) if total > limit else 1.0] * len(grads)
            gamma = [beta * g + (1 - beta) * n * s for g, n, s in zip(gamma, norms, scales)]
        else:
            scales, new = [], []
            for n, g in zip(norms, gamma):
                limit = lambda_rel * g
                scales.append(limit / (n + 1e-6) if n > limit else 1.0)
                seen = n if mutant == "unclipped_gamma" else min(n, limit)
                new.append(beta * g + (1 - beta) * seen)
            gamma = new
        out.append([g * s for g, s in zip(grads, scales)])
        shares.append(sum(s < 1 for s in scales) / len(scales))
    return out, shares


def run_clipper(clipper, stream, losses=None):
    """Each step through the clipper as training calls it; the gradients it leaves, its stats and diagnostics."""
    out, stats, diagnostics = [], [], []
    for t, grads in enumerate(stream):
        params = params_with(grads)
        clipper.observe(math.nan if losses is None else losses[t])
        stats.append(clipper(params))
        out.append([p.grad.double().numpy() for p in params])
        diagnostics.append(clipper.diagnostics())
    return out, stats, diagnostics


def adagc(**settings):
    return method_class("adagc")(name="adagc", **{**ADAGC, **settings})


def disagreement(a, b) -> float:
    """The largest relative difference between two runs' clipped gradients, over steps and tensors."""
    return max(float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-12)) for sa, sb in zip(a, b)
               for x, y in zip(sa, sb))


def test_adagc_follows_the_reference_step_by_step():
    """320 steps with spikes: warm-up global clipping (it fires), then per-tensor clipping where a spiking tensor is
    clipped alone; gradients and the tensor_clip_share column as the reference's."""
    stream = gradient_stream()
    expected, shares = reference_adagc(stream, **ADAGC)
    got, stats, diagnostics = run_clipper(adagc(), stream)
    assert disagreement(got, expected) < 1e-5
    assert [d["tensor_clip_share"] for d in diagnostics] == pytest.approx(shares)
    assert any(s.fired for s in stats[:100]) and all(sh in (0.0, 1.0) for sh in shares[:100])  # global in warm-up
    partial = [t for t, sh in enumerate(shares) if 0 < sh < 1]
    assert {130, 180, 240, 300} <= set(partial) and len(partial) > 20  # per tensor: some clipped, others not
    for t, i in [(130, 0), (180, 2), (240, 1), (300, 3)]:  # the spiking tensor cut back to ~1.05 x its gamma
        assert np.linalg.norm(got[t][i]) < np.linalg.norm(stream[t][i]) / 10
    assert stats[180].pre_norm == pytest.approx(math.sqrt(sum(np.linalg.norm(g) ** 2 for g in stream[180])), rel=1e-5)


@pytest.mark.parametrize("mutant", ["unclipped_gamma", "global", "warmup_ema"])
def test_adagc_mutants_are_caught(mutant):
    """gamma updated with the unclipped norm, one global norm against the norm of the gammas, or the warm-up gamma
    as an EMA instead of the minimum: each disagrees with the code by far more than the test's tolerance."""
    stream = gradient_stream()
    got = run_clipper(adagc(), stream)[0]
    assert disagreement(got, reference_adagc(stream, **ADAGC, mutant=mutant)[0]) > 1e-2


# --- the statistical skip-step -----------------------------------------------------------------------------------

SKIP = {"window": 128, "min_values": 64, "sigma": 6.0, "max_norm": 1.0}


def loss_and_norm_stream(seed=0, steps=STEPS):
    """A noisy decaying loss and lognormal gradient norms with: a moderate loss outlier (7 sigma of the window) at
    step 100, a norm spike alone at 150, and a level shift of the loss over steps 200-229 (a new regime)."""
    rng = np.random.default_rng(seed)
    losses = [2.0 * math.exp(-t / 300) + 0.05 * rng.standard_normal() for t in range(steps)]
    norms = [0.8 * math.exp(0.2 * rng.standard_normal()) for _ in range(steps)]
    window = np.array(losses[:100])
    losses[100] = float(window.mean() + 7 * window.std(ddof=1))
    norms[150] *= 20
    for t in range(200, 230):
        losses[t] += 2.0
    return losses, norms


def reference_skip(losses, norms, window, min_values, sigma, mutant=None):
    """Which steps OLMo-core's SkipStepOptimizer skips, in plain Python: the last window + 1 values kept (skipped
    steps' too), mean and sample std of the values before the current one, a z-score above sigma skips."""
    kept_losses, kept_norms, skips = [], [], []
    for loss, norm in zip(losses, norms):
        kept_losses = (kept_losses + [loss])[-(window + 1):]
        kept_norms = (kept_norms + [norm])[-(window + 1):]
        skip = False
        if len(kept_losses) >= min_values:
            for kept in (kept_losses, kept_norms)[:1 if mutant == "loss_only" else 2]:
                before = kept if mutant == "with_current" else kept[:-1]
                mean = sum(before) / len(before)
                std = math.sqrt(sum((v - mean) ** 2 for v in before) / (len(before) - 1))
                skip = skip or not abs(kept[-1] - mean) / std <= sigma
        if skip and mutant == "skipped_left_out":
            kept_losses, kept_norms = kept_losses[:-1], kept_norms[:-1]
        skips.append(skip)
    return skips


def skip_step(**settings):
    return method_class("skip_step")(name="skip_step", **{**SKIP, **settings})


def norm_stream(norms):
    """One one-element tensor per step whose gradient norm is the given one."""
    return [[np.array([n])] for n in norms]


def test_skip_step_follows_the_reference_step_by_step():
    """The 7-sigma loss outlier and the norm spike are skipped, the new loss regime only for its first steps; the
    others are clipped at max_norm 1, and a skipped step's gradient is left as it was."""
    losses, norms = loss_and_norm_stream()
    expected = reference_skip(losses, norms, 128, 64, 6.0)
    got, stats, diagnostics = run_clipper(skip_step(), norm_stream(norms), losses)
    assert [s.skip for s in stats] == expected and [d["skipped_spike"] for d in diagnostics] == expected
    skipped = [t for t, s in enumerate(expected) if s]
    assert skipped[:2] == [100, 150] and 200 in skipped and 229 not in skipped and 3 <= len(skipped) <= 10
    for t, (g, s) in enumerate(zip(got, stats)):
        assert float(g[0][0]) == pytest.approx(norms[t] if s.skip else min(norms[t], 1.0), rel=1e-5)
        assert s.fired == (not s.skip and norms[t] > 1.0)


@pytest.mark.parametrize("mutant", ["with_current", "loss_only", "skipped_left_out"])
def test_skip_step_mutants_are_caught(mutant):
    """The window's statistics with the current value in them (the 7-sigma outlier passes), the threshold on the
    loss alone (the norm spike passes), or skipped steps' values kept out of the window (the new regime is never
    accepted): each skips other steps than the code."""
    losses, norms = loss_and_norm_stream()
    stats = run_clipper(skip_step(), norm_stream(norms), losses)[1]
    assert reference_skip(losses, norms, 128, 64, 6.0, mutant=mutant) != [s.skip for s in stats]


def test_skip_step_without_clipping_and_before_the_window_fills():
    losses, norms = loss_and_norm_stream()
    norms[30] *= 50  # before 64 values: never skipped
    got, stats, _ = run_clipper(skip_step(max_norm=None), norm_stream(norms), losses)
    assert not stats[30].skip and float(got[30][0][0]) == pytest.approx(norms[30], rel=1e-6)
    assert not any(s.fired for s in stats)


@pytest.mark.parametrize("method, settings, stream", [
    ("adagc", ADAGC, gradient_stream()),
    ("skip_step", SKIP, norm_stream(loss_and_norm_stream()[1]))])
def test_state_round_trip_continues_as_uninterrupted(method, settings, stream):
    """State saved at step 160 (torch.save, weights_only load, as a checkpoint), loaded into a fresh clipper: the
    next 160 steps bit for bit as the uninterrupted clipper's."""
    losses = loss_and_norm_stream()[0]
    whole = method_class(method)(name=method, **settings)
    first = method_class(method)(name=method, **settings)
    run_clipper(whole, stream[:160], losses[:160])
    run_clipper(first, stream[:160], losses[:160])
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = method_class(method)(name=method, **settings)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    a, b = run_clipper(whole, stream[160:], losses[160:]), run_clipper(resumed, stream[160:], losses[160:])
    assert all(np.array_equal(x, y) for sa, sb in zip(a[0], b[0]) for x, y in zip(sa, sb))
    assert a[1] == b[1] and a[2] == b[2]


def test_a_nonfinite_gradient_leaves_the_state_alone():
    for clipper in (adagc(warmup_steps=2), skip_step(window=4, min_values=3)):
        run_clipper(clipper, gradient_stream()[:5], [1.0] * 5)
        before = copy.deepcopy(clipper.state_dict())
        stats = clipper(params_with([np.full(s, math.inf) for s in SHAPES]))
        assert not math.isfinite(stats.pre_norm) and not stats.skip
        assert str(clipper.state_dict()) == str(before)


# --- in training, and through run.py -----------------------------------------------------------------------------

TINY = ["task=adding", "model=rnn", "task.seq_len=20", "steps=30", "eval_every=10"]
OFTEN = ["clip=skip_step", "clip.window=8", "clip.min_values=5", "clip.sigma=1.0"]  # skips ~1 step in 4
AROUND_SGD = ["optim=skip_large_updates", "optim.inner=torch.optim.SGD", "~optim.betas", "~optim.eps",
              "+optim.momentum=0.9", "optim.lr=0.05", "optim.max_squared_norm=0.02"]  # SGD's updates: 0.006-0.022


def same(a, b) -> bool:
    """Two snapshots (tensors, dicts and lists of them) equal bit for bit."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return torch.equal(a, b) if torch.is_tensor(a) else a == b


def test_a_skipped_step_is_a_true_noop_in_training(make_cfg, tmp_path, monkeypatch):
    """AdamW with weight decay and a cosine schedule: on every step the skip-step skips, the weights, the moments and
    the step counts are bit for bit as before it; the lr still follows the step count."""
    snapshots, clip_and_update = {}, training.Run.clip_and_update

    def snapshot(run):
        return copy.deepcopy(([p.detach() for p in run.params], run.optimizer.state_dict()["state"]))

    def recorded(run):
        before = snapshot(run)
        clip_and_update(run)
        snapshots[run.step] = (before, snapshot(run))

    monkeypatch.setattr(training.Run, "clip_and_update", recorded)
    overrides = [*TINY, *OFTEN, "optim=adamw", "optim.lr=0.01", "schedule=cosine", "schedule.warmup_iters=3"]
    summary = train_one(make_cfg(*overrides), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv").set_index("step")
    skipped = set(metrics.index[metrics.skipped_spike == 1])
    assert summary.status == "ok" and 3 <= len(skipped) <= 20 and metrics.skipped.iloc[1:].eq(0).all()
    assert all(same(*snapshots[t]) == (t in skipped) for t in range(1, 31))
    state = snapshots[30][1][1]
    assert {float(s["step"]) for s in state.values()} == {30.0 - len(skipped)}
    assert (metrics.loc[sorted(skipped), "update_norm"] == 0).all()
    schedule = typed("schedule", make_cfg(*overrides).schedule)  # the cosine goes on over the skipped steps
    assert list(metrics.lr.iloc[1:]) == pytest.approx([0.01 * schedule.factor(t) for t in range(30)])


def test_remedies_through_run_py_on_the_tiny_task(tmp_path):
    """`python run.py -m` with the skip-step and skip_large_updates composed, two seeds: both event columns in
    metrics.csv with events, and the report's loss figure marks them (its caption says which)."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", *TINY, *OFTEN, *AROUND_SGD, "seed=0,1", "logger=none", f"hydra.sweep.dir={sweep}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    metrics = pd.concat([pd.read_csv(sweep / job / "metrics.csv") for job in ("0", "1")])
    assert metrics.skipped_spike.sum() > 0 and metrics.skipped_update.sum() > 0
    assert json.loads((sweep / "0" / "summary.json").read_text())["optim"] == "skiplargeupdates"
    md = (sweep / "report" / "report.md").read_text()
    assert "triangle down: step skipped" in md and "triangle up: update skipped" in md


def test_remedies_through_run_py_on_the_gpt_with_adamw(tmp_path):
    """AdaGC and the skip-step on nanoGPT's model with AdamW, alone and wrapped by skip_large_updates: each run's
    metrics.csv has its remedies' columns."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "model=gpt", "task.batch_size=4", "task.bptt=16", "optim=adamw", "steps=12",
                     "eval_every=6", "clip=adagc,skip_step", "optim=adamw,skip_large_updates", "seed=0", "logger=none",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for job in range(4):
        config = OmegaConf.load(sweep / str(job) / "config.yaml")
        columns = pd.read_csv(sweep / str(job) / "metrics.csv").columns
        assert {"adagc": "tensor_clip_share", "skip_step": "skipped_spike"}[config.clip.name] in columns
        assert ("skipped_update" in columns) == (config.optim.get("inner") == "torch.optim.AdamW")
    assert (sweep / "report" / "figures" / "loss.png").is_file()
