"""The stateful clippers (random direction, AutoClip, AGC, ZClip), the cosine diagnostic and the smoothness probe."""

import math

import numpy as np
import pytest
import torch
from types import SimpleNamespace

from gradclip.clipping import ClipStats, method_class, total_norm
from gradclip.clipping.norm import Norm
from gradclip.config import parts
from gradclip.models.cliff import Cliff
from gradclip.training import local_smoothness

from conftest import ROOT

DEFAULTS = {"random": {"threshold": 1.0}, "value": {"threshold": 1.0}, "autoclip": {"percentile": 10.0, "warmup": 1},
            "agc": {"clip_factor": 0.01, "eps": 1e-3}, "zclip": {"alpha": 0.97, "z_thresh": 2.5, "warmup": 25, "max_grad_norm": 1.0, "clip_factor": 1.0}}


def Clipper(method, seed=0, exclude=frozenset(), **settings):
    """A method's clipper with ``settings`` over the defaults above, prepared for a run of ``seed``."""
    clipper = method_class(method)(name=method, **{**DEFAULTS[method], **settings})
    clipper.prepare(seed=seed, exclude=set(exclude))
    return clipper


def params_with(*grads, weights=None):
    params = [torch.nn.Parameter(torch.ones_like(g) if weights is None else w.clone())
              for g, w in zip(grads, weights or [None] * len(grads))]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    return params


def flat(params):
    return torch.cat([p.grad.flatten() for p in params])


def test_random_keeps_the_norm_limit_but_not_the_direction():
    raw = [torch.full((50,), 1.0)]
    params = params_with(*raw)
    stats = Clipper("random", threshold=0.5, seed=0)(params, measure=True)
    assert stats.fired and float(flat(params).norm()) == pytest.approx(0.5, rel=1e-6)
    assert abs(stats.cosine) < 0.5  # a random direction in 50 dimensions is nearly orthogonal
    small = params_with(torch.full((50,), 0.01))
    assert not Clipper("random", threshold=0.5)(small).fired


def test_random_direction_is_seeded():
    a, b = params_with(torch.ones(10)), params_with(torch.ones(10))
    Clipper("random", threshold=0.1, seed=3)(a)
    Clipper("random", threshold=0.1, seed=3)(b)
    assert torch.equal(flat(a), flat(b))


def test_autoclip_clips_at_the_percentile_of_the_history():
    clipper = Clipper("autoclip", percentile=50.0, warmup=1)
    for norm in [1.0, 2.0, 3.0, 4.0]:
        clipper(params_with(torch.tensor([norm])))
    params = params_with(torch.tensor([10.0]))
    stats = clipper(params, measure=True)
    expected = np.percentile([1, 2, 3, 4, 10], 50)  # the current norm is part of the history
    assert stats.fired and float(flat(params).norm()) == pytest.approx(expected, rel=1e-5)
    assert stats.cosine == pytest.approx(1.0, abs=1e-12)


def test_agc_is_unitwise_relative_to_the_weights_and_skips_excluded():
    weight = torch.tensor([[1.0, 0.0], [0.0, 10.0]])  # unit norms 1 and 10
    grad = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # unit gradient norms 1 and 1
    params = params_with(grad, weights=[weight])
    head = params_with(torch.full((3,), 100.0))
    stats = Clipper("agc", clip_factor=0.5, exclude={id(head[0])})(params + head)
    assert torch.allclose(params[0].grad, torch.tensor([[0.5, 0.0], [0.0, 1.0]]))  # only unit 0 exceeded 0.5 x 1
    assert torch.equal(head[0].grad, torch.full((3,), 100.0))
    assert stats.fired


def reference_zclip(norms, alpha, z_thresh, warmup, cap):
    """The clipped norm of each step, by the reference's formula (bluorion-com/ZClip zclip.py, zscore mode with
    adaptive scaling), written out in plain Python."""
    buffer, mean, var, out = [], None, None, []
    for norm in norms:
        if mean is None:
            buffer.append(norm)
            if len(buffer) >= warmup:
                mean = sum(buffer) / len(buffer)
                var = sum((x - mean) ** 2 for x in buffer) / len(buffer)
            out.append(min(norm, cap))
            continue
        std = var ** 0.5
        z = (norm - mean) / (std + 1e-6)
        clip_val = mean + (z_thresh * std) / (z / z_thresh) if z > z_thresh else None
        out.append(min(clip_val if clip_val is not None else norm, cap))
        seen = clip_val if clip_val is not None else norm
        mean = alpha * mean + (1 - alpha) * seen
        var = alpha * var + (1 - alpha) * (seen - mean) ** 2
    return out


@pytest.mark.parametrize("cap, spike", [(math.inf, 50.0), (1.1, 50.0), (1.1, 1.3)])
def test_zclip_follows_the_reference_formula_step_by_step(cap, spike):
    """Warm-up of 4 norms (clipped at the cap only), then spikes clipped to mean + z std / (z / z_thresh), every step
    capped, the EMA following the spike's threshold, not the cap (a spike of 1.3: threshold 1.27, above the cap 1.1).
    The spike of 50 worked by hand: mean 1, var 0.02, z = 49 / 0.1414 = 346.5, threshold 1.00163."""
    norms = [1.0, 1.2, 0.8, 1.0, spike, 1.05, 3.0, 0.9, 1.5, 40.0]
    clipper = Clipper("zclip", warmup=4, z_thresh=2.0, alpha=0.9, max_grad_norm=None if cap == math.inf else cap)
    expected = reference_zclip(norms, alpha=0.9, z_thresh=2.0, warmup=4, cap=cap)
    z = (spike - 1) / (math.sqrt(0.02) + 1e-6)
    assert expected[4] == pytest.approx(min(cap, 1 + 2.0 * math.sqrt(0.02) / (z / 2.0)), rel=1e-9)
    assert expected[1] == min(1.2, cap) and (spike != 50 or expected[4] == pytest.approx(1.00163, abs=1e-5))
    for norm, clipped in zip(norms, expected):
        params = params_with(torch.tensor([norm]))
        stats = clipper(params)
        assert float(flat(params).norm()) == pytest.approx(clipped, rel=1e-5), norm
        assert stats.fired == (clipped < norm)
    assert clipper.mean is not None and len(clipper.history) == 4


def test_cosine_is_measured_for_value_clipping():
    params = params_with(torch.tensor([3.0, 0.1]))
    stats = Clipper("value", threshold=0.5)(params, measure=True)
    expected = (3.0 * 0.5 + 0.1 * 0.1) / (math.hypot(3.0, 0.1) * math.hypot(0.5, 0.1))
    assert stats.cosine == pytest.approx(expected, rel=1e-6)
    assert math.isnan(Clipper("value", threshold=0.5)(params_with(torch.ones(2))).cosine)  # not measured


def real_gradients(make_cfg, *overrides):
    """A digits MLP's back-prop gradients on one batch (global norm 2.24) and the clipper ``overrides`` select."""
    torch.manual_seed(0)
    task, model, clipper, _ = parts(make_cfg("setup=digits_mlp", *overrides))
    task.setup(torch.device("cpu"))
    net = model.build(task)
    clipper.prepare(0, {id(p) for p in list(net.children())[-1].parameters()})
    x, y = task.batch(torch.Generator().manual_seed(0))
    task.loss(net(x), y).backward()
    return list(net.parameters()), clipper


def test_norm_clipping_measured_on_a_real_model(make_cfg):
    params, clipper = real_gradients(make_cfg, "clip=norm")
    stats = clipper(params, measure=True)
    assert stats.fired and stats.pre_norm > 2 * clipper.threshold
    assert abs(stats.cosine - 1) < 1e-6 and stats.post_norm == pytest.approx(clipper.threshold, abs=1e-5)
    assert stats.post_norm == float(total_norm(params))  # the norm of the gradients left, not a formula


def test_value_clipping_turns_a_real_gradient(make_cfg):
    params, clipper = real_gradients(make_cfg, "clip=value", "clip.threshold=0.05")
    stats = clipper(params, measure=True)
    assert stats.fired and stats.cosine < 0.99


@pytest.mark.parametrize("option", sorted(str(f.relative_to(ROOT / "conf/clip").with_suffix(""))
                                          for f in (ROOT / "conf/clip").rglob("*.yaml")))
def test_every_method_measures_its_cosine_and_post_norm(make_cfg, option):
    params, clipper = real_gradients(make_cfg, f"clip={option}")
    stats = clipper(params, measure=True)
    assert -1 <= stats.cosine <= 1 and stats.post_norm == float(total_norm(params))


def test_a_clip_that_misreports_is_caught_by_the_measurement():
    """A norm clip that says it scaled but also flipped a tensor: the measured cosine and norm tell."""
    class Lying(Norm):
        def clip(self, params):
            params[0].grad.neg_().mul_(2)
            return ClipStats(5.0, self.threshold, True)

    params = params_with(torch.ones(3), torch.ones(1))
    stats = Lying(name="lying", threshold=1.0)(params, measure=True)
    assert stats.cosine == pytest.approx(-5 / (2 * math.sqrt(13))) and stats.post_norm == pytest.approx(math.sqrt(13))
    assert Lying(name="lying", threshold=1.0)(params_with(torch.ones(3))).post_norm == 1.0  # unmeasured: its word


def test_local_smoothness_of_a_quadratic_is_its_curvature():
    """f(θ) = 0.5 * c * θ²: the gradient changes by c per unit of θ, whatever the step."""
    theta = torch.nn.Parameter(torch.tensor([2.0, -1.0]))

    class Quadratic(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.theta = theta

        def forward(self, x):
            return 0.5 * 3.0 * (self.theta ** 2).sum()

    def loss(out, y):
        return out

    model = Quadratic()
    before = [theta.detach().clone()]
    raw = [3.0 * theta.detach().clone()]
    with torch.no_grad():
        theta -= 0.1 * raw[0]
    after = theta.detach().clone()
    assert local_smoothness(model, loss, None, None, [theta], before, raw) == pytest.approx(3.0, rel=1e-6)
    assert torch.equal(theta.detach(), after)  # the probe puts the parameters back


def test_cliff_model_matches_the_recurrence():
    model = Cliff(w0=5.0, b0=-2.5).build(SimpleNamespace(length=50, x0=0.5))
    x = 0.5
    for _ in range(50):
        x = 5.0 * (1 / (1 + math.exp(-x))) - 2.5
    assert model().item() == pytest.approx(x, rel=1e-12)
    assert model.trace() == {"w": 5.0, "b": -2.5}
