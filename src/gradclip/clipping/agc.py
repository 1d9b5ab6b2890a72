"""Adaptive gradient clipping (Brock et al. 2021, NFNets): unit-wise, if ||G_i|| / max(||W_i||, eps) > lambda,
rescale G_i to lambda * max(||W_i||, eps). Units are the output rows of each weight; the output layer is never
clipped (the model's last child module)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradclip.clipping import EPS, Clipper, ClipStats, total_norm
from gradclip.component import positive, rule


def unitwise_norm(x):
    """Norm of each output unit (row) of a weight; a vector or scalar counts as one unit (as in timm's AGC)."""
    import torch

    if x.ndim <= 1:
        return torch.linalg.vector_norm(x)
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.ndim)), keepdim=True)


@dataclass
class AGC(Clipper):
    clip_factor: float = rule(positive, "a number > 0")  # lambda, the largest allowed ||G_i|| / max(||W_i||, eps)
    eps: float = rule(positive, "a number > 0")  # floor of the unit's weight norm

    def prepare(self, seed: int, exclude: set[int]) -> None:
        self.exclude = exclude

    def clip(self, params: list) -> ClipStats:
        import torch

        norm = float(total_norm(params))
        if not math.isfinite(norm):
            return ClipStats(norm, norm, False)
        fired = False
        for p in params:
            if id(p) in self.exclude:
                continue
            max_norm = unitwise_norm(p.detach()).clamp(min=self.eps) * self.clip_factor
            grad_norm = unitwise_norm(p.grad)
            too_large = grad_norm > max_norm
            if bool(too_large.any()):
                fired = True
                p.grad.copy_(torch.where(too_large, p.grad * (max_norm / grad_norm.clamp(min=EPS)), p.grad))
        post = float(total_norm(params)) if fired else norm
        return ClipStats(norm, post, fired)
