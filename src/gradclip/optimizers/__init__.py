"""Optimizers torch lacks, each a ``torch.optim.Optimizer`` named by its yaml's ``_target_`` (conf/optim/) and checked
by ``OPTIM_RULES`` (gradclip/config.py): the spike remedies that act inside the optimizer (SPAM, StableAdamW,
optax's skip_large_updates around any optimizer).

Each reports its own per-step account through ``diagnostics()``, which training.py adds to the step's row.
"""

from __future__ import annotations

import math

import torch


class ReportingOptimizer(torch.optim.Optimizer):
    """An optimizer whose ``update()`` moves the parameters and returns the step's diagnostics (keys: ``COLUMNS``)."""

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, params, defaults: dict):
        super().__init__(params, defaults)
        self.report = dict.fromkeys(self.COLUMNS, math.nan)

    def update(self) -> dict[str, float]:
        """One update from the parameters' gradients (under no_grad); this step's diagnostics."""
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.report = self.update()
        return loss

    def diagnostics(self) -> dict[str, float]:
        """This step's values, once: NaN when no update was made since the last call (a skipped non-finite step)."""
        values, self.report = self.report, dict.fromkeys(self.COLUMNS, math.nan)
        return values
