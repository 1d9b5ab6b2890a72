"""Pascanu et al. 2013's temporal order problem: 6 one-hot symbols; which of A/B stand at two early positions decides
one of 4 classes (AA, AB, BA, BB); the rest are distractors."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.tasks import GeneratedSequences


@dataclass
class TemporalOrder(GeneratedSequences):
    input_dim, output_dim = 6, 4
    metric = "accuracy"
    higher_is_better, metric_unit, metric_upper = True, "fraction correct", 1.0

    def sample(self, gen, n: int):
        import torch
        import torch.nn.functional as F

        length = self.seq_len
        symbols = torch.randint(2, 6, (n, length), generator=gen)  # distractors: symbols 2..5
        relevant = torch.randint(0, 2, (n, 2), generator=gen)  # A = 0, B = 1
        rows = torch.arange(n)
        first = torch.randint(int(0.1 * length), max(int(0.2 * length), int(0.1 * length) + 1), (n,), generator=gen)
        second = torch.randint(int(0.5 * length), max(int(0.6 * length), int(0.5 * length) + 1), (n,), generator=gen)
        symbols[rows, first] = relevant[:, 0]
        symbols[rows, second] = relevant[:, 1]
        x = F.one_hot(symbols, 6).float()
        y = relevant[:, 0] * 2 + relevant[:, 1]  # AA=0, AB=1, BA=2, BB=3
        return x.to(self.device), y.to(self.device)

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.cross_entropy(out, y)

    def evaluate(self, model) -> dict[str, float]:
        import torch.nn.functional as F

        outs = [(model(x), y) for x, y in self.eval_batches]
        loss = sum(F.cross_entropy(o, y, reduction="sum").item() for o, y in outs) / self.eval_size
        accuracy = sum((o.argmax(-1) == y).sum().item() for o, y in outs) / self.eval_size
        return {"loss": loss, "accuracy": accuracy, "error_rate": 1 - accuracy}
