"""scikit-learn's bundled 8x8 digits (1797 images, no download), pixels standardised with the training statistics;
10-way classification, scored by accuracy on the held-out split (target: an error rate)."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.component import rule
from gradclip.tasks import ErrorRateTarget, SklearnData


@dataclass
class Digits(ErrorRateTarget, SklearnData):
    held_out_fraction: float = rule(lambda v: 0 < v < 1, "a number in (0, 1)")  # validation + test
    output_dim = 10
    metric, target_metric = "accuracy", "error_rate"
    higher_is_better, metric_unit, metric_upper = True, "fraction correct", 1.0

    def arrays(self):
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        return x, y, self.held_out_fraction, "sklearn.datasets.load_digits (1797 x 64, bundled)"

    def scale_inputs(self, x_train, x_held):
        mean, std = x_train.mean(0), x_train.std(0) + 1e-8
        return (x_train - mean) / std, (x_held - mean) / std

    def labels(self, y):
        import torch

        return torch.tensor(y, dtype=torch.long)

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.cross_entropy(out, y)

    def evaluate(self, model) -> dict[str, float]:
        out = model(self.x_eval)
        loss = self.loss(out, self.y_eval).item()
        accuracy = (out.argmax(-1) == self.y_eval).float().mean().item()
        return {"loss": loss, "accuracy": accuracy, "error_rate": 1 - accuracy}
