"""Gradient clipping methods, one module each: ``conf/clip/<option>.yaml`` names its class with ``_target_``.

A method is a ``Clipper``: a dataclass of its settings whose ``clip(params)`` clips the gradients in place and says
what it did (``ClipStats``); the global norm before clipping comes out of the clip itself, so logging it is free.
The norm and the scaling are fused (``global_norm``, ``scale_to``: one norm over all gradients, one multiplication,
the factor computed in Python) and give ``clip_grad_norm_``'s bits (pytorch/pytorch, ``torch/nn/utils/clip_grad.py``;
tests/test_clip_bits.py): a step that does not clip costs four torch calls, one that clips six.
A method that decides on the step's training loss too gets it from ``observe(loss)`` before the clip, and one that
decides the step must not update at all says so with ``ClipStats.skip``. On diagnostic steps (``measure=True``) the
post-clip norm and the cosine to the raw gradient are measured on the gradients the clip left, for every method; on
the other steps post_norm is the method's own account of it.
One object per run: stateful methods keep their state in it and save it with ``state_dict``. torch is imported
inside the methods, so checking a config does not load it.
"""

from __future__ import annotations

import functools
import importlib
import math
from collections.abc import Callable
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


def global_norm(grads: list):
    """The global L2 norm of ``grads`` as a tensor: ``get_total_norm(foreach=True)``'s three operations, the same bits
    (all gradients share one device and dtype, as a model's do), without its grouping and per-tensor moves."""
    import torch

    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


def total_norm(params: list):
    """The global L2 norm of the gradients of ``params``, as a tensor."""
    return global_norm([p.grad for p in params])


@functools.cache
def rounding(dtype) -> Callable[[float], float]:
    """float -> the nearest value of the torch ``dtype`` (float32, float64), as a float."""
    import torch

    real = torch.empty((), dtype=dtype).numpy().dtype.type
    return lambda x: float(real(x))


def clip_factor(norm: float, threshold: float, rnd: Callable[[float], float]) -> float:
    """``clip_grad_norm_``'s factor min(threshold / (norm + EPS), 1), rounded as its tensor operations round it in the
    norm's dtype (``rnd``): the sum, a reciprocal times the threshold (torch divides a number by a tensor so), the
    minimum. Each operation is computed in float64 and rounded once, which is the correctly rounded float32 result
    (53 >= 2 x 24 + 2 bits: double rounding is innocuous)."""
    return min(rnd(rnd(1 / rnd(norm + rnd(EPS))) * rnd(threshold)), 1.0)


def scale_to(params: list, norm, threshold: float) -> ClipStats:
    """Scale every gradient by min(threshold / (norm + EPS), 1), as ``clip_grad_norm_`` does once it clips: one fused
    multiplication by the factor it computes (``norm``: the global norm as a tensor), the same bits, and the
    post-clip norm norm x factor, rounded as a tensor product."""
    import torch

    grads, pre, rnd = [p.grad for p in params], norm.item(), rounding(norm.dtype)
    factor = clip_factor(pre, threshold, rnd)
    torch._foreach_mul_(grads, torch.full((), factor, dtype=norm.dtype, device=norm.device))
    post = rnd(pre * factor)
    return ClipStats(pre, post, post < pre)


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
