"""Element-wise clipping to [-threshold, threshold] (Mikolov): torch.nn.utils.clip_grad_value_."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, total_norm
from gradclip.component import rule


@dataclass
class Value(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def clip(self, params: list) -> ClipStats:
        from torch.nn.utils import clip_grad_value_

        before = float(total_norm(params))
        clip_grad_value_(params, self.threshold, foreach=True)
        after = float(total_norm(params))
        return ClipStats(before, after, after < before)
