"""Gradient clipping methods. A ``Clipper`` clips the gradients in place and returns what it did.

The global norm before clipping comes out of the clip itself (no extra pass for ``norm``), so logging it is free.
Stateful methods (AutoClip's norm history, ZClip's running mean and variance, the random direction's generator)
keep their state in the Clipper, one per run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch.nn.utils import clip_grad_value_, clip_grads_with_norm_, get_total_norm

EPS = 1e-6  # the same epsilon clip_grad_norm_ adds to the norm before dividing
GLOBAL_SCALING = {"none", "norm", "autoclip", "zclip"}  # methods that multiply every gradient by one factor


@dataclass(frozen=True)
class ClipStats:
    pre_norm: float  # global L2 norm of the raw gradients (inf / nan when they are not finite)
    post_norm: float  # global L2 norm of the gradients that reach the optimizer
    fired: bool  # whether clipping changed anything
    cosine: float = math.nan  # cos(applied gradient, raw gradient), when measured

    @property
    def scale(self) -> float:
        """post_norm / pre_norm: 1 when nothing was clipped."""
        return self.post_norm / self.pre_norm if self.pre_norm > 0 else 1.0


def _coefficient(norm: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.clamp(threshold / (norm + EPS), max=1.0)


def clip_gradients(parameters, method: str, threshold: float | None) -> ClipStats:
    """Clip the gradients of ``parameters`` in place with a stateless ``method`` (none | norm | value | per_tensor)."""
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params]
    if method == "none":
        norm = float(get_total_norm(grads))
        return ClipStats(norm, norm, False)
    if method == "norm":  # Pascanu's Algorithm 1: g <- threshold * g / ||g|| when ||g|| > threshold
        norm = get_total_norm(grads, foreach=True)  # clip_grad_norm_, minus its multiplication by 1 when not clipping
        coefficient = _coefficient(norm, threshold)
        if coefficient < 1:
            clip_grads_with_norm_(params, threshold, norm, foreach=True)
        post = norm * coefficient
        return ClipStats(float(norm), float(post), bool(post < norm))
    if method == "value":  # element-wise, to [-threshold, threshold]
        before = float(get_total_norm(grads))
        clip_grad_value_(params, threshold, foreach=True)
        after = float(get_total_norm(grads))
        return ClipStats(before, after, after < before)
    if method == "per_tensor":  # each tensor to its own norm threshold: not the same as one global norm
        norms = torch.stack([torch.linalg.vector_norm(g) for g in grads])
        for p, n in zip(params, norms):
            clip_grads_with_norm_([p], threshold, n, foreach=True)
        clipped = norms * _coefficient(norms, threshold)
        pre, post = torch.linalg.vector_norm(norms), torch.linalg.vector_norm(clipped)
        return ClipStats(float(pre), float(post), bool((clipped < norms).any()))
    raise ValueError(f"unknown clip method {method!r}")


def _unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """Norm of each output unit (row) of a weight; a vector or scalar counts as one unit (as in timm's AGC)."""
    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


def _cosine(raw: list[torch.Tensor], new: list[torch.Tensor]) -> float:
    dot = sum(float((r * n).sum()) for r, n in zip(raw, new))
    denominator = float(get_total_norm(raw)) * float(get_total_norm(new))
    return dot / denominator if denominator > 0 else math.nan


class Clipper:
    """One run's clipping, as ``clip`` config says; ``exclude`` = parameters AGC never clips (the output layer)."""

    def __init__(self, cfg, seed: int = 0, exclude: set[int] | None = None):
        self.cfg, self.method, self.threshold = cfg, cfg.method.value, cfg.threshold  # read once: used every step
        self.exclude = exclude or set()
        self.history: list[float] = []  # autoclip: every finite pre-clip norm so far; zclip: its warm-up norms
        self.mean = self.var = None  # zclip
        self.generator = torch.Generator().manual_seed(seed)  # random

    def state_dict(self) -> dict:
        """What a resumed run needs to clip exactly as an uninterrupted one (tensors and plain values only)."""
        return {"history": list(self.history), "mean": self.mean, "var": self.var,
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.mean, self.var = list(state["history"]), state["mean"], state["var"]
        self.generator.set_state(state["generator"])

    def __call__(self, parameters, measure: bool = False) -> ClipStats:
        """Clip in place; with ``measure``, also the cosine between the applied and the raw gradient."""
        params = [p for p in parameters if p.grad is not None]
        exact = self.method in GLOBAL_SCALING  # scaling by a positive number keeps the direction: cosine 1
        raw = [p.grad.detach().clone() for p in params] if measure and not exact else None
        stats = self._clip(params)
        if not measure or not math.isfinite(stats.pre_norm):
            return stats
        cosine = 1.0 if exact else _cosine(raw, [p.grad for p in params])
        return replace(stats, cosine=cosine)

    def _clip(self, params) -> ClipStats:
        cfg = self.cfg
        if self.method in ("none", "norm", "value", "per_tensor"):
            return clip_gradients(params, self.method, self.threshold)
        grads = [p.grad for p in params]
        norm = get_total_norm(grads)
        if not torch.isfinite(norm):
            return ClipStats(float(norm), float(norm), False)
        if self.method == "random":
            return self._random(grads, float(norm))
        if self.method == "agc":
            return self._agc(params, float(norm))
        threshold = self._adaptive_threshold(float(norm))
        if threshold is None or norm <= threshold:
            return ClipStats(float(norm), float(norm), False)
        clip_grads_with_norm_(params, threshold, norm, foreach=True)
        return ClipStats(float(norm), float(norm * _coefficient(norm, threshold)), True)

    def _random(self, grads, norm: float) -> ClipStats:
        """Above the threshold, replace the gradient with a uniformly random direction of norm threshold."""
        threshold = self.cfg.threshold
        if norm <= threshold:
            return ClipStats(norm, norm, False)
        directions = [torch.randn(g.shape, generator=self.generator, dtype=g.dtype).to(g.device) for g in grads]
        scale = threshold / float(get_total_norm(directions))
        for g, d in zip(grads, directions):
            g.copy_(d * scale)
        return ClipStats(norm, threshold, True)

    def _agc(self, params, norm: float) -> ClipStats:
        fired = False
        for p in params:
            if id(p) in self.exclude:
                continue
            max_norm = _unitwise_norm(p.detach()).clamp(min=self.cfg.agc_eps) * self.cfg.clip_factor
            grad_norm = _unitwise_norm(p.grad)
            too_large = grad_norm > max_norm
            if bool(too_large.any()):
                fired = True
                p.grad.copy_(torch.where(too_large, p.grad * (max_norm / grad_norm.clamp(min=EPS)), p.grad))
        post = float(get_total_norm([p.grad for p in params])) if fired else norm
        return ClipStats(norm, post, fired)

    def _adaptive_threshold(self, norm: float) -> float | None:
        """AutoClip: a percentile of all norms so far. ZClip: mean + z * std of an EMA, after a warm-up."""
        cfg = self.cfg
        if self.method == "autoclip":
            self.history.append(norm)
            if len(self.history) < cfg.warmup:
                return None
            return float(np.percentile(self.history, cfg.percentile))
        if self.mean is None:  # zclip warm-up: collect norms, then start the EMA from their mean and variance
            self.history.append(norm)
            if len(self.history) >= cfg.warmup:
                self.mean, self.var = float(np.mean(self.history)), float(np.var(self.history))
            return None
        std = math.sqrt(self.var)
        threshold = self.mean + cfg.z_thresh * std if std > 0 and (norm - self.mean) / std > cfg.z_thresh else None
        seen = min(norm, threshold) if threshold is not None else norm  # the EMA follows the clipped norm
        self.mean = cfg.alpha * self.mean + (1 - cfg.alpha) * seen
        self.var = cfg.alpha * self.var + (1 - cfg.alpha) * (seen - self.mean) ** 2
        return threshold
