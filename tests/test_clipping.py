import math

import pytest
import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_

from gradclip.clipping import clip_gradients


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


@pytest.mark.parametrize("threshold, fires", [(lambda n: n / 2, True), (lambda n: n + 5e-7, True),
                                              (lambda n: n * 2, False)])
def test_norm_is_clip_grad_norm_bit_for_bit(raw, threshold, fires):
    """Skipping the multiplication when nothing is clipped changes no bit, also just above the norm, where
    clip_grad_norm_'s threshold / (norm + 1e-6) is still below 1 and must be applied."""
    small = [g * 1e-4 for g in raw]  # norm ~1e-3: float32 resolves the 1e-6 that clip_grad_norm_ adds
    norm = float(clip_grad_norm_(params_with_grads(*small), math.inf))
    ours, ref = params_with_grads(*small), params_with_grads(*small)
    stats = clip_gradients(ours, "norm", threshold(norm))
    assert stats.pre_norm == float(clip_grad_norm_(ref, threshold(norm), foreach=True))
    assert torch.equal(flat(ours), flat(ref))
    assert stats.fired == fires and torch.equal(flat(ours), flat(params_with_grads(*small))) != fires


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
