"""make_regression(samples x features) with unscaled targets (std ~ 100): the classic exploding-MLP case (Keras
tutorial). Half the rows train, a quarter are the validation split, a quarter the test split; scored by MSE on the
held-out split."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.component import non_negative, rule
from gradclip.tasks import SklearnData


@dataclass
class Regression(SklearnData):
    samples: int = rule(lambda v: v >= 10, "an integer >= 10")
    features: int = rule(lambda v: v >= 1, "an integer >= 1")
    noise: float = rule(non_negative, "a finite number >= 0")
    output_dim = 1
    metric = target_metric = "mse"
    metric_unit = "squared target units"

    def arrays(self):
        from sklearn.datasets import make_regression

        x, y = make_regression(n_samples=self.samples, n_features=self.features, noise=self.noise,
                               random_state=self.data_seed)
        return x, y, 0.5, f"sklearn.datasets.make_regression ({self.samples} x {self.features})"

    def labels(self, y):
        import torch

        return torch.tensor(y, dtype=torch.float32)[:, None]

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.mse_loss(out, y)

    def evaluate(self, model) -> dict[str, float]:
        loss = self.loss(model(self.x_eval), self.y_eval).item()
        return {"loss": loss, "mse": loss}
