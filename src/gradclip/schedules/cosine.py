"""nanoGPT's ``get_lr``: linear warm-up over ``warmup_iters`` updates, then cosine decay to the floor at update
``lr_decay_iters``, the floor after it (at once after the warm-up if that ends later). The floor is ``min_lr_ratio``
x the optimizer's lr (nanoGPT's min_lr / learning_rate), so that scaling the lr scales the whole schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradclip.component import rule
from gradclip.schedules import Schedule


@dataclass
class Cosine(Schedule):
    warmup_iters: int = rule(lambda v: v >= 0, "an integer >= 0")
    lr_decay_iters: int = rule(lambda v: v >= 1, "an integer >= 1")
    min_lr_ratio: float = rule(lambda v: 0 <= v <= 1, "a number in [0, 1] (the floor, as a fraction of the lr)")

    def factor(self, it: int) -> float:
        if it < self.warmup_iters:
            return (it + 1) / (self.warmup_iters + 1)
        if it >= self.lr_decay_iters:  # (nanoGPT: >, the same value; this way a run shorter than its warm-up works)
            return self.min_lr_ratio
        decay_ratio = (it - self.warmup_iters) / (self.lr_decay_iters - self.warmup_iters)
        coeff = 0.5 * (1.0 + math.cos(math.pi * decay_ratio))  # from 1 down to 0
        return self.min_lr_ratio + coeff * (1.0 - self.min_lr_ratio)
