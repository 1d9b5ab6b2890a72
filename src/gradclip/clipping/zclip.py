"""ZClip (Kumar et al. 2025), as its reference implementation computes it (``bluorion-com/ZClip``,
``zclip/zclip.py``; ``zclip`` 1.0.0 on PyPI), in its default mode (z-score, adaptive scaling):

- warm-up: the first ``warmup`` norms only start the EMA (their mean and population variance); those steps are
  clipped at ``max_grad_norm`` alone;
- then z = (norm - mean) / (std + 1e-6); when z > z_thresh the norm is a spike, clipped to
  mean + clip_factor * z_thresh * std / (z / z_thresh) (the larger the spike, the lower the threshold);
- every step is also capped at ``max_grad_norm`` (reference default 1.0; null = no cap);
- the EMA of the mean and variance then takes the spike's threshold, or the norm when it was not a spike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from gradclip.clipping import EPS, Clipper, ClipStats, scale_to, total_norm
from gradclip.component import positive, rule


@dataclass
class ZClip(Clipper):
    alpha: float = rule(lambda v: 0 < v < 1, "a number in (0, 1)")  # EMA factor of the norm's mean and variance
    z_thresh: float = rule(positive, "a number > 0")
    warmup: int = rule(lambda v: v >= 1, "an integer >= 1")
    max_grad_norm: Optional[float] = rule(positive, "a number > 0, or null for no cap")
    clip_factor: float = rule(positive, "a number > 0")  # multiplies the spike's threshold (reference: 1.0)

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
        spike = self._spike_threshold(float(norm))
        limit = min(spike if spike is not None else float(norm), self.max_grad_norm or math.inf)
        if norm > limit:
            return scale_to(params, norm, limit)
        return ClipStats(float(norm), float(norm), False)

    def _spike_threshold(self, norm: float) -> float | None:
        """The threshold when ``norm`` is a spike (else None), then the EMA update; during warm-up, None."""
        import numpy as np

        if self.mean is None:
            self.history.append(norm)
            if len(self.history) >= self.warmup:
                self.mean, self.var = float(np.mean(self.history)), float(np.var(self.history))
            return None
        std = math.sqrt(self.var)
        z = (norm - self.mean) / (std + EPS)
        threshold = self.mean + self.clip_factor * self.z_thresh * std / (z / self.z_thresh) if z > self.z_thresh \
            else None
        seen = threshold if threshold is not None else norm
        self.mean = self.alpha * self.mean + (1 - self.alpha) * seen
        self.var = self.alpha * self.var + (1 - self.alpha) * (seen - self.mean) ** 2
        return threshold
