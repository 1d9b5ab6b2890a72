"""Pascanu et al. 2013's adding problem: (value in [0, 1], marker) pairs; predict the mean of the two marked values.
Each batch has a length drawn from [L, 1.1 L]; a held-out sequence counts as an error when its squared error > 0.04."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.tasks import GeneratedSequences


@dataclass
class Adding(GeneratedSequences):
    input_dim, output_dim = 2, 1
    metric, metric_unit = "mse", "squared error"

    def sample(self, gen, n: int):
        import torch

        length = self.seq_len + int(torch.randint(0, self.seq_len // 10 + 1, (1,), generator=gen))
        values = torch.rand(n, length, generator=gen)
        first = torch.randint(0, max(1, length // 10), (n,), generator=gen)
        second = torch.randint(max(1, length // 10), length // 2, (n,), generator=gen)
        markers = torch.zeros(n, length)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)
        y = (values[rows, first] + values[rows, second])[:, None] / 2
        return x.to(self.device), y.to(self.device)

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.mse_loss(out, y)

    def evaluate(self, model) -> dict[str, float]:
        import torch

        errors = torch.cat([((model(x) - y) ** 2).flatten() for x, y in self.eval_batches])
        mse = errors.mean().item()
        return {"loss": mse, "mse": mse, "error_rate": (errors > 0.04).float().mean().item()}
