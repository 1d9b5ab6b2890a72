"""One global L2 norm over all parameters (Pascanu et al.'s Algorithm 1, PyTorch's clip_grad_norm_, Caffe's Solver):
g <- threshold * g / ||g|| when ||g|| > threshold (strictly, as Caffe: a norm at the threshold is left alone).

The gradients are clip_grad_norm_'s bit for bit (``torch/nn/utils/clip_grad.py``: ``_get_total_norm``,
``_clip_grads_with_norm_``): one fused norm and, when it clips, one fused multiplication by the same factor."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, global_norm, scale_to
from gradclip.component import rule


@dataclass
class Norm(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def clip(self, params: list) -> ClipStats:
        norm = global_norm([p.grad for p in params])
        if (value := norm.item()) > self.threshold:
            return scale_to(params, norm, self.threshold)
        return ClipStats(value, value, False)
