"""Pascanu et al.'s one hidden unit without input (Eq. 8): x_t = w * sigmoid(x_{t-1}) + b, unrolled ``task.length``
steps from ``task.x0``; the two parameters start at (w0, b0) and are logged every step."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.component import finite, rule
from gradclip.models import Model


@dataclass
class Cliff(Model):
    w0: float = rule(finite, "a finite number")
    b0: float = rule(finite, "a finite number")
    accepts = "cliff"

    def build(self, task):
        import torch
        from torch import nn

        class CliffRNN(nn.Module):
            def __init__(net, w0: float, b0: float):
                super().__init__()
                net.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
                net.b = nn.Parameter(torch.tensor(b0, dtype=torch.float64))

            def forward(net, _=None):
                x = torch.tensor(task.x0, dtype=torch.float64, device=net.w.device)
                for _ in range(task.length):
                    x = net.w * torch.sigmoid(x) + net.b
                return x

            def trace(net) -> dict[str, float]:
                """The parameters themselves, logged every step (there are only two)."""
                return {"w": net.w.item(), "b": net.b.item()}

        return CliffRNN(self.w0, self.b0)
