"""Learning-rate schedules, one module each: ``conf/schedule/<option>.yaml`` names its class with ``_target_``.

A schedule is a dataclass of its settings whose ``factor(it)`` is the multiplier of the optimizer's lr (``optim.lr x
optim.lr_scale``, the peak) for the update after ``it`` updates (0: the first), on every parameter group. It holds no
state: a resumed run gets the same lrs as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.component import Component, component_name


@dataclass
class Schedule(Component):
    @property
    def name(self) -> str:
        return component_name(type(self))

    def factor(self, it: int) -> float:
        """The lr multiplier for the update after ``it`` updates."""
        raise NotImplementedError
