"""Models, one module each: ``conf/model/<option>.yaml`` names its class with ``_target_``.

A model is a dataclass of its settings whose ``build(task)`` returns the torch module (torch is imported there, so
checking a config does not load it). ``accepts`` is the kind of task it takes (``Task.kind``). The network's last
child module is its output layer, which AGC never clips. ``check_task`` refuses a task of the right kind it still
cannot take; ``loss`` is the training loss (the task's, plus the model's own terms, e.g. GPT's z-loss).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from gradclip.component import Component, component_name


@dataclass
class Model(Component):
    accepts: ClassVar[str]  # the kind of task: "sequence", "vector" or "cliff"
    half_on_cpu: ClassVar[bool] = True  # whether its layers have float16 kernels on CPU (precision=fp16)

    @property
    def name(self) -> str:
        return component_name(type(self))

    def check_task(self, task) -> None:
        """Raise ConfigError for a task (typed, not set up) this model cannot take beyond its kind."""

    def loss(self, task, out, y):
        """The training loss of output ``out`` for targets ``y``: the task's own, unless the model adds a term."""
        return task.loss(out, y)

    def build(self, task):
        """The network for ``task`` (its input and output sizes), initialised from torch's global generator."""
        raise NotImplementedError
