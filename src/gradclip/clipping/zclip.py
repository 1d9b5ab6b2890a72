"""ZClip (2025): an EMA of the gradient norm's mean and variance; when the norm's z-score exceeds z_thresh, clip it to
mean + z_thresh * std. The first ``warmup`` norms only start the EMA (their mean and variance)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, scale_to, total_norm
from gradclip.component import positive, rule


@dataclass
class ZClip(Clipper):
    alpha: float = rule(lambda v: 0 < v < 1, "a number in (0, 1)")  # EMA factor of the norm's mean and variance
    z_thresh: float = rule(positive, "a number > 0")
    warmup: int = rule(lambda v: v >= 1, "an integer >= 1")

    def __post_init__(self):
        self.history: list[float] = []  # the warm-up norms
        self.mean = self.var = None

    def state_dict(self) -> dict:
        return {"history": list(self.history), "mean": self.mean, "var": self.var}

    def load_state_dict(self, state: dict) -> None:
        self.history, self.mean, self.var = list(state["history"]), state["mean"], state["var"]

    def clip(self, params: list) -> ClipStats:
        norm = total_norm(params)
        if not math.isfinite(norm):
            return ClipStats(float(norm), float(norm), False)
        threshold = self._threshold(float(norm))
        if threshold is None or norm <= threshold:
            return ClipStats(float(norm), float(norm), False)
        return scale_to(params, norm, threshold)

    def _threshold(self, norm: float) -> float | None:
        """mean + z_thresh * std when the norm's z-score exceeds z_thresh, else None; then the EMA takes the norm
        (clipped)."""
        import numpy as np

        if self.mean is None:
            self.history.append(norm)
            if len(self.history) >= self.warmup:
                self.mean, self.var = float(np.mean(self.history)), float(np.var(self.history))
            return None
        std = math.sqrt(self.var)
        threshold = self.mean + self.z_thresh * std if std > 0 and (norm - self.mean) / std > self.z_thresh else None
        seen = min(norm, threshold) if threshold is not None else norm  # the EMA follows the clipped norm
        self.mean = self.alpha * self.mean + (1 - self.alpha) * seen
        self.var = self.alpha * self.var + (1 - self.alpha) * (seen - self.mean) ** 2
        return threshold
