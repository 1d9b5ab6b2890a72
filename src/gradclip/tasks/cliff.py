"""Pascanu et al. 2013's cliff (Eq. 8): no data; the loss E = (sigmoid(x_length) - goal)^2 depends on the one-unit
RNN's (w, b) alone (models/cliff.py), so every step is full-batch gradient descent. There is no held-out data:
``split`` is accepted and has no effect."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.component import finite, rule
from gradclip.tasks import Task


@dataclass
class Cliff(Task):
    length: int = rule(lambda v: v >= 1, "an integer >= 1")  # unrolled steps
    x0: float = rule(finite, "a finite number")
    goal: float = rule(lambda v: 0 < v < 1, "a number in (0, 1) (the goal of a sigmoid)")
    kind = "cliff"
    metric = target_metric = "error"
    metric_unit = "E"
    readout = None

    def setup(self, device) -> None:
        self.info = {"model": "Pascanu et al. 2013, Eq. 8", "length": self.length, "x0": self.x0, "goal": self.goal}

    def batch(self, gen):
        return None, None  # full-batch: the same loss every step

    def loss(self, out, y):
        import torch

        return (torch.sigmoid(out) - self.goal) ** 2

    def evaluate(self, model) -> dict[str, float]:
        error = float(self.loss(model(), None))
        return {"loss": error, "error": error}
