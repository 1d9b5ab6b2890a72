"""The fused clipping (one norm, one multiplication) against torch's functions and the implementation it replaced,
bit for bit, step by step on real models: results computed before it stay valid."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

from gradclip.clipping import EPS, ClipStats, clip_factor, method_class, rounding
from gradclip.clipping.norm import Norm
from gradclip.config import parts

from conftest import build, train_one


# The implementation before the fused one (commit 424d258), verbatim: the numbers of every committed result.
def previous_norm(params, threshold):
    return previous_scaling(params, get_total_norm([p.grad for p in params], foreach=True), threshold)


def previous_scaling(params, norm, threshold):
    if norm > threshold:
        clip_grads_with_norm_(params, threshold, norm, foreach=True)
        post = norm * torch.clamp(threshold / (norm + EPS), max=1.0)
        return ClipStats(float(norm), float(post), bool(post < norm))
    return ClipStats(float(norm), float(norm), False)


def previous_none(params, threshold):
    norm = float(get_total_norm([p.grad for p in params]))
    return ClipStats(norm, norm, False)


def previous_value(params, threshold):
    before = float(get_total_norm([p.grad for p in params]))
    clip_grad_value_(params, threshold, foreach=True)
    after = float(get_total_norm([p.grad for p in params]))
    return ClipStats(before, after, after < before)


def previous_per_tensor(params, threshold):
    norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
    above = norms > threshold
    for p, n, clipped in zip(params, norms, above):
        if clipped:
            clip_grads_with_norm_([p], threshold, n, foreach=True)
    post = torch.where(above, norms * torch.clamp(threshold / (norms + EPS), max=1.0), norms)
    pre, post = torch.linalg.vector_norm(norms), torch.linalg.vector_norm(post)
    return ClipStats(float(pre), float(post), bool(above.any()))


PREVIOUS = {"none": previous_none, "norm": previous_norm, "value": previous_value, "per_tensor": previous_per_tensor}


def torch_reference(method, params, threshold):
    """What torch.nn.utils does for the method: clip_grad_norm_ (globally, or per tensor above the threshold)."""
    if method == "norm":
        clip_grad_norm_(params, threshold)
    elif method == "value":
        clip_grad_value_(params, threshold)
    elif method == "per_tensor":
        for p in params:
            if float(torch.linalg.vector_norm(p.grad)) > threshold:
                clip_grad_norm_([p], threshold)


# Plausible wrong variants of the fused norm clip: each must be caught by the step-by-step comparison.
def flat_buffer_norm(params, threshold):
    """One flat gradient buffer: one norm over its elements (another summation order), the same scaling."""
    return previous_scaling(params, torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params])), threshold)


def float64_factor(params, threshold):
    """The same norm, the factor threshold / (norm + EPS) in float64 (not in the gradients' dtype)."""
    norm = float(get_total_norm([p.grad for p in params], foreach=True))
    if norm <= threshold:
        return ClipStats(norm, norm, False)
    factor = min(threshold / (norm + EPS), 1.0)
    for p in params:
        p.grad.mul_(factor)
    return ClipStats(norm, norm * factor, norm * factor < norm)


def copy_with(params, grads):
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for c, g in zip(copies, grads):
        c.grad = g.clone()
    return copies


def bits(params) -> bytes:
    return b"".join(p.grad.detach().numpy().tobytes() for p in params)


def same_stats(a: ClipStats, b: ClipStats) -> bool:
    pairs = [(a.pre_norm, b.pre_norm), (a.post_norm, b.post_norm)]
    return a.fired == b.fired and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in pairs)


def train_and_compare(cfg, method, candidates, steps):
    """Train ``steps`` steps of ``cfg`` with the previous implementation's clipped gradients, the threshold at each
    step crossed about half of the time (``next_threshold``); at each step clip copies of the raw gradient
    with every candidate. Returns, per candidate, the steps where its gradients or stats differ from the previous
    implementation's or its gradients from torch's, and the number of steps that clipped."""
    torch.manual_seed(cfg.seed)
    task, model = build(cfg)
    objective = parts(cfg).model.loss
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=cfg.optim.lr * cfg.optim.lr_scale)
    batches = torch.Generator().manual_seed(cfg.seed)
    misses, fired, threshold = {name: [] for name in candidates}, 0, 1.0
    for step in range(steps):
        x, y = task.batch(batches)
        optimizer.zero_grad(set_to_none=True)
        objective(task, model(x), y).backward()
        raw = [p.grad.detach().clone() for p in params]
        previous = copy_with(params, raw)
        expected = PREVIOUS[method](previous, threshold)
        by_torch = copy_with(params, raw)
        torch_reference(method, by_torch, threshold)
        fired += expected.fired
        for name, candidate in candidates.items():
            ours = copy_with(params, raw)
            stats = candidate(ours, threshold)
            if not (same_stats(stats, expected) and bits(ours) == bits(previous) == bits(by_torch)):
                misses[name].append(step)
        for p, g in zip(params, previous):
            p.grad = g.grad
        optimizer.step()
        threshold = next_threshold(method, raw, expected.pre_norm)
    return misses, fired


def next_threshold(method, raw, norm):
    """A threshold that the next step's gradient crosses about half the time: this step's norm, its median tensor's
    norm (per tensor), half its largest magnitude (value)."""
    if method == "per_tensor":
        return float(np.median([float(g.norm()) for g in raw]))
    return 0.5 * max(float(g.abs().max()) for g in raw) if method == "value" else norm


def suite_clipper(method):
    def clip(params, threshold):
        return method_class(method)(name=method, **({} if method == "none" else {"threshold": threshold}))(params)
    return clip


@pytest.mark.parametrize("setup, steps", [("digits_deep_mlp", 30), ("regression_mlp", 40), ("charlm_gpt", 12),
                                          ("adding_rnn", 20), ("cliff", 40)])
def test_norm_clip_is_the_previous_and_torchs_bit_for_bit_and_mutants_are_caught(make_cfg, setup, steps):
    """Every step: the same gradient bits as clip_grad_norm_ and as the implementation it replaced, the same pre- and
    post-clip norms and fired flag; a flat buffer and a float64 factor are caught (charlm_gpt: 15 tensors, AdamW's
    model; cliff: float64 parameters)."""
    cfg = make_cfg(f"setup={setup}", "optim.lr_scale=0.1")
    candidates = {"suite": suite_clipper("norm"), "flat buffer": flat_buffer_norm, "float64 factor": float64_factor}
    misses, fired = train_and_compare(cfg, "norm", candidates, steps)
    assert 0 < fired < steps, "both paths (clipped and not) must be compared"
    assert misses["suite"] == []
    assert misses["flat buffer"] or setup == "cliff"  # two scalar parameters: a flat buffer sums them the same way
    assert misses["float64 factor"]


@pytest.mark.parametrize("method", ["none", "value", "per_tensor"])
@pytest.mark.parametrize("setup", ["digits_deep_mlp", "cliff"])
def test_the_other_stateless_methods_are_the_previous_bit_for_bit(make_cfg, method, setup):
    misses, fired = train_and_compare(make_cfg(f"setup={setup}", "optim.lr_scale=0.1"), method,
                                      {"suite": suite_clipper(method)}, 20)
    assert misses["suite"] == [] and (method == "none" or 0 < fired)


def torch_factor(norms: torch.Tensor, threshold: float) -> torch.Tensor:
    """clip_grads_with_norm_'s factor, written as it writes it (element-wise over many norms)."""
    return torch.clamp(threshold / (norms + 1e-6), max=1.0)


def one_rounding(norm, threshold, rnd):
    return rnd(min(threshold / (norm + EPS), 1.0))


def true_division(norm, threshold, rnd):
    return min(rnd(rnd(threshold) / rnd(norm + rnd(EPS))), 1.0)


def no_eps(norm, threshold, rnd):
    return min(rnd(rnd(1 / norm) * rnd(threshold)), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("factor, right", [(clip_factor, True), (one_rounding, False), (true_division, False),
                                           (no_eps, False)])
def test_clip_factor_rounds_as_torchs_tensor_arithmetic(dtype, factor, right):
    """The factor computed in Python equals the tensor one bit for bit on norms of every magnitude, near the threshold
    included; its plausible wrong variants do not."""
    generator, rnd, agree = np.random.default_rng(0), rounding(dtype), []
    for threshold in [1.0, 0.1, 0.25, 3.7, 165.0, 1e-3, float(generator.uniform(0, 10))]:
        norms = torch.tensor(np.concatenate([10 ** generator.uniform(-4, 6, 3000),
                                             threshold * (1 + generator.uniform(-1e-5, 1e-5, 300))]), dtype=dtype)
        expected = torch_factor(norms, threshold).tolist()
        agree.append([factor(n, threshold, rnd) for n in norms.tolist()] == expected)
    assert all(agree) == right


def test_end_to_end_metrics_are_the_previous_byte_for_byte(make_cfg, tmp_path, monkeypatch):
    """A run composed as the CLI composes it writes the same metrics.csv (losses, norms before and after clipping,
    scales, cosines on diagnostic steps) with the fused clip as with the implementation it replaced."""
    overrides = ("setup=digits_deep_mlp", "clip=norm1", "steps=40", "eval_every=20", "checkpoint_every=0")
    train_one(make_cfg(*overrides), tmp_path / "fused")
    monkeypatch.setattr(Norm, "clip", lambda self, params: previous_norm(params, self.threshold))
    train_one(make_cfg(*overrides), tmp_path / "previous")
    fused, previous = ((tmp_path / side / "metrics.csv").read_text() for side in ("fused", "previous"))
    rows = pd.read_csv(tmp_path / "fused" / "metrics.csv")
    assert fused == previous and 0 < rows.clipped.sum() and rows.cosine.notna().sum() == 4
