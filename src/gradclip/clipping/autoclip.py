"""AutoClip (Seetharaman et al. 2020): clip the global norm to the given percentile of every norm seen so far."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, scale_to, total_norm
from gradclip.component import rule


@dataclass
class AutoClip(Clipper):
    percentile: float = rule(lambda v: 0 < v <= 100, "a number in (0, 100]")
    warmup: int = rule(lambda v: v >= 1, "an integer >= 1")  # steps that only record norms before clipping starts

    def __post_init__(self):
        self.history: list[float] = []  # every finite pre-clip norm so far

    def state_dict(self) -> dict:
        return {"history": list(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])

    def clip(self, params: list) -> ClipStats:
        import numpy as np

        norm = total_norm(params)
        if not math.isfinite(norm):
            return ClipStats(float(norm), float(norm), False)
        self.history.append(float(norm))
        if len(self.history) < self.warmup:
            return ClipStats(float(norm), float(norm), False)
        threshold = float(np.percentile(self.history, self.percentile))
        if norm <= threshold:
            return ClipStats(float(norm), float(norm), False)
        return scale_to(params, norm, threshold)
