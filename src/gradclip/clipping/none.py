"""No clipping: the raw gradient goes to the optimizer; its global L2 norm is logged."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from gradclip.clipping import Clipper, ClipStats, total_norm


@dataclass
class NoClip(Clipper):
    threshold: ClassVar[float] = math.inf  # never clips

    def clip(self, params: list) -> ClipStats:
        norm = total_norm(params).item()
        return ClipStats(norm, norm, False)
