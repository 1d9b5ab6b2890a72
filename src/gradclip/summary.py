"""A finished run in numbers: ``RunSummary``, written by training as the job's ``summary.json`` and read back, typed,
by the report and the experiments. ``summarize`` computes the numbers from the run's step rows and evaluations.

JSON has no infinity: a threshold of inf (never clip) is stored as the string "inf" (``write_json``) and read back
as a float; NaN is stored as null.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from gradclip.files import write_json

MAD_TO_SD = 1.4826  # median absolute deviation x this = the standard deviation, for normal noise
MIN_HISTORY = 5  # losses a spike is measured against, at least: the MAD of one or two is no noise estimate


@dataclass
class RunSummary:
    # what ran
    setup_name: str
    task: str
    model: str
    model_params: dict  # the model's settings, e.g. the cliff's start point w0, b0
    clip: str  # the arm's label (norm1)
    clip_method: str  # the clipping module (norm)
    clip_threshold: Optional[float]  # inf = never clips (clip=none too); None = no fixed threshold (adaptive methods)
    clip_params: dict
    optim: str
    lr: float  # the lr the optimizer used: optim.lr x optim.lr_scale (under a schedule, its peak)
    lr_scale: float
    seed: int
    steps: int
    # how it ended
    status: str  # ok | diverged
    diverged: bool
    diverged_step: Optional[int]
    diverged_reason: Optional[str]
    steps_run: int
    # the held-out metric
    metric: str
    higher_is_better: bool
    final_metric: Optional[float]  # at the last evaluation (NaN -> None)
    final_eval: dict
    best_metric: Optional[float]
    best_step: Optional[int]
    target_metric: str
    target: Optional[float]
    steps_to_target: Optional[int]  # the first evaluation at or below the target
    # training
    clipped_fraction: float  # of the steps whose gradient was applied
    nonfinite_steps: int
    loss_spikes: int  # steps whose loss > median + spike_factor x robust SD of the previous losses (count_spikes)
    spike_factor: float  # in robust SDs (1.4826 x median absolute deviation)
    spike_window: int  # previous losses the median and the MAD are taken over
    initial_loss: Optional[float]
    grad_norm_median: Optional[float]  # pre-clip, over the applied steps
    grad_norm_max: Optional[float]
    cosine_median: Optional[float]
    final_train_loss: Optional[float]  # mean of the last 10 % of steps
    step_time_ms_median: Optional[float]
    # where and how
    group: str
    name: str
    overrides: list
    device: str
    threads: int
    versions: dict
    data: dict
    wall_time_s: float
    resumed_from_step: int
    population: int
    batched_steps: int
    code_version: str
    schema_version: int
    metric_unit: str = ""  # the task's declarations (Task.metric_unit, metric_upper)
    metric_upper: Optional[float] = None

    def write(self, path: Path) -> None:
        write_json(path, asdict(self))

    @classmethod
    def from_dict(cls, record: dict) -> RunSummary:
        """A summary as ``write`` stored it (KeyError for a missing field without a default; extra keys are ignored)."""
        values = {f.name: record[f.name] for f in fields(cls) if f.name in record or f.default is MISSING}
        values["clip_threshold"] = _number(values["clip_threshold"])
        for name in ("clip_params", "model_params"):
            values[name] = {k: _number(v) for k, v in values[name].items()}
        return cls(**values)

    @classmethod
    def read(cls, path: Path) -> RunSummary:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _number(value):
    """An infinity as write_json stores it ("inf", "-inf") back as a float; anything else as it is."""
    return float(value) if value in ("inf", "-inf") else value


def spike_steps(losses: pd.Series, factor: float, window: int) -> pd.Series:
    """Whether each step's loss exceeds the median of the ``window`` losses before it by more than ``factor`` robust
    SDs of them (1.4826 x their median absolute deviation, the SD for normal noise): a jump against the mini-batch
    noise, not against the best batch. Steps with fewer than min(window, MIN_HISTORY) losses before them are not
    tested."""
    history = losses.rolling(window, min_periods=min(window, MIN_HISTORY))
    median = history.median().shift(1)
    mad = history.apply(lambda x: np.median(np.abs(x - np.median(x))), raw=True).shift(1)
    return losses > median + factor * MAD_TO_SD * mad


def count_spikes(losses: pd.Series, factor: float, window: int) -> int:
    return int(spike_steps(losses, factor, window).sum())


def summarize(metrics: pd.DataFrame, evals: list[tuple[int, dict]], *, metric: str, higher: bool, target_metric: str,
              target: float | None, diverged_step: int | None, spike_factor: float, spike_window: int) -> dict:
    """The numbers a report compares runs by: from the step rows (metrics.csv) and the evaluations (step, scores)."""
    steps = metrics[metrics.step > 0]
    applied = steps[steps.skipped == 0]
    scores = [(s, e[metric]) for s, e in evals if math.isfinite(e[metric])]
    best_step, best = (max if higher else min)(scores, key=lambda se: se[1]) if scores else (None, None)
    reached = [s for s, e in evals if target is not None and e[target_metric] <= target]
    final = evals[-1][1]
    return {
        "status": "diverged" if diverged_step is not None else "ok", "diverged": diverged_step is not None,
        "diverged_step": diverged_step, "steps_run": int(steps.step.max()) if len(steps) else 0,
        "metric": metric, "higher_is_better": higher, "final_metric": final[metric], "final_eval": final,
        "best_metric": best, "best_step": best_step, "target_metric": target_metric, "target": target,
        "steps_to_target": reached[0] if reached else None,
        "clipped_fraction": float(applied.clipped.mean()) if len(applied) else 0.0,
        "loss_spikes": count_spikes(steps.loss, spike_factor, spike_window),
        "spike_factor": spike_factor, "spike_window": spike_window,
        "initial_loss": float(steps.loss.iloc[0]) if len(steps) else None,
        "grad_norm_median": float(applied.grad_norm.median()) if len(applied) else None,
        "grad_norm_max": float(applied.grad_norm.max()) if len(applied) else None,
        "cosine_median": float(applied.cosine.median()) if applied.cosine.notna().any() else None,
        "final_train_loss": float(steps.loss.tail(max(1, len(steps) // 10)).mean()) if len(steps) else None,
    }
