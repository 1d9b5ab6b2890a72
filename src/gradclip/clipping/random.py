"""Goodfellow et al. (Deep Learning, 10.11.1): when the norm exceeds the threshold, step in a uniformly random
direction of norm threshold instead: a control for whether the clipped gradient's direction matters."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, total_norm
from gradclip.component import rule


@dataclass
class Random(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def prepare(self, seed: int, exclude: set[int]) -> None:
        import torch

        self.generator = torch.Generator().manual_seed(seed)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    def clip(self, params: list) -> ClipStats:
        import torch
        from torch.nn.utils import get_total_norm

        norm = float(total_norm(params))
        if not math.isfinite(norm) or norm <= self.threshold:
            return ClipStats(norm, norm, False)
        grads = [p.grad for p in params]
        directions = [torch.randn(g.shape, generator=self.generator, dtype=g.dtype).to(g.device) for g in grads]
        scale = self.threshold / float(get_total_norm(directions))
        for g, d in zip(grads, directions):
            g.copy_(d * scale)
        return ClipStats(norm, self.threshold, True)
