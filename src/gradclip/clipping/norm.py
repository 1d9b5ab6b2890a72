"""One global L2 norm over all parameters (Pascanu et al.'s Algorithm 1, PyTorch's clip_grad_norm_, Caffe's Solver):
g <- threshold * g / ||g|| when ||g|| > threshold (strictly, as Caffe: a norm at the threshold is left alone)."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, scale_to
from gradclip.component import rule


@dataclass
class Norm(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def clip(self, params: list) -> ClipStats:
        from torch.nn.utils import get_total_norm

        norm = get_total_norm([p.grad for p in params], foreach=True)  # the norm clip_grad_norm_ computes
        if norm > self.threshold:
            return scale_to(params, norm, self.threshold)
        return ClipStats(float(norm), float(norm), False)
