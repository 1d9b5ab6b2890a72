"""optax's skip_large_updates around a torch optimizer, step by step against a reference written out here (torch's
optimizer on its own weights, deep copies put back in numpy's judgement), its mutants caught, a skipped step a true
no-op; and why it has little grip around Adam."""

import copy
import math

import numpy as np
import pytest
import torch

from gradclip.optimizers.skip_large_updates import SkipLargeUpdates

from test_remedies import SHAPES, gradient_stream

SGD = {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3}  # an update that grows with the gradient: spikes show
ADAMW = {"lr": 1e-2, "betas": (0.9, 0.99), "eps": 1e-8, "weight_decay": 0.1}


def start_weights():
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]


def reference_skip_large(stream, max_squared_norm, mutant=None):
    """torch's SGD stepped on its own weights; before each step the weights and state are deep-copied, and put back
    when the squared norm of the update, in numpy, is not below max_squared_norm (optax: not norm_sq < max)."""
    params = start_weights()
    opt = torch.optim.SGD(params, **SGD)
    skips, weights = [], []
    for grads in stream:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float32)
        saved = copy.deepcopy((params, opt.state_dict()))
        opt.step()
        moved = sum(float(np.sum((p.detach().numpy().astype(np.float64) - q.detach().numpy()) ** 2))
                    for p, q in zip(params, saved[0]))
        measured = {"gradient": sum(float(np.sum(g ** 2)) for g in grads), "not_squared": math.sqrt(moved)}.get(
            mutant, moved)
        skip = not measured < max_squared_norm
        if skip:
            with torch.no_grad():
                for p, q in zip(params, saved[0]):
                    p.copy_(q)
            if mutant != "state_advanced":
                opt.load_state_dict(saved[1])
        skips.append(skip)
        weights.append([p.detach().clone() for p in params])
    return skips, weights


def run_wrapped(stream, inner, settings, max_squared_norm):
    """The wrapper around ``inner`` stepped on the stream: its skips and the weights after each step."""
    params = start_weights()
    opt = SkipLargeUpdates(params, inner=inner, max_squared_norm=max_squared_norm, **settings)
    skips, weights = [], []
    for grads in stream:
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        skips.append(opt.diagnostics()["skipped_update"] == 1)
        weights.append([p.detach().clone() for p in params])
    return skips, weights


MAX_SQUARED_NORM = 0.2  # SGD's updates: below 0.2 squared but at the spikes


def test_skip_large_updates_follows_the_reference_step_by_step():
    stream = gradient_stream()
    expected_skips, expected_weights = reference_skip_large(stream, MAX_SQUARED_NORM)
    skips, weights = run_wrapped(stream, "torch.optim.SGD", SGD, MAX_SQUARED_NORM)
    assert skips == expected_skips and [t for t, skip in enumerate(skips) if skip] == [130, 131, 180, 240, 300]
    assert all(torch.equal(a, b) for wa, wb in zip(weights, expected_weights) for a, b in zip(wa, wb))


@pytest.mark.parametrize("mutant", ["gradient", "not_squared", "state_advanced"])
def test_skip_large_updates_mutants_are_caught(mutant):
    """The gradient's squared norm instead of the update's, the norm not squared, or the optimizer's momentum left
    advanced on a skipped step: each gives other skips or other weights than the code."""
    stream = gradient_stream()
    skips, weights = run_wrapped(stream, "torch.optim.SGD", SGD, MAX_SQUARED_NORM)
    other_skips, other_weights = reference_skip_large(stream, MAX_SQUARED_NORM, mutant=mutant)
    assert other_skips != skips or not all(torch.equal(a, b) for wa, wb in zip(weights, other_weights)
                                           for a, b in zip(wa, wb))


def optimizer_tensors(opt) -> list:
    return [v.clone() for state in opt.state_dict()["state"].values() for v in state.values()]


def test_a_skipped_update_is_a_true_noop():
    """Around AdamW: accepted steps are plain AdamW's, bit for bit; a skipped one leaves weights (weight decay
    included), moments and step counts bit for bit as they were; a skipped first step leaves no state at all."""
    stream = gradient_stream()
    params = start_weights()
    opt = SkipLargeUpdates(params, inner="torch.optim.AdamW", max_squared_norm=1.0, **ADAMW)
    plain_params = start_weights()
    plain = torch.optim.AdamW(plain_params, **ADAMW)
    for grads in stream[:130]:
        for p, q, g in zip(params, plain_params, grads):
            p.grad, q.grad = torch.tensor(g, dtype=torch.float32), torch.tensor(g, dtype=torch.float32)
        opt.step()
        plain.step()
        assert opt.diagnostics()["skipped_update"] == 0
    assert all(torch.equal(p, q) for p, q in zip(params, plain_params))
    before, state = [p.detach().clone() for p in params], optimizer_tensors(opt)
    opt.max_squared_norm = 1e-6
    for p, g in zip(params, stream[130]):
        p.grad = torch.tensor(g, dtype=torch.float32)
    opt.step()
    assert opt.diagnostics()["skipped_update"] == 1
    assert all(torch.equal(p, b) for p, b in zip(params, before))
    assert all(torch.equal(a, b) for a, b in zip(optimizer_tensors(opt), state)) and len(state) == 3 * len(SHAPES)
    assert {float(s["step"]) for s in opt.state.values()} == {130.0}
    first = SkipLargeUpdates(start_weights(), inner="torch.optim.AdamW", max_squared_norm=1e-6, **ADAMW)
    first.param_groups[0]["params"][0].grad = torch.ones(SHAPES[0])
    first.step()
    assert first.diagnostics()["skipped_update"] == 1 and not first.state


def test_adams_first_step_is_its_largest():
    """Why skip_large_updates on Adam's update can hardly catch a spike: Adam's first step moves every weight by lr
    (m / sqrt(v) = sign(g)), and a 30x spike later moves the spiking tensor by no more than ~lr per weight; a
    threshold that lets training start lets the spikes through."""
    stream = gradient_stream()
    params = start_weights()
    opt = torch.optim.AdamW(params, **{**ADAMW, "weight_decay": 0.0})
    squared = []
    for grads in stream:
        before = [p.detach().clone() for p in params]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g, dtype=torch.float32)
        opt.step()
        squared.append(sum(float(torch.sum((p.detach() - b) ** 2)) for p, b in zip(params, before)))
    n = sum(math.prod(s) for s in SHAPES)
    assert squared[0] == pytest.approx(1e-4 * n, rel=1e-3) and max(squared[1:]) < squared[0]
