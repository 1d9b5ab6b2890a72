"""Pascanu et al.'s cliff (C1, C2, C4): the one-unit RNN x_t = w * sigmoid(x_{t-1}) + b, x_0 = 0.5, 50 steps,
E = (sigmoid(x_50) - 0.7)^2, full-batch gradient descent on (w, b).

What it tests and why. This is the model the claims come from (Pascanu et al. 2013, Eq. 8 and Fig. 6; Goodfellow et
al. Fig. 8.3 / 10.17), so it is where they should hold most clearly:
  - C1 (cliffs exist): the loss surface is computed directly with torch (float64, vectorised over a (w, b) grid,
    autograd for dE/dw and dE/db) on w in [1, 8] x b in [-4, 0]. For w > 4 the map x -> w sigmoid(x) + b has two
    stable fixed points; along the curve where one of them disappears (a saddle-node bifurcation) x_50 switches
    branch and E jumps: a wall. The wall is thinner than any grid spacing, so its measured height grows with the
    resolution; the table `steepness` says so (grids 100^2, 200^2, 400^2 and the w = 5 column at four spacings).
    The check uses no grid: |dE/db| along w = 5 maximised near the finest column's peak (it converges: 5.75e3).
  - C2 (one step at a cliff throws the parameters far and undoes progress): gradient descent without clipping from a
    3 x 3 grid of starts, w0 in {4.5, 5, 5.5} x b0 in {-2.0, -2.3, -2.6}, centred on the setup's own start (5, -2.3)
    (conf/model/cliff.yaml), on the low-loss side of the wall for 8 of the 9 (E0 <= 0.07; (4.5, -2.6) starts on the
    high side, E0 = 0.35), where the zero-error valley b = 0.847 - 0.7 w runs into the wall. lr = the setup's 0.1
    (conf/setup/cliff.yaml), kept as it was: at lr 0.01 a 200-step run moves ~0.2 and never reaches the wall from these
    starts (a quick simulation of this model, the only thing looked at before the rule was written); at 0.1 the
    typical step is ~0.01, so a jump of order 1 or more is unmistakable. The start grid and lr are an illustration;
    the verdict is on the measured jumps.
  - C4 (norm clipping keeps the direction and limits the step): the same starts with norm-1 clipping
    (Pascanu's Algorithm 1, threshold 1): every step's ||delta theta|| must be <= lr x threshold, and the applied step
    must point along the raw gradient. The raw gradient is recomputed here at the pre-step parameters with torch,
    independently of the clipper's own report (its logged cosine is 1 by construction for global norm scaling, so it is
    shown but not trusted).

Reading the runs: row s of metrics.csv holds the loss at the parameters *before* step s and (w, b) *after* it; the
start (w0, b0) is the summary's model_params (defaults 5, -2.3). E and the gradient along the trajectory are
recomputed here from (w, b) with the same formula (a check column compares with the logged loss). Stored: the loss
surface (coarse, for the figure), the steepness statistics, one row per run in `jumps` (everything the verdicts use),
and the step-by-step trajectories of the illustrated start (the setup's own, (5, -2.3)) only, to keep the CSVs small.
"""

from __future__ import annotations

import pandas as pd

from experiments.cliff.model import (SURFACE_GRID, ZOOM_B, ZOOM_GRID, ZOOM_W, loss_and_grad, steepness_table,
                                     surface_table)
from experiments.cliff.plots import figures
from experiments.cliff.rules import RULE, verdict_c1, verdict_c2, verdict_c4, verdicts
from experiments.cliff.runs import TRAJECTORY_STORED, jump_table, show_start, trajectory_table

NAME = "cliff"
TITLE = "Cliff: Pascanu et al.'s one-unit RNN — the wall, the jump without clipping, the clipped step"
CLAIMS = ("C1", "C2", "C4")
__all__ = ["NAME", "TITLE", "CLAIMS", "RULE", "tables", "verdicts", "figures", "loss_and_grad", "steepness_table",
           "verdict_c1", "verdict_c2", "verdict_c4", "SURFACE_GRID", "ZOOM_GRID"]


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The stored tables: the steepness, the two surfaces, the illustrated start's trajectories and `jumps`."""
    trajectory = trajectory_table(runs, steps)
    return {"steepness": steepness_table(), "surface": surface_table(),
            "surface_zoom": surface_table(ZOOM_W, ZOOM_B, ZOOM_GRID),
            "trajectory": trajectory[trajectory.start == show_start(trajectory)][TRAJECTORY_STORED],
            "jumps": jump_table(trajectory)}
