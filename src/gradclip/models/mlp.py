"""An MLP: ``depth`` hidden layers of ``width`` units, Xavier-normal weights with ``init_gain``, zero biases.

A deep tanh MLP with a gain above 1 is the classic exploding-gradient network (conf/model/deep_mlp.yaml).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from omegaconf import MISSING

from gradclip.component import positive, rule
from gradclip.models import Model


class Activation(Enum):
    tanh = "tanh"
    relu = "relu"


@dataclass
class MLP(Model):
    depth: int = rule(lambda v: v >= 0, "an integer >= 0")
    width: int = rule(lambda v: v >= 1, "an integer >= 1")
    activation: Activation = MISSING
    init_gain: float = rule(positive, "a number > 0")
    accepts = "vector"

    def build(self, task):
        from torch import nn

        act = {Activation.tanh: nn.Tanh, Activation.relu: nn.ReLU}[self.activation]
        sizes = [task.input_dim] + [self.width] * self.depth
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), act())]
        net = nn.Sequential(*layers, nn.Linear(sizes[-1], task.output_dim))
        for module in net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight, gain=self.init_gain)
                nn.init.zeros_(module.bias)
        return net
