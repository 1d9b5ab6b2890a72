"""Gradient clipping methods, one module each: ``conf/clip/<option>.yaml`` names its class with ``_target_``.

A method is a ``Clipper``: a dataclass of its settings whose ``clip(params)`` clips the gradients in place and says
what it did (``ClipStats``); the global norm before clipping comes out of the clip itself, so logging it is free.
A method that decides on the step's training loss too gets it from ``observe(loss)`` before the clip, and one that
decides the step must not update at all says so with ``ClipStats.skip``. On diagnostic steps (``measure=True``) the
post-clip norm and the cosine to the raw gradient are measured on the gradients the clip left, for every method; on
the other steps post_norm is the method's own account of it.
One object per run: stateful methods keep their state in it and save it with ``state_dict``. torch is imported
inside the methods, so checking a config does not load it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, replace

from gradclip.component import Component, component_name, label, rule

EPS = 1e-6  # the same epsilon clip_grad_norm_ adds to the norm before dividing


@dataclass(frozen=True)
class ClipStats:
    pre_norm: float  # global L2 norm of the raw gradients (inf / nan when they are not finite)
    post_norm: float  # global L2 norm of the gradients that reach the optimizer (measured when measure=True)
    fired: bool  # whether clipping changed anything
    cosine: float = math.nan  # cos(applied gradient, raw gradient), measured when measure=True
    skip: bool = False  # the optimizer must not step (a finite gradient the method rejects, e.g. a loss spike)

    @property
    def scale(self) -> float:
        """post_norm / pre_norm: 1 when nothing was clipped."""
        return self.post_norm / self.pre_norm if self.pre_norm > 0 else 1.0


def cosine(raw: list, new: list) -> float:
    """cos(new, raw) over all tensors, in float64 (so a pure rescaling gives 1 to ~1e-12); NaN for a zero gradient."""
    import torch

    a, b = (torch.cat([g.detach().flatten().double() for g in grads]) for grads in (raw, new))
    denominator = float(a.norm() * b.norm())
    return max(-1.0, min(1.0, float(a @ b) / denominator)) if denominator > 0 else math.nan


def scale_to(params: list, norm, threshold: float) -> ClipStats:
    """Scale every gradient by threshold / (norm + EPS), as ``clip_grad_norm_`` does once it clips."""
    import torch
    from torch.nn.utils import clip_grads_with_norm_

    clip_grads_with_norm_(params, threshold, norm, foreach=True)
    post = norm * torch.clamp(threshold / (norm + EPS), max=1.0)
    return ClipStats(float(norm), float(post), bool(post < norm))


def total_norm(params: list):
    """The global L2 norm of the gradients, as a tensor (``get_total_norm`` without foreach)."""
    from torch.nn.utils import get_total_norm

    return get_total_norm([p.grad for p in params])


@dataclass
class Clipper(Component):
    """Base of the clipping methods. ``name`` labels the arm in reports (norm1); ``method`` is the module's name."""

    name: str = rule(label, "a non-empty printable label")

    @property
    def method(self) -> str:
        return component_name(type(self))

    def prepare(self, seed: int, exclude: set[int]) -> None:
        """Per-run state: ``seed`` is the run's, ``exclude`` the ids of parameters never clipped (the output layer)."""

    def state_dict(self) -> dict:
        """What a resumed run needs to clip exactly as an uninterrupted one (tensors and plain values only)."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def observe(self, loss: float) -> None:
        """The step's training loss, given before ``clip``: methods that decide on it keep it."""

    def clip(self, params: list) -> ClipStats:
        """Clip the gradients of ``params`` (all have one) in place."""
        raise NotImplementedError

    def __call__(self, parameters, measure: bool = False) -> ClipStats:
        """Clip in place; with ``measure``, the post-clip norm and the cosine to the raw gradient are measured."""
        params = [p for p in parameters if p.grad is not None]
        if not params:
            return ClipStats(0.0, 0.0, False)
        raw = [p.grad.detach().clone() for p in params] if measure else None  # only on diagnostic steps
        stats = self.clip(params)
        if not measure or not math.isfinite(stats.pre_norm):
            return stats
        return replace(stats, post_norm=float(total_norm(params)), cosine=cosine(raw, [p.grad for p in params]))


def method_class(method: str) -> type[Clipper]:
    """The Clipper defined in module ``gradclip.clipping.<method>``."""
    module = importlib.import_module(f"{__name__}.{method}")
    return next(c for c in vars(module).values()
                if isinstance(c, type) and issubclass(c, Clipper) and c.__module__ == module.__name__)
