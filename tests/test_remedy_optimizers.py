"""SPAM and StableAdamW step by step against their references written out here (numpy, float64), each reference's
plausible mutants caught, a resumed optimizer continuing identically, weight decay on the decay group alone, and
both optimizers trained by run.py with schedule=cosine on a tiny task and on the GPT."""

import io
import math

import numpy as np
import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from gradclip.optimizers.spam import SPAM
from gradclip.optimizers.stableadamw import StableAdamW
from gradclip.training import build_optimizer

from conftest import ROOT, build, run_cli

STEPS = 700
SHAPES = [(6, 5), (5,), (4, 3)]
SCALES = [1.0, 1.0, 1e-4]  # the last tensor's gradients lie below eps: v under eps^2 (StableAdamW's floor) matters
DECAYED = [True, False, True]  # the vector sits in a group with weight_decay 0, as decay_matrices_only puts biases
SPIKES = {10: 1, 30: 0, 120: 2, 200: 0, 300: 2, 450: 0, 505: 1, 530: 2, 560: 0, 650: 2}  # step -> tensor spiked
UNCLIPPED_SPIKES = (10, 505)  # SPAM: before step 20, and inside the 20 steps after the reset at 500
TOLERANCE = dict(rtol=1e-9, atol=1e-12)  # float64 on both sides: the implementation agrees to ~1e-15


def hyper(option: str, **changed) -> dict:
    """The optimizer's arguments as its yaml gives them (lr and the bookkeeping keys dropped)."""
    node = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "optim" / f"{option}.yaml"))
    for key in ("_target_", "lr", "lr_scale", "decay_matrices_only"):
        node.pop(key)
    return {**node, **changed}


SPAM_HP = hyper("spam", weight_decay=0.1)
STABLE_HP = hyper("stableadamw", weight_decay=0.1)


def lr_at(step: int) -> float:
    """A cosine-shaped lr, written into every group before each step as training.Run.set_lr does."""
    return 0.01 * (0.55 + 0.45 * math.cos(math.pi * step / STEPS))


class Problem:
    """A noisy quadratic per tensor, g = a (p - target) + noise, with spikes of 300 x the scale on 40 % of one
    tensor's entries at the steps of SPIKES; gradients of the third tensor scaled by 1e-4."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.init = [rng.normal(size=s) for s in SHAPES]
        self.curvature = [rng.uniform(0.5, 2.0, size=s) for s in SHAPES]
        self.target = [rng.normal(size=s) for s in SHAPES]
        self.noise = [[0.1 * rng.normal(size=s) for s in SHAPES] for _ in range(STEPS)]
        for step, i in SPIKES.items():
            hit = rng.random(SHAPES[i]) < 0.4
            self.noise[step - 1][i] += hit * 300 * np.sign(rng.normal(size=SHAPES[i]))

    def grads(self, params, step: int) -> list[np.ndarray]:
        return [scale * (a * (np.asarray(p) - t) + noise) for p, a, t, noise, scale in
                zip(params, self.curvature, self.target, self.noise[step - 1], SCALES)]


PROBLEM = Problem()


def zeros() -> list[np.ndarray]:
    return [np.zeros(s) for s in SHAPES]


def spam_reference(betas, eps, weight_decay, spike_threshold, reset_interval, warmup_steps, spike_clip_delay,
                   mutant=None):
    """SPAM as its reference computes it, entry by entry in numpy: the parameters after each step, and per step
    (moments reset, share of entries clipped)."""
    b1, b2 = betas
    params, m, v, trajectory, reports = [p.copy() for p in PROBLEM.init], zeros(), zeros(), [], []
    for n in range(1, STEPS + 1):
        lr, grads = lr_at(n), PROBLEM.grads(params, n)
        since_reset = n % reset_interval
        reset = since_reset == 0
        if reset:
            m, v = zeros(), zeros()
        clipping = n >= spike_clip_delay and (since_reset >= spike_clip_delay or mutant == "clips right after a reset")
        if n < reset_interval or since_reset >= warmup_steps or mutant == "no ramp":
            ramp = 1.0
        else:
            ramp = 0.01 + 0.99 * (1 - math.cos(math.pi * since_reset / (warmup_steps + 1))) / 2
        k = since_reset + 1 if mutant == "bias correction restarts at a reset" and n >= reset_interval else n
        clipped = 0
        for i, g in enumerate(grads):
            if clipping:
                against = b2 * v[i] + (1 - b2) * g**2 if mutant == "v of this step" else v[i]
                spike = g**2 > spike_threshold * against
                g = np.where(spike, np.sign(g) * np.sqrt(spike_threshold * against), g)
                clipped += spike.sum()
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
            m_hat, v_hat = m[i] / (1 - b1**k), v[i] / (1 - b2**k)
            decay = weight_decay if DECAYED[i] else 0.0
            if mutant == "decay before the update":
                params[i] = params[i] - lr * decay * params[i]
            params[i] = params[i] - lr * ramp * m_hat / (np.sqrt(v_hat) + eps / math.sqrt(1 - b2**k))
            if mutant != "decay before the update":
                params[i] = params[i] - lr * decay * params[i]
        trajectory.append(np.concatenate([p.ravel() for p in params]))
        reports.append((float(reset), clipped / sum(g.size for g in grads)))
    return np.array(trajectory), np.array(reports)


def stableadamw_reference(betas, eps, weight_decay, mutant=None):
    """StableAdamW with Adam's usual bias correction (optimi folds it into its betas), in numpy: the parameters after
    each step, and per step (largest RMS, share of tensors with RMS > 1)."""
    b1, b2 = betas
    params, m, v, trajectory, reports = [p.copy() for p in PROBLEM.init], zeros(), zeros(), [], []
    for t in range(1, STEPS + 1):
        lr, grads = lr_at(t), PROBLEM.grads(params, t)
        corrected = 1.0 if mutant == "no bias correction" else 1 - b2**t
        v_before = [x / max(1 - b2 ** (t - 1), 1e-300) for x in v]  # v-hat of the previous step (0 at t = 1)
        for i, g in enumerate(grads):
            m[i] = b1 * m[i] + (1 - b1) * g
            v[i] = b2 * v[i] + (1 - b2) * g**2
        m_hat = [x / (1.0 if mutant == "no bias correction" else 1 - b1**t) for x in m]
        v_hat = [x / corrected for x in v]
        in_rms = v_before if mutant == "v before this step's update" else v_hat
        floor = eps if mutant == "eps not squared" else eps**2
        ratios = [g**2 / np.maximum(x, floor) for g, x in zip(grads, in_rms)]
        if mutant == "one RMS over the whole model":
            rms = [math.sqrt(np.concatenate([r.ravel() for r in ratios]).mean())] * len(grads)
        else:
            rms = [math.sqrt(r.mean()) for r in ratios]
        for i in range(len(params)):
            lr_i = lr / max(1.0, rms[i])
            decay = weight_decay if DECAYED[i] else 0.0
            params[i] = params[i] * (1 - (lr if mutant == "decay at the unclipped lr" else lr_i) * decay)
            params[i] = params[i] - lr_i * m_hat[i] / (np.sqrt(v_hat[i]) + eps)
        trajectory.append(np.concatenate([p.ravel() for p in params]))
        reports.append((max(rms), sum(r > 1 for r in rms) / len(rms)))
    return np.array(trajectory), np.array(reports)


def implementation(make, steps: int = STEPS, resume_at: int | None = None):
    """The optimizer ``make(groups)`` on PROBLEM in float64 torch: parameters after each step and diagnostics(). With
    ``resume_at``, its state dict goes through torch.save / torch.load(weights_only) into a new optimizer there."""
    params = [torch.tensor(p, requires_grad=True) for p in PROBLEM.init]

    def groups(params):
        return [{"params": [p for p, d in zip(params, DECAYED) if d]},
                {"params": [p for p, d in zip(params, DECAYED) if not d], "weight_decay": 0.0}]

    optimizer = make(groups(params))
    trajectory, reports = [], []
    for n in range(1, steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(n)
        for p, g in zip(params, PROBLEM.grads([p.detach().numpy() for p in params], n)):
            p.grad = torch.from_numpy(g)
        optimizer.step()
        trajectory.append(np.concatenate([p.detach().numpy().ravel() for p in params]))
        reports.append(tuple(optimizer.diagnostics().values()))
        if n == resume_at:
            saved = io.BytesIO()
            torch.save(optimizer.state_dict(), saved)
            params = [p.detach().clone().requires_grad_() for p in params]
            optimizer = make(groups(params))
            optimizer.load_state_dict(torch.load(io.BytesIO(saved.getvalue()), weights_only=True))
    return np.array(trajectory), np.array(reports)


def make_spam(groups):
    return SPAM(groups, lr=lr_at(1), **SPAM_HP)


def make_stableadamw(groups):
    return StableAdamW(groups, lr=lr_at(1), **STABLE_HP)


@pytest.fixture(scope="module")
def spam_run():
    return implementation(make_spam)


@pytest.fixture(scope="module")
def stableadamw_run():
    return implementation(make_stableadamw)


def test_spam_equals_its_reference_step_by_step(spam_run):
    ours, our_reports = spam_run
    theirs, reports = spam_reference(**SPAM_HP)
    np.testing.assert_allclose(ours, theirs, **TOLERANCE)
    np.testing.assert_array_equal(our_reports, reports)
    resets, shares = reports[:, 0], reports[:, 1]
    assert np.flatnonzero(resets).tolist() == [499]  # step 500
    assert all(shares[step - 1] > 0 for step in SPIKES if step not in UNCLIPPED_SPIKES)
    assert all(shares[step - 1] == 0 for step in UNCLIPPED_SPIKES)


@pytest.mark.parametrize("mutant", ["no ramp", "v of this step", "clips right after a reset",
                                    "bias correction restarts at a reset", "decay before the update"])
def test_spam_reference_mutants_are_caught(spam_run, mutant):
    wrong, _ = spam_reference(**SPAM_HP, mutant=mutant)
    assert np.abs(spam_run[0] - wrong).max() > 1e-6  # a million times what the right reference is allowed


def test_stableadamw_equals_its_reference_step_by_step(stableadamw_run):
    ours, our_reports = stableadamw_run
    theirs, reports = stableadamw_reference(**STABLE_HP)
    np.testing.assert_allclose(ours, theirs, **TOLERANCE)
    np.testing.assert_allclose(our_reports, reports, rtol=1e-9)
    largest, share = reports[:, 0], reports[:, 1]
    assert all(largest[step - 1] > 2 and share[step - 1] > 0 for step in SPIKES)
    assert np.mean(share > 0) < 0.5  # not on most steps


@pytest.mark.parametrize("mutant", ["v before this step's update", "eps not squared", "one RMS over the whole model",
                                    "decay at the unclipped lr", "no bias correction"])
def test_stableadamw_reference_mutants_are_caught(stableadamw_run, mutant):
    wrong, _ = stableadamw_reference(**STABLE_HP, mutant=mutant)
    assert np.abs(stableadamw_run[0] - wrong).max() > 1e-6


@pytest.mark.parametrize("make, resume_at", [(make_spam, 505), (make_stableadamw, 300)])
def test_a_resumed_optimizer_continues_identically(make, resume_at):
    """SPAM resumed inside its ramp and its no-clipping window after the reset at 500."""
    steps = resume_at + 60
    whole, whole_reports = implementation(make, steps)
    resumed, resumed_reports = implementation(make, steps, resume_at=resume_at)
    assert np.array_equal(whole, resumed) and np.array_equal(whole_reports, resumed_reports)


@pytest.mark.parametrize("option", ["spam", "stableadamw"])
def test_weight_decay_reaches_the_weight_matrices_alone(make_cfg, option):
    """With no gradient signal (all zero), a step is weight decay alone: p (1 - lr x weight_decay) on the decay
    group built by decay_matrices_only, nothing on the rest."""
    cfg = make_cfg("model=gpt", "task.batch_size=4", "task.bptt=16", f"optim={option}", "optim.weight_decay=0.1")
    _, net = build(cfg)
    optimizer = build_optimizer(cfg.optim, net)
    decay, rest = optimizer.param_groups
    before = {p: p.detach().clone() for p in net.parameters()}
    for p in net.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    assert all(torch.allclose(p, before[p] * (1 - 0.001 * 0.1), rtol=3e-7, atol=0) and not torch.equal(p, before[p])
               for p in decay["params"])
    assert all(torch.equal(p, before[p]) for p in rest["params"]) and len(rest["params"]) > 0


def test_a_skipped_step_reports_nan_not_the_last_steps_values():
    optimizer = make_spam([{"params": [torch.zeros(3, requires_grad=True)]}])
    optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
    optimizer.step()
    assert optimizer.diagnostics() == {"moments_reset": 0.0, "spike_clipped_share": 0.0}
    assert all(math.isnan(x) for x in optimizer.diagnostics().values())


SPAM_E2E = ["optim=spam", "optim.reset_interval=10", "optim.warmup_steps=5", "optim.spike_clip_delay=3"]


@pytest.mark.parametrize("optim", [SPAM_E2E, ["optim=stableadamw"]], ids=["spam", "stableadamw"])
@pytest.mark.parametrize("setup", [["task=adding", "model=rnn", "task.seq_len=20"],
                                   ["model=gpt", "task.batch_size=4", "task.bptt=16"]], ids=["adding_rnn", "gpt"])
def test_run_py_trains_with_it_and_records_its_diagnostics(tmp_path, optim, setup):
    """optim=spam resets its moments every 10 steps here (then a 5-step ramp, no clipping for 3 steps)."""
    result = run_cli(*optim, *setup, "schedule=cosine", "schedule.warmup_iters=3", "steps=24", "eval_every=12",
                     "optim.lr=0.003", "logger=none", "report=false", f"hydra.run.dir={tmp_path / 'run'}",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv").iloc[1:]
    assert len(rows) == 24 and rows.loss.notna().all()
    assert rows.lr.iloc[0] == pytest.approx(0.003 / 4) and rows.lr.iloc[-1] < 0.003 / 2  # the cosine schedule
    if optim == SPAM_E2E:
        assert rows.moments_reset.tolist() == [float(step in (10, 20)) for step in range(1, 25)]
        assert rows.spike_clipped_share.between(0, 1).all()
    else:
        assert (rows.update_rms > 0).all() and rows.update_clipped_share.between(0, 1).all()
