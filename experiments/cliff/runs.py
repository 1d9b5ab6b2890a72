"""The runs, read back: each run's trajectory with E and the raw gradient recomputed at every (w, b), and per run its
largest step and the progress it undid."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.cliff.model import loss_and_grad

# Fixed before the runs.
END_SHARE = 0.1  # "where a run ended": E over its last 10 % of steps (median, and the range), not at one step
DEFAULT_START = (5.0, -2.3)


def show_start(table: pd.DataFrame | None) -> str | None:
    """The illustrated start: the setup's own, DEFAULT_START, if it was run, else the table's first."""
    if table is None or table.empty:
        return None
    default = f"({DEFAULT_START[0]:g}, {DEFAULT_START[1]:g})"
    return default if (table.start == default).any() else str(table.start.iloc[0])


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

