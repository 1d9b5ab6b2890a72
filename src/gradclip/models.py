"""Models: a recurrent net (LSTM / GRU / tanh RNN) for sequences and tokens, and an MLP for vectors."""

from __future__ import annotations

import torch
from torch import nn


class RecurrentNet(nn.Module):
    """Tokens or vectors in; a prediction at every step (language model) or at the last step only."""

    def __init__(self, cell: str, hidden: int, layers: int, embedding: int, output_dim: int, readout: str,
                 vocab_size: int | None = None, input_dim: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding) if vocab_size else None
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]  # nn.RNN's default nonlinearity is tanh
        self.rnn = recurrent(embedding if vocab_size else input_dim, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, output_dim)
        self.readout = readout
        self.output_layer = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(x) if self.embed is not None else x)
        return self.head(h if self.readout == "all" else h[:, -1])


class MLP(nn.Module):
    """`depth` hidden layers of `width` units; Xavier-normal weights with `init_gain`, zero biases."""

    def __init__(self, input_dim: int, output_dim: int, depth: int, width: int, activation: str, init_gain: float):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        sizes = [input_dim] + [width] * depth
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), act())]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], output_dim))
        self.output_layer = self.net[-1]
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight, gain=init_gain)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CliffRNN(nn.Module):
    """Pascanu et al.'s one hidden unit without input, x_t = w * sigmoid(x_{t-1}) + b, unrolled `length` steps."""

    def __init__(self, w0: float, b0: float, length: int, x0: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b0, dtype=torch.float64))
        self.length, self.x0 = length, x0

    def forward(self, _=None) -> torch.Tensor:
        x = torch.tensor(self.x0, dtype=torch.float64, device=self.w.device)
        for _ in range(self.length):
            x = self.w * torch.sigmoid(x) + self.b
        return x

    def trace(self) -> dict[str, float]:
        """The parameters themselves, logged every step (there are only two)."""
        return {"w": self.w.item(), "b": self.b.item()}


def build_model(cfg, task) -> nn.Module:
    if cfg.name == "cliff":
        return CliffRNN(cfg.w0, cfg.b0, task.cfg.length, task.cfg.x0)
    if cfg.name == "mlp":
        return MLP(task.input_dim, task.output_dim, cfg.depth, cfg.width, cfg.activation.value, cfg.init_gain)
    return RecurrentNet(cfg.cell.value, cfg.hidden, cfg.layers, cfg.embedding, task.output_dim, task.readout,
                        vocab_size=task.vocab_size, input_dim=task.input_dim)
