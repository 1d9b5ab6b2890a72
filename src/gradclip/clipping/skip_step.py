"""Statistical skip-step, as OLMo-core's ``SkipStepOptimizer`` decides it for ``SkipStepAdamW``
(``allenai/OLMo-core``, ``src/olmo_core/optim/skip_step_optimizer.py``, ``optim/adamw.py``), then global norm
clipping, as OLMo trains (SkipStepAdamW with clipping at 1.0):

- every step's training loss and pre-clip global gradient norm join two windows holding the last ``window`` + 1
  values, the current one included; a skipped step's values join too (OLMo-core's trainer sets both every step);
- once the window holds ``min_values`` values (the current one counted, as OLMo-core's ``len(self._losses)``), the
  step is skipped unless |x - mean| / std <= ``sigma`` for the loss and for the norm, mean and std
  (``torch.std_mean``, Bessel-corrected) over the values before the current one; a NaN z-score (0 / 0) skips, as
  there;
- a step that is not skipped is clipped at ``max_norm`` (clip_grad_norm_'s formula; null = not clipped).

A skipped step is a no-op for the optimizer (training does not step it); the lr schedule still advances. One
departure: a non-finite gradient (which training never applies) stays out of the windows, where OLMo-core's would
make their statistics NaN and skip every step while it is in them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from gradclip.clipping import Clipper, ClipStats, scale_to, total_norm
from gradclip.component import ConfigError, positive, rule


@dataclass
class SkipStep(Clipper):
    window: int = rule(lambda v: v >= 2, "an integer >= 2")  # values the mean and std are taken over
    min_values: int = rule(lambda v: v >= 3, "an integer >= 3")  # values held (current included) before deciding
    sigma: float = rule(positive, "a number > 0")  # a z-score above this, of the loss or the norm, skips the step
    max_norm: Optional[float] = rule(positive, "a number > 0, or null for no clipping")

    def check(self) -> None:
        if self.min_values > self.window + 1:
            raise ConfigError(f"clip.min_values={self.min_values}: must be <= clip.window + 1 = {self.window + 1} "
                              "(the window holds the current value too)")

    def __post_init__(self):
        self.losses: list[float] = []
        self.norms: list[float] = []
        self.loss = math.nan  # the step's loss, from observe()
        self.skipped = False  # this step's decision

    def state_dict(self) -> dict:
        return {"losses": list(self.losses), "norms": list(self.norms)}

    def load_state_dict(self, state: dict) -> None:
        self.losses, self.norms = list(state["losses"]), list(state["norms"])

    def diagnostics(self) -> dict[str, float]:
        return {"skipped_spike": int(self.skipped)}

    def observe(self, loss: float) -> None:
        self.loss = loss

    def clip(self, params: list) -> ClipStats:
        norm = total_norm(params)  # the norm clip_grad_norm_ computes
        self.skipped = math.isfinite(norm) and self._outlier(self.loss, float(norm))
        if self.skipped or not math.isfinite(norm):
            return ClipStats(float(norm), float(norm), False, skip=self.skipped)
        if self.max_norm is not None and norm > self.max_norm:
            return scale_to(params, norm, self.max_norm)
        return ClipStats(float(norm), float(norm), False)

    def _outlier(self, loss: float, norm: float) -> bool:
        """Add the step's values to the windows; whether either lies more than sigma standard deviations from the
        values before it."""
        import torch

        for values, value in ((self.losses, loss), (self.norms, norm)):
            values.append(value)
            del values[:-(self.window + 1)]
        if len(self.losses) < self.min_values:
            return False
        for values in (self.losses, self.norms):
            std, mean = torch.std_mean(torch.tensor(values[:-1], dtype=torch.float64))
            if not abs(values[-1] - mean) / std <= self.sigma:  # a NaN z-score (0 / 0) skips too
                return True
        return False
