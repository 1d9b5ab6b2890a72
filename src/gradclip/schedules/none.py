"""No schedule: the optimizer's lr at every step."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.schedules import Schedule


@dataclass
class Constant(Schedule):
    def factor(self, it: int) -> float:
        return 1.0
