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

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from experiments.common import Figure, Verdict, fmt_ci, fmt_rate, save_figure  # noqa: E402

NAME = "cliff"
TITLE = "Cliff: Pascanu et al.'s one-unit RNN — the wall, the jump without clipping, the clipped step"
CLAIMS = ("C1", "C2", "C4")

# Fixed before the runs.
LENGTH, X0, GOAL = 50, 0.5, 0.7  # conf/task/cliff.yaml (Pascanu et al. Eq. 8)
W_RANGE, B_RANGE = (1.0, 8.0), (-4.0, 0.0)
STEEP_GRIDS = (100, 200, 400)  # shown beside it: the wall's measured height depends on resolution
COLUMN_W = 5.0  # the anchor's column (docs/sources.md: max |dE/db| -> 5.75e3 at b ~ -2.6123, median ~ 0.034)
COLUMN_POINTS = (401, 4001, 40001, 400001)
SURFACE_GRID = 80  # stored for the figure (E only, 3 significant digits: a small CSV)
ZOOM_W, ZOOM_B, ZOOM_GRID = (4.2, 5.4), (-2.9, -1.9), 60  # a closer look around the setup's start, for the figure
STEEP_RATIO = 100.0  # C1: max / median gradient norm on the grid
JUMP_RATIO = 100.0  # C2: largest step >= this x the median step before it = a catapult
END_SHARE = 0.1  # "where a run ended": E over its last 10 % of steps (median, and the range), not at one step
UNDONE_MUCH = 0.5  # C2: the loss right after the catapult gives back >= this share of the progress made before it
CATAPULT_SHARE = 1 / 3  # C2 supported: catapults that undo much on at least this share of the starts
STEP_TOL = 1e-6  # C4: ||delta theta|| <= lr x threshold x (1 + STEP_TOL)
COSINE_TOL = 1e-6  # C4: cos(applied step, -raw gradient) >= 1 - COSINE_TOL on every step
DEFAULT_START = (5.0, -2.3)

RULE = (
    f"C1 (a check: the model is built with a wall): along w = {COLUMN_W:g}, the largest |dE/db| (maximised, not "
    f"sampled) over the median |dE/db| of the column must be >= {STEEP_RATIO:g}. "
    f"C2 (no-clip runs, one per start): a catapult is a step whose ||delta(w, b)|| >= {JUMP_RATIO:g} x the median "
    f"step before it; it undoes much if the loss right after it minus the best loss before it is >= "
    f"{UNDONE_MUCH:g} x the progress made before it (E0 - best). Supported if catapults that undo much happen on "
    f">= 1/3 of the starts; partly if catapults happen but on fewer starts or undo less; not supported if no start "
    f"has a catapult. C4 (a check: true by construction of norm clipping; norm-1 runs): passed if clipping fired "
    f"and on every step ||delta(w, b)|| <= lr x threshold x (1 + 1e-6) and cos(delta, -raw gradient recomputed at the "
    f"pre-step point) >= 1 - 1e-6; not tested if clipping never fired."
)


# ---------------------------------------------------------------- the model, vectorised
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
    E, gw, gb = loss_and_grad(W, B)
    return pd.DataFrame({"w": np.round(W.ravel(), 4), "b": np.round(B.ravel(), 4), "loss": _sig(E.ravel(), 3)})


# ---------------------------------------------------------------- the runs
def _regime(run: pd.Series) -> str:
    threshold = float(run["clip_threshold"])
    return f"norm {threshold:g}" if np.isfinite(threshold) else "none"


TRAJECTORY_STORED = ["run", "start", "w0", "b0", "clip", "step", "w", "b", "loss", "grad_norm", "step_norm", "clipped",
                     "cosine"]


def trajectory_table(runs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per run and step s = 0..S: (w, b) after step s, E and the raw gradient there, the step taken."""
    frames = []
    for _, run in runs.iterrows():
        w0, b0 = float(run.model_params["w0"]), float(run.model_params["b0"])
        rows = steps[(steps.run == run.run) & (steps.step > 0)].sort_values("step")
        rows = rows.dropna(subset=["w", "b"]) if {"w", "b"} <= set(rows.columns) else rows.iloc[:0]
        w = np.concatenate([[w0], rows.w.to_numpy(float)])
        b = np.concatenate([[b0], rows.b.to_numpy(float)])
        E, gw, gb = loss_and_grad(w, b)
        dw, db = np.diff(w, prepend=np.nan), np.diff(b, prepend=np.nan)
        step_norm = np.hypot(dw, db)
        # cos(applied step, -raw gradient at the pre-step point)
        pgw, pgb = np.concatenate([[np.nan], gw[:-1]]), np.concatenate([[np.nan], gb[:-1]])
        denominator = step_norm * np.hypot(pgw, pgb)
        with np.errstate(invalid="ignore", divide="ignore"):
            cosine = np.where(denominator > 0, -(dw * pgw + db * pgb) / denominator, np.nan)
        threshold = float(run.clip_threshold)
        frame = pd.DataFrame({
            "run": run.run, "start": f"({w0:g}, {b0:g})", "w0": w0, "b0": b0, "clip": _regime(run),
            "lr": float(run.lr), "threshold": threshold, "step": np.arange(len(w)), "w": w, "b": b, "loss": E,
            "grad_norm": np.hypot(gw, gb), "step_norm": step_norm,
            "clipped": np.concatenate([[np.nan], rows.clipped.to_numpy(float)]),
            "cosine_logged": np.concatenate([[np.nan], rows.cosine.to_numpy(float)]),
            "cosine": cosine,
            # logged loss at row s+1 = E before step s+1 = E(theta_s): the recomputation's check
            "loss_logged": np.concatenate([rows.loss.to_numpy(float), [np.nan]]),
        })
        frames.append(frame)
    columns = ["run", "start", "w0", "b0", "clip", "lr", "threshold", "step", "w", "b", "loss", "grad_norm",
               "step_norm", "clipped", "cosine_logged", "cosine", "loss_logged"]
    return pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)


JUMP_COLUMNS = ["run", "start", "w0", "b0", "clip", "lr", "threshold", "steps", "jump_step", "jump_norm",
                "typical_step", "jump_ratio", "w_before", "b_before", "w_after", "b_after", "grad_norm_before",
                "loss_start", "loss_best_before", "loss_before", "loss_after", "progress_undone", "loss_final",
                "loss_min", "loss_end_median", "loss_end_min", "loss_end_max",
                "max_step_norm", "step_bound", "max_grad_norm", "clipped_steps", "min_cosine", "min_cosine_clipped",
                "min_cosine_logged_clipped", "max_loss_check_error"]


def jump_table(trajectory: pd.DataFrame) -> pd.DataFrame:
    """Per run: its largest single step, the typical step before it, the loss before/after and the progress undone."""
    rows = []
    for (run, start, clip), t in trajectory.groupby(["run", "start", "clip"], sort=False):
        t = t.sort_values("step").reset_index(drop=True)
        if len(t) < 2:
            continue
        s = int(t.step_norm.iloc[1:].idxmax())
        before = t.iloc[:s]  # theta_0 .. theta_{s-1}
        typical = float(np.median(t.step_norm.iloc[1:s])) if s > 1 else np.nan
        e0, best, e_before, e_after = t.loss.iloc[0], before.loss.min(), t.loss.iloc[s - 1], t.loss.iloc[s]
        progress = e0 - best
        undone = (e_after - best) / progress if progress > 0 else np.nan
        clipped = t[t.clipped == 1]
        end = t.loss.tail(max(1, round(END_SHARE * len(t))))  # the last steps: a run may oscillate to its end
        rows.append({
            "run": run, "start": start, "w0": t.w0.iloc[0], "b0": t.b0.iloc[0], "clip": clip, "lr": t.lr.iloc[0],
            "threshold": t.threshold.iloc[0], "steps": int(t.step.max()), "jump_step": int(t.step.iloc[s]),
            "jump_norm": t.step_norm.iloc[s], "typical_step": typical,
            "jump_ratio": t.step_norm.iloc[s] / typical if typical > 0 else np.inf if s > 1 else np.nan,
            "w_before": t.w.iloc[s - 1], "b_before": t.b.iloc[s - 1], "w_after": t.w.iloc[s], "b_after": t.b.iloc[s],
            "grad_norm_before": t.grad_norm.iloc[s - 1], "loss_start": e0, "loss_best_before": best,
            "loss_before": e_before, "loss_after": e_after, "progress_undone": undone,
            "loss_final": t.loss.iloc[-1], "loss_min": t.loss.min(), "max_step_norm": t.step_norm.max(),
            **{f"loss_end_{k}": getattr(end, k)() for k in ("median", "min", "max")},
            "step_bound": t.lr.iloc[0] * t.threshold.iloc[0], "max_grad_norm": t.grad_norm.max(),
            "clipped_steps": int((t.clipped == 1).sum()),
            "min_cosine": float(t.cosine.min()) if t.cosine.notna().any() else np.nan,
            "min_cosine_clipped": float(clipped.cosine.min()) if len(clipped) else np.nan,
            "min_cosine_logged_clipped": float(clipped.cosine_logged.min()) if len(clipped) else np.nan,
            "max_loss_check_error": float((t.loss - t.loss_logged).abs().max()) if t.loss_logged.notna().any()
            else np.nan,
        })
    return pd.DataFrame(rows, columns=JUMP_COLUMNS)


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    trajectory = trajectory_table(runs, steps)
    return {"steepness": steepness_table(), "surface": surface_table(),
            "surface_zoom": surface_table(ZOOM_W, ZOOM_B, ZOOM_GRID),
            "trajectory": trajectory[trajectory.start == _show_start(trajectory)][TRAJECTORY_STORED],
            "jumps": jump_table(trajectory)}


# ---------------------------------------------------------------- verdicts
def _statement(claim: str) -> str:
    return {
        "C1": "Strongly non-linear objectives have cliffs: products of many large weights give huge gradients.",
        "C2": "One step at a cliff throws the parameters far and can undo much of the progress made.",
        "C4": "Norm clipping rescales the gradient when its norm exceeds a threshold: direction kept, step limited.",
    }[claim]


def _not_tested(claim: str, why: str) -> Verdict:
    return Verdict(claim, _statement(claim), why, "–", "–", "not tested")


def verdict_c1(steepness: pd.DataFrame) -> Verdict:
    """A check, not evidence: the model is built to have a wall; what is measured is how steep, without a grid."""
    if steepness is None or steepness.empty or not steepness.get("verdict_grid", pd.Series(dtype=bool)).any():
        return _not_tested("C1", "no loss-surface measurement")
    row = steepness[steepness.verdict_grid.astype(bool)].iloc[0]
    ratio = float(row["ratio"])
    others = steepness[~steepness.verdict_grid.astype(bool)]
    grids = "; ".join(f"{r['where']}: max {r['max']:.3g} / median {r['median']:.2g} = {r['ratio']:.3g}"
                      for _, r in others.iterrows())
    numbers = (f"{row['where']}: max |dE/db| {row['max']:.4g} at b = {row['b_at_max']:.6f} vs the column's median "
               f"{row['median']:.3g}: ratio {ratio:.3g} (deterministic, no seeds). On grids the wall's height depends "
               f"on where the points fall (it is thinner than any grid): {grids}")
    return Verdict("C1", _statement("C1"), "a check on Pascanu et al.'s one-unit RNN: the steepest slope of E along "
                   f"w = {COLUMN_W:g}, maximised (not sampled), over the median slope", numbers,
                   "Pascanu et al. Fig. 6 'high curvature walls'; docs/sources.md: at w = 5 max |dE/db| -> 5.75e3 at "
                   "b ~ -2.6123 vs a median of ~0.034, ratio ~1.7e5 as the resolution grows",
                   "check passed" if ratio >= STEEP_RATIO else "check failed",
                   finding=f"cliff model: a wall {ratio:.2g} x steeper than the median slope",
                   figure="cliff_surface.png")


def verdict_c2(jumps: pd.DataFrame) -> Verdict:
    none = jumps[jumps["clip"] == "none"] if jumps is not None and not jumps.empty else pd.DataFrame()
    if none.empty:
        return _not_tested("C2", "no run without clipping")
    catapult = none.jump_ratio >= JUMP_RATIO
    much = catapult & (none.progress_undone >= UNDONE_MUCH)
    n = len(none)
    if much.sum() >= CATAPULT_SHARE * n:
        verdict = "supported"
    elif catapult.any():
        verdict = "partly"
    else:
        verdict = "not supported"
    clipped = jumps[jumps["clip"] != "none"]
    cat = none[catapult]
    numbers = (f"no clip, {n} starts: catapults {fmt_rate(int(catapult.sum()), n)}, of which undoing >= "
               f"{UNDONE_MUCH:.0%} of the progress {fmt_rate(int(much.sum()), n)}; catapult size "
               f"{fmt_ci(cat.jump_norm)} vs typical step {fmt_ci(cat.typical_step)} (x {fmt_ci(cat.jump_ratio)}); "
               f"progress undone right after (share of E0 - best) {fmt_ci(cat.progress_undone)}; final loss "
               f"{fmt_ci(cat.loss_final)} vs start {fmt_ci(cat.loss_start)}")
    if len(clipped):
        numbers += (f". norm-1, same starts: largest step {fmt_ci(clipped.jump_norm)}, final loss "
                    f"{fmt_ci(clipped.loss_final)}")
    return Verdict("C2", _statement("C2"), "largest single GD step vs the median step before it, and the loss right "
                   "after it vs the best before it (no clipping, one run per start; deterministic)", numbers,
                   "Goodfellow et al. §8.2.4: a step 'can catapult the parameters very far, possibly losing most of "
                   "the optimization work'; Fig. 10.17: without clipping GD is propelled off the plot", verdict,
                   finding=f"cliff model, no clipping: {int(much.sum())}/{n} starts catapulted and undid >= "
                           f"{UNDONE_MUCH:.0%} of their progress", figure="cliff_jumps.png")


def verdict_c4(jumps: pd.DataFrame) -> Verdict:
    clipped = jumps[jumps["clip"] != "none"] if jumps is not None and not jumps.empty else pd.DataFrame()
    if clipped.empty or clipped.clipped_steps.sum() == 0:
        return _not_tested("C4", "no clipped run, or clipping never fired")
    n = len(clipped)
    bounded = clipped.max_step_norm <= clipped.step_bound * (1 + STEP_TOL)
    aligned = clipped.min_cosine >= 1 - COSINE_TOL
    verdict = "check passed" if bounded.all() and aligned.all() else "check failed"  # true by construction
    fired = int((clipped.clipped_steps > 0).sum())
    numbers = (f"norm-1 runs: step bound lr x threshold = {clipped.step_bound.iloc[0]:.3g}, held on "
               f"{fmt_rate(int(bounded.sum()), n)} runs (largest step {clipped.max_step_norm.max():.6g}); direction "
               f"kept on {fmt_rate(int(aligned.sum()), n)} runs (min cos(step, -raw grad) "
               f"{clipped.min_cosine.min():.9f}, recomputed; logged cosine on clipped steps min "
               f"{clipped.min_cosine_logged_clipped.min():.3g}); "
               f"clipping fired on {fmt_rate(fired, n)} runs, {int(clipped.clipped_steps.sum())} steps in all; raw "
               f"gradient norm up to {clipped.max_grad_norm.max():.3g}")
    return Verdict("C4", _statement("C4"), "size and direction of every clipped GD step, against the raw gradient "
                   "recomputed at the pre-step point", numbers,
                   "Pascanu et al. Algorithm 1: if ||g|| >= threshold, g <- threshold g / ||g||", verdict)


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    jumps = tables.get("jumps")
    return [verdict_c1(tables.get("steepness")), verdict_c2(jumps), verdict_c4(jumps)]


# ---------------------------------------------------------------- figures
STYLE = {"none": dict(color="black", ls="-", marker="o"), "norm 1": dict(color="#e69f00", ls="--", marker="^")}


def _style(clip: str) -> dict:
    return STYLE.get(clip, dict(color="#56b4e9", ls=":", marker="s"))


def _show_start(jumps: pd.DataFrame) -> str | None:
    if jumps is None or jumps.empty:
        return None
    default = f"({DEFAULT_START[0]:g}, {DEFAULT_START[1]:g})"
    return default if (jumps.start == default).any() else str(jumps.start.iloc[0])


def figures(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    surface, trajectory, jumps = tables.get("surface"), tables.get("trajectory"), tables.get("jumps")
    result = []
    if surface is not None and not surface.empty:
        result.append(_surface_figure(surface, tables.get("surface_zoom"), trajectory, jumps,
                                      out_dir / "cliff_surface.png"))
    if jumps is not None and not jumps.empty:
        result.append(_jumps_figure(jumps, out_dir / "cliff_jumps.png"))
    return result


def _draw_surface(ax, fig, surface: pd.DataFrame):
    pivot = surface.pivot(index="b", columns="w", values="loss")
    loss = np.clip(pivot.to_numpy(), 1e-6, None)
    mesh = ax.pcolormesh(pivot.columns, pivot.index, loss, norm=LogNorm(vmin=1e-6, vmax=0.5), cmap="viridis",
                         shading="auto")
    ax.contour(pivot.columns, pivot.index, np.log10(loss), levels=[-4, -3, -2, -1], colors="white", linewidths=0.5)
    return mesh


def _draw_paths(ax, trajectory: pd.DataFrame, start: str, surface: pd.DataFrame, annotate: bool):
    w_lim, b_lim = (surface.w.min(), surface.w.max()), (surface.b.min(), surface.b.max())
    notes = 0
    part = trajectory[trajectory.start == start]
    for clip, t in part.groupby("clip", sort=False):
        st = _style(clip)
        t = t.sort_values("step")
        ax.plot(t.w, t.b, color=st["color"], ls=st["ls"], lw=1.2, marker=st["marker"], ms=2.5,
                label=f"GD, clip={clip}")
        last = t.iloc[-1]
        if annotate and not (w_lim[0] <= last.w <= w_lim[1] and b_lim[0] <= last.b <= b_lim[1]):
            ax.text(0.02, 0.97 - 0.06 * notes, f"clip={clip}: thrown off the plot to ({last.w:.3g}, {last.b:.3g}), "
                    f"E {last.loss:.2g}", transform=ax.transAxes, color="white", fontsize=8, va="top")
            notes += 1
    first = part.iloc[0]
    ax.plot(first.w0, first.b0, marker="*", color="red", ms=14, mec="white", ls="none", label="start")
    ax.set(xlim=w_lim, ylim=b_lim)


def _surface_figure(surface, zoom, trajectory, jumps, path: Path) -> Figure:
    start = _show_start(jumps)
    has_paths = trajectory is not None and not trajectory.empty and start is not None
    has_zoom = zoom is not None and not zoom.empty
    panels = 1 + has_zoom + has_paths
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    mesh = _draw_surface(ax, fig, surface)
    if has_paths:
        _draw_paths(ax, trajectory, start, surface, annotate=True)
    if has_zoom:
        ax.add_patch(plt.Rectangle((zoom.w.min(), zoom.b.min()), zoom.w.max() - zoom.w.min(),
                                   zoom.b.max() - zoom.b.min(), fill=False, ec="white", ls=":", lw=1))
    ax.set(xlabel="w (recurrent weight)", ylabel="b (bias)", title="E over (w, b), GD trajectories")
    ax.legend(loc="lower right", fontsize=8)
    if has_zoom:
        axz = axes.pop(0)
        _draw_surface(axz, fig, zoom)
        if has_paths:
            _draw_paths(axz, trajectory, start, zoom, annotate=True)
        axz.set(xlabel="w (recurrent weight)", ylabel="b (bias)", title="zoom (dotted box on the left)")
        axz.legend(loc="lower right", fontsize=8)
    fig.colorbar(mesh, ax=ax, label="E = (sigmoid(x_50) - 0.7)^2 (log scale)")
    if has_paths:
        ax2 = axes.pop(0)
        for clip, t in trajectory[trajectory.start == start].groupby("clip", sort=False):
            st = _style(clip)
            t = t.sort_values("step")
            ax2.plot(t.step, t.loss.clip(lower=1e-12), color=st["color"], ls=st["ls"], marker=st["marker"], ms=3,
                     markevery=10, lw=1.1, label=f"clip={clip}")
        ax2.set_yscale("log")
        ax2.set(xlabel="GD step", ylabel="E at the current (w, b) (log scale)", title=f"E vs step, start {start}")
        ax2.legend(fontsize=8)
    save_figure(fig, path)
    lr = jumps.lr.iloc[0] if jumps is not None and not jumps.empty else math.nan
    return Figure(path.name, f"Left: E over (w, b) (log colour, white contours at E = 1e-4..1e-1; computed with torch "
                  f"on a {int(np.sqrt(len(surface)))}^2 grid); the sharp colour edge is the wall. Full-batch GD at lr "
                  f"{lr:g} from the start {start} (red star), without clipping (black, solid, circles) and with "
                  "norm-1 clipping (orange, dashed, triangles); middle: the same around the start. Right: E along "
                  "each trajectory against the step. One deterministic run each (no seeds, no bands).")


def _jumps_figure(jumps: pd.DataFrame, path: Path) -> Figure:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    data = jumps.sort_values(["w0", "b0"])
    order = list(dict.fromkeys(data.start))
    markers = ["o", "^", "s"][: data["clip"].nunique()]
    sns.pointplot(data=data, x="start", y="jump_norm", hue="clip", markers=markers, linestyles="none", order=order,
                  ax=ax, palette="colorblind")
    typical = data[data["clip"] == "none"].set_index("start").typical_step.reindex(order)
    ax.scatter(range(len(order)), typical, marker="x", color="gray", s=40, zorder=5,
               label="no clip: median step before its largest")
    ax.axhline(data.step_bound[np.isfinite(data.step_bound)].max() if np.isfinite(data.step_bound).any() else np.nan,
               color="gray", ls=":", lw=1, label="lr x threshold")
    ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set(xlabel="start (w0, b0)", ylabel="largest single step ||delta(w, b)|| (log)",
           title="largest step per run")
    ax.tick_params(axis="x", rotation=45)
    colours = dict(zip(dict.fromkeys(data["clip"]), sns.color_palette("colorblind")))
    for k, (clip, part) in enumerate(data.groupby("clip", sort=False)):
        x = np.array([order.index(s) for s in part.start]) + (k - 0.5) * 0.2
        mid, low, high = (part[f"loss_end_{k}"].clip(lower=1e-12) for k in ("median", "min", "max"))
        ax2.errorbar(x, mid, yerr=[mid - low, high - mid], fmt=markers[k % len(markers)], color=colours[clip], ms=7,
                     capsize=3, ls="none", label=clip)
    ax2.set_xticks(range(len(order)), order)
    starts = data.drop_duplicates("start").set_index("start").loss_start.reindex(order)
    ax2.scatter(range(len(order)), starts.clip(lower=1e-12), marker="*", color="red", s=70, zorder=5,
                label="E at the start")
    ax2.set_yscale("log")
    ax2.set(xlabel="start (w0, b0)", ylabel="E over the last 10 % of steps (log)", title="where each run ended")
    ax2.tick_params(axis="x", rotation=45)
    ax2.legend(fontsize=8)
    save_figure(fig, path)
    return Figure(path.name, f"Per start (x axis, {len(order)} starts), one deterministic GD run each without "
                  "clipping (blue circles) and with norm-1 clipping (orange triangles): left, the largest single "
                  "parameter step, with the no-clip run's median step before it (grey x) and the clipped bound "
                  "lr x threshold (dotted); right, E over each run's last 10 % of steps (marker: median; bar: min to "
                  "max, as a run may oscillate to its end), with E at the start (red star). "
                  "No seeds, so no bands.")
