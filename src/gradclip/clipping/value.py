"""Element-wise clipping to [-threshold, threshold] (Mikolov): torch.nn.utils.clip_grad_value_'s fused path (two
foreach clamps), without its grouping by device and dtype."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, global_norm
from gradclip.component import rule


@dataclass
class Value(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def clip(self, params: list) -> ClipStats:
        import torch

        grads = [p.grad for p in params]
        before = global_norm(grads).item()
        torch._foreach_clamp_min_(grads, -self.threshold)
        torch._foreach_clamp_max_(grads, self.threshold)
        after = global_norm(grads).item()
        return ClipStats(before, after, after < before)
