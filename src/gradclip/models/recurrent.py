"""A recurrent net (LSTM, GRU or Elman RNN with tanh): tokens or vectors in; a prediction at every step (a language
model, ``task.readout == "all"``) or at the last step only."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING

from gradclip.component import rule
from gradclip.models import Model


class Cell(Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"  # Elman RNN with tanh, as in Pascanu et al.


@dataclass
class Recurrent(Model):
    cell: Cell = MISSING
    embedding: int = rule(lambda v: v >= 1, "an integer >= 1")  # used when the inputs are tokens
    hidden: int = rule(lambda v: v >= 1, "an integer >= 1")
    layers: int = rule(lambda v: v >= 1, "an integer >= 1")
    # as PyTorch's word_language_model: on the embeddings, between the layers and on the last layer's outputs
    dropout: float = rule(lambda v: 0 <= v < 1, "a number in [0, 1)")
    accepts = "sequence"
    half_on_cpu = False

    @property
    def name(self) -> str:
        return self.cell.value

    def build(self, task):
        from torch import nn

        cell = {Cell.lstm: nn.LSTM, Cell.gru: nn.GRU, Cell.rnn: nn.RNN}[self.cell]  # nn.RNN's default is tanh
        tokens = task.vocab_size is not None

        class RecurrentNet(nn.Module):
            def __init__(net, embedding: int, hidden: int, layers: int, dropout: float):
                super().__init__()
                net.embed = nn.Embedding(task.vocab_size, embedding) if tokens else None
                net.rnn = cell(embedding if tokens else task.input_dim, hidden, layers, batch_first=True,
                               dropout=dropout if layers > 1 else 0.0)
                net.drop = nn.Dropout(dropout) if dropout else nn.Identity()  # 0: no dropout call at all
                net.head = nn.Linear(hidden, task.output_dim)

            def forward(net, x):
                h, _ = net.rnn(net.drop(net.embed(x)) if tokens else x)
                h = net.drop(h)
                return net.head(h if task.readout == "all" else h[:, -1])

        return RecurrentNet(self.embedding, self.hidden, self.layers, self.dropout)
