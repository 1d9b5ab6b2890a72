"""The cliff model's loss surface, computed directly with torch (float64, autograd through the 50 steps): E and its
gradient on grids, the wall's steepness on grids and along the column w = COLUMN_W, the stored surfaces."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

# Fixed before the runs.
# Fixed before the runs.
LENGTH, X0, GOAL = 50, 0.5, 0.7  # conf/task/cliff.yaml (Pascanu et al. Eq. 8)
W_RANGE, B_RANGE = (1.0, 8.0), (-4.0, 0.0)
STEEP_GRIDS = (100, 200, 400)  # shown beside it: the wall's measured height depends on resolution
COLUMN_W = 5.0  # the anchor's column (docs/sources.md: max |dE/db| -> 5.75e3 at b ~ -2.6123, median ~ 0.034)
COLUMN_POINTS = (401, 4001, 40001, 400001)
SURFACE_GRID = 80  # stored for the figure (E only, 3 significant digits: a small CSV)
ZOOM_W, ZOOM_B, ZOOM_GRID = (4.2, 5.4), (-2.9, -1.9), 60  # a closer look around the setup's start, for the figure


def loss_and_grad(w, b) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """E(w, b) and its gradient for arrays of (w, b) of any shape (float64, autograd through the 50 steps)."""
    W = torch.as_tensor(np.asarray(w, dtype=float), dtype=torch.float64).clone().requires_grad_(True)
    B = torch.as_tensor(np.asarray(b, dtype=float), dtype=torch.float64).clone().requires_grad_(True)
    x = torch.full_like(W, X0)
    for _ in range(LENGTH):
        x = W * torch.sigmoid(x) + B
    E = (torch.sigmoid(x) - GOAL) ** 2
    gw, gb = torch.autograd.grad(E.sum(), (W, B))
    return E.detach().numpy(), gw.numpy(), gb.numpy()


def _grid(n_w: int, n_b: int):
    w = np.linspace(*W_RANGE, n_w)
    b = np.linspace(*B_RANGE, n_b)
    W, B = np.meshgrid(w, b)
    E, gw, gb = loss_and_grad(W, B)
    return W, B, E, gw, gb


def _sig(values, digits: int = 4) -> np.ndarray:
    """Round to `digits` significant figures (keeps the stored surface small)."""
    values = np.asarray(values, dtype=float)
    out = values.copy()
    ok = np.isfinite(values) & (values != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(values[ok]))))
    out[ok] = np.round(values[ok] * scale) / scale
    return out


def steepness_table() -> pd.DataFrame:
    rows = []
    for n in STEEP_GRIDS:
        W, B, E, gw, gb = _grid(n, n)
        g = np.hypot(gw, gb)
        i = np.unravel_index(np.argmax(g), g.shape)
        rows.append({"where": f"grid {n}x{n}", "points": n * n, "quantity": "||grad E||", "max": g.max(),
                     "median": float(np.median(g)), "ratio": g.max() / np.median(g), "w_at_max": W[i],
                     "b_at_max": B[i], "loss_at_max": E[i], "verdict_grid": False})
    for n in COLUMN_POINTS:
        b = np.linspace(*B_RANGE, n)
        E, _, gb = loss_and_grad(np.full_like(b, COLUMN_W), b)
        g = np.abs(gb)
        i = int(np.argmax(g))
        rows.append({"where": f"column w={COLUMN_W:g}, {n} points", "points": n, "quantity": "|dE/db|",
                     "max": g.max(), "median": float(np.median(g)), "ratio": g.max() / np.median(g),
                     "w_at_max": COLUMN_W, "b_at_max": b[i], "loss_at_max": E[i], "verdict_grid": False})
    rows.append(column_maximum(b, i, float(np.median(g))))
    return pd.DataFrame(rows)


def column_maximum(b: np.ndarray, i: int, median: float) -> dict:
    """The wall's height on the column itself, not on a grid: |dE/db| maximised within one grid step of the finest
    grid's largest value (bounded Brent); the median of the finest column does not depend on resolution."""
    from scipy.optimize import minimize_scalar

    def minus_slope(x: float) -> float:
        return -float(np.abs(loss_and_grad(np.array([COLUMN_W]), np.array([x]))[2])[0])

    step = b[1] - b[0]
    found = minimize_scalar(minus_slope, bounds=(b[i] - step, b[i] + step), method="bounded",
                            options={"xatol": 1e-12})
    E = float(loss_and_grad(np.array([COLUMN_W]), np.array([found.x]))[0][0])
    return {"where": f"column w={COLUMN_W:g}, maximised", "points": int(found.nfev), "quantity": "|dE/db|",
            "max": -found.fun, "median": median, "ratio": -found.fun / median, "w_at_max": COLUMN_W,
            "b_at_max": float(found.x), "loss_at_max": E, "verdict_grid": True}


def surface_table(w_range=W_RANGE, b_range=B_RANGE, n: int = SURFACE_GRID) -> pd.DataFrame:
    W, B = np.meshgrid(np.linspace(*w_range, n), np.linspace(*b_range, n))
    E = loss_and_grad(W, B)[0]
    return pd.DataFrame({"w": np.round(W.ravel(), 4), "b": np.round(B.ravel(), 4), "loss": _sig(E.ravel(), 3)})

