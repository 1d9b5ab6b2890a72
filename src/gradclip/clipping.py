"""Gradient clipping methods. Each clips the gradients in place and returns what it did.

The global norm before clipping comes out of the clip itself (no extra pass for ``norm``), so logging it is free.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils import clip_grad_norm_, clip_grad_value_, clip_grads_with_norm_, get_total_norm

EPS = 1e-6  # the same epsilon clip_grad_norm_ adds to the norm before dividing


@dataclass(frozen=True)
class ClipStats:
    pre_norm: float  # global L2 norm of the raw gradients (inf / nan when they are not finite)
    post_norm: float  # global L2 norm of the gradients that reach the optimizer
    fired: bool  # whether clipping changed anything

    @property
    def scale(self) -> float:
        """post_norm / pre_norm: 1 when nothing was clipped."""
        return self.post_norm / self.pre_norm if self.pre_norm > 0 else 1.0


def _coefficient(norm: torch.Tensor, threshold: float) -> torch.Tensor:
    return torch.clamp(threshold / (norm + EPS), max=1.0)


def clip_gradients(parameters, method: str, threshold: float | None) -> ClipStats:
    """Clip the gradients of ``parameters`` in place with ``method`` (none | norm | value | per_tensor)."""
    params = [p for p in parameters if p.grad is not None]
    grads = [p.grad for p in params]
    if method == "none":
        norm = float(get_total_norm(grads))
        return ClipStats(norm, norm, False)
    if method == "norm":  # Pascanu's Algorithm 1: g <- threshold * g / ||g|| when ||g|| > threshold
        norm = clip_grad_norm_(params, threshold, foreach=True)
        post = norm * _coefficient(norm, threshold)
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
