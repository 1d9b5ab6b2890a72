"""The stateless clipping methods (none, norm, value, per_tensor) against torch's own functions."""

import math

import pytest
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from gradclip.clipping import method_class


def clip_gradients(params, method, threshold):
    settings = {} if method == "none" else {"threshold": threshold}
    return method_class(method)(name=method, **settings)(params)


def params_with_grads(*grads):
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return params


def flat(params):
    return torch.cat([p.grad.flatten() for p in params])


@pytest.fixture
def raw():
    torch.manual_seed(0)
    return [torch.randn(5, 3) * 4, torch.randn(7) * 0.01, torch.randn(2, 2) * 2]


def test_norm_matches_torch_and_keeps_direction(raw):
    ours, ref = params_with_grads(*raw), params_with_grads(*raw)
    stats = clip_gradients(ours, "norm", 1.0)
    ref_norm = clip_grad_norm_(ref, 1.0)
    assert stats.pre_norm == pytest.approx(float(ref_norm))
    assert torch.allclose(flat(ours), flat(ref))
    assert stats.fired and stats.post_norm == pytest.approx(1.0, rel=1e-5)
    assert float(flat(ours).norm()) == pytest.approx(stats.post_norm, rel=1e-6)
    cosine = torch.nn.functional.cosine_similarity(flat(ours), torch.cat([g.flatten() for g in raw]), dim=0)
    assert float(cosine) == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("threshold, fires", [(lambda n: n / 2, True), (lambda n: n * (1 - 1e-6), True),
                                              (lambda n: n * 2, False)])
def test_norm_is_clip_grad_norm_bit_for_bit(raw, threshold, fires):
    """Above the threshold the gradients are clip_grad_norm_'s, bit for bit; below it nothing is multiplied."""
    small = [g * 1e-4 for g in raw]  # norm ~1e-3: float32 resolves the 1e-6 that clip_grad_norm_ adds
    norm = float(clip_grad_norm_(params_with_grads(*small), math.inf))
    ours, ref = params_with_grads(*small), params_with_grads(*small)
    stats = clip_gradients(ours, "norm", threshold(norm))
    assert stats.pre_norm == float(clip_grad_norm_(ref, threshold(norm), foreach=True))
    assert torch.equal(flat(ours), flat(ref))
    assert stats.fired == fires and torch.equal(flat(ours), flat(params_with_grads(*small))) != fires


@pytest.mark.parametrize("method", ["norm", "per_tensor"])
@pytest.mark.parametrize("above", [0.0, 5e-7])
def test_a_norm_at_or_just_below_the_threshold_is_not_clipped(raw, method, above):
    """Clipping is ||g|| > threshold, strictly, as in Caffe's Solver; clip_grad_norm_ scales by c / (c + 1e-6) there."""
    small = [g * 1e-4 for g in raw]
    norm = float(clip_gradients(params_with_grads(*small), "none", None).pre_norm)
    largest = max(float(g.norm()) for g in small)  # per_tensor: the largest tensor's norm at the threshold
    params = params_with_grads(*small)
    stats = clip_gradients(params, method, (norm if method == "norm" else largest) + above)
    assert not stats.fired and torch.equal(flat(params), flat(params_with_grads(*small)))
    assert stats.post_norm == stats.pre_norm
    clip_grad_norm_(ref := params_with_grads(*small), norm + above)
    assert method == "per_tensor" or not torch.equal(flat(ref), flat(params))  # where torch would have scaled


@pytest.mark.parametrize("method", ["none", "norm", "value", "per_tensor", "random", "autoclip", "agc", "zclip"])
def test_every_method_takes_a_model_without_gradients(method):
    """No gradient at all (a frozen model, or a step before any backward): nothing to clip, norm 0."""
    settings = {"none": {}, "autoclip": {"percentile": 10.0, "warmup": 1}, "agc": {"clip_factor": 0.01, "eps": 1e-3},
                "zclip": {"alpha": 0.97, "z_thresh": 2.5, "warmup": 1, "max_grad_norm": 1.0,
                          "clip_factor": 1.0}}.get(method, {"threshold": 1.0})
    clipper = method_class(method)(name=method, **settings)
    clipper.prepare(seed=0, exclude=set())
    stats = clipper([torch.nn.Parameter(torch.ones(3)), torch.nn.Parameter(torch.ones(2, 2))], measure=True)
    assert (stats.pre_norm, stats.post_norm, stats.fired) == (0.0, 0.0, False)


def test_norm_closed_form_below_threshold_does_nothing(raw):
    params = params_with_grads(*raw)
    norm = float(torch.cat([g.flatten() for g in raw]).norm())
    stats = clip_gradients(params, "norm", norm * 2)
    assert not stats.fired and stats.scale == pytest.approx(1.0)
    assert torch.equal(flat(params), torch.cat([g.flatten() for g in raw]))


def test_value_is_elementwise_and_changes_direction(raw):
    ours, ref = params_with_grads(*raw), params_with_grads(*raw)
    stats = clip_gradients(ours, "value", 0.5)
    clip_grad_value_(ref, 0.5)
    assert torch.equal(flat(ours), flat(ref))
    assert torch.equal(flat(ours), torch.cat([g.flatten() for g in raw]).clamp(-0.5, 0.5))
    cosine = torch.nn.functional.cosine_similarity(flat(ours), torch.cat([g.flatten() for g in raw]), dim=0)
    assert stats.fired and float(cosine) < 0.99


def test_per_tensor_differs_from_global(raw):
    per_tensor, global_ = params_with_grads(*raw), params_with_grads(*raw)
    stats = clip_gradients(per_tensor, "per_tensor", 1.0)
    clip_gradients(global_, "norm", 1.0)
    for p, g in zip(per_tensor, raw):  # each tensor on its own: min(||g||, 1)
        assert float(p.grad.norm()) == pytest.approx(min(float(g.norm()), 1.0), rel=1e-5)
    assert torch.equal(per_tensor[1].grad, raw[1])  # the small tensor is untouched by per-tensor clipping ...
    assert not torch.allclose(global_[1].grad, raw[1])  # ... but shrunk by the global norm
    assert stats.post_norm == pytest.approx(float(flat(per_tensor).norm()), rel=1e-5)


def test_none_reports_norm_and_changes_nothing(raw):
    params = params_with_grads(*raw)
    stats = clip_gradients(params, "none", None)
    assert stats.pre_norm == pytest.approx(float(torch.cat([g.flatten() for g in raw]).norm()))
    assert not stats.fired and torch.equal(flat(params), torch.cat([g.flatten() for g in raw]))


@pytest.mark.parametrize("method,threshold", [("none", None), ("norm", 1.0), ("value", 1.0), ("per_tensor", 1.0)])
@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_nonfinite_gradient_is_reported(method, threshold, bad):
    grads = [torch.ones(3), torch.tensor([1.0, bad])]
    stats = clip_gradients(params_with_grads(*grads), method, threshold)
    assert not math.isfinite(stats.pre_norm)
