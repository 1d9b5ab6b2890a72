"""Tasks, one module each: ``conf/task/<option>.yaml`` names its class with ``_target_``.

A task is a dataclass of its settings. ``setup(device)`` makes or loads its data (torch is imported there, so
checking a config does not load it); then ``batch(generator)`` gives one training batch, ``loss(output, y)`` the
training loss and ``evaluate(model)`` the scores on the held-out split ``split`` names (called under
``torch.no_grad``): ``validation`` to tune on, ``test`` to decide on, never trained on. ``metric`` is the
headline held-out number, with its direction, unit and bound (``higher_is_better``, ``metric_unit``,
``metric_upper``); ``target_metric`` (lower is better) is the one ``target`` is compared with. ``kind`` says
which models take it (``Model.accepts``); ``input_dim`` / ``vocab_size`` / ``output_dim`` / ``readout`` tell a model
its shapes, and ``info`` describes the data in the run's summary.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import ClassVar, Optional

from omegaconf import MISSING

from gradclip.component import SEED, Component, ConfigError, component_name, non_negative, rule

AT_LEAST_ONE = (lambda v: v >= 1, "an integer >= 1")


class Split(Enum):
    """The held-out split ``evaluate`` scores."""

    validation = "validation"
    test = "test"


@dataclass
class Task(Component):
    target: Optional[float] = rule(non_negative, "a finite number >= 0, or null for no target")
    split: Split = MISSING
    kind: ClassVar[str]  # "sequence", "vector" or "cliff"
    metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = False  # the metric's direction
    metric_unit: ClassVar[str] = ""
    metric_upper: ClassVar[Optional[float]] = None  # its upper bound (accuracy: 1); every metric here is >= 0
    target_metric: ClassVar[str]
    readout: ClassVar[Optional[str]] = "last"  # a sequence model predicts at the last step ("all": every step)
    vocab_size: ClassVar[Optional[int]] = None  # token inputs
    input_dim: ClassVar[Optional[int]] = None  # vector inputs
    output_dim: ClassVar[Optional[int]] = None

    @property
    def name(self) -> str:
        return component_name(type(self))

    def setup(self, device) -> None:
        """Make or load the data, on ``device``; set ``info`` (and the shapes a model needs)."""
        raise NotImplementedError

    def batch(self, gen):
        """One training batch (x, y), drawn with the run's generator ``gen``."""
        raise NotImplementedError

    def loss(self, out, y):
        raise NotImplementedError

    def evaluate(self, model) -> dict[str, float]:
        raise NotImplementedError


class ErrorRateTarget:
    """Mixin for tasks whose ``target`` is a held-out error rate."""

    def check(self) -> None:
        if self.target is not None and self.target > 1:
            raise ConfigError(f"task.target={self.target}: must be in [0, 1] (task={self.name}'s target is an "
                              "error rate)")


@dataclass
class GeneratedSequences(ErrorRateTarget, Task):
    """Pascanu et al.'s synthetic problems: fresh training batches from the run's generator; fixed held-out sets of
    ``eval_size`` sequences, validation drawn with seed ``data_seed``, test with seed ``data_seed + 1``."""

    seq_len: int = rule(lambda v: v >= 10, "an integer >= 10")
    batch_size: int = rule(*AT_LEAST_ONE)
    eval_size: int = rule(*AT_LEAST_ONE)
    data_seed: int = rule(*SEED)  # seed of the held-out sets, the same for every run
    kind = "sequence"
    target_metric = "error_rate"

    def setup(self, device) -> None:
        import torch

        self.device = device
        gen = torch.Generator().manual_seed(self.data_seed + 1 if self.split == Split.test else self.data_seed)
        self.eval_batches = [self.sample(gen, min(100, self.eval_size - i)) for i in range(0, self.eval_size, 100)]
        self.info = {"generator": f"Pascanu et al. 2013 {self.name}", "seq_len": self.seq_len}

    def sample(self, gen, n: int):
        """``n`` sequences and their labels."""
        raise NotImplementedError

    def batch(self, gen):
        return self.sample(gen, self.batch_size)


@dataclass
class SklearnData(Task):
    """A data set that scikit-learn ships or makes (no download), split by ``data_seed`` alone into training rows and
    held-out rows, whose first half is the validation split and second half the test split."""

    batch_size: int = rule(*AT_LEAST_ONE)
    data_seed: int = rule(*SEED)
    kind = "vector"

    def arrays(self):
        """(x, y, held-out fraction, description of the source)."""
        raise NotImplementedError

    def scale_inputs(self, x_train, x_held):
        return x_train, x_held

    def labels(self, y):
        raise NotImplementedError

    def setup(self, device) -> None:
        import torch
        from sklearn.model_selection import train_test_split

        x, y, held_out_fraction, source = self.arrays()
        x_train, x_held, y_train, y_held = train_test_split(x, y, test_size=held_out_fraction,
                                                            random_state=self.data_seed)
        x_train, x_held = self.scale_inputs(x_train, x_held)
        half = len(x_held) // 2
        rows = slice(None, half) if self.split == Split.validation else slice(half, None)
        self.device = device
        self.x_train = torch.tensor(x_train, dtype=torch.float32).to(device)
        self.y_train = self.labels(y_train).to(device)
        self.x_eval = torch.tensor(x_held[rows], dtype=torch.float32).to(device)
        self.y_eval = self.labels(y_held[rows]).to(device)
        self.input_dim = x.shape[1]
        self.info = {"data": source, "train": len(x_train), "validation": half, "test": len(x_held) - half,
                     "scored": self.split.value}

    def batch(self, gen):
        import torch

        rows = torch.randint(0, len(self.x_train), (self.batch_size,), generator=gen).to(self.device)
        return self.x_train[rows], self.y_train[rows]
