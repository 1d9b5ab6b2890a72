"""The runs, read back: per run the gradient-norm statistics and sudden spikes, a binned trace, the tail quantiles,
and the spike episodes with the progress each undid."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.common import setup_label
from gradclip.summary import spike_steps as loss_spikes

# Fixed before the runs.
SUDDEN = 10.0  # sudden spike: g_s >= SUDDEN x the minimum of the previous WINDOW steps and >= SUDDEN x the run median
WINDOW = 5
TAIL = 10.0  # tail statistic and spike step: g_s > TAIL x the run's median
MIN_PROGRESS = 0.05  # progress counts only once it is >= this share of the initial metric's magnitude
TRAIN_WINDOW = 10
TRACE_BINS = 100  # per run, at most this many bins in the stored gradient-norm trace
QUANTILES = (0.5, 0.9, 0.99, 1.0)


def _bad(values, higher_is_better: bool) -> np.ndarray:
    """The metric oriented so that larger = worse (non-finite = infinitely bad)."""
    values = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(float)
    values = -values if higher_is_better else values
    return np.where(np.isfinite(values), values, np.inf)


def sudden_spikes(g: pd.Series, median: float) -> pd.Series:
    """g_s >= SUDDEN x the smallest of the (up to) WINDOW finite norms before it and >= SUDDEN x the run's median;
    a non-finite norm is a spike."""
    finite = g.where(np.isfinite(g))
    before = finite.shift(1).rolling(WINDOW, min_periods=1).min()
    return (~np.isfinite(g) & g.notna()) | ((g >= SUDDEN * before) & (g >= SUDDEN * median))


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The stored tables: `runs` (one row per run), `tails` (quantiles / median), `traces` (binned), `episodes`."""
    run_rows, trace_rows, quantile_rows, episode_rows = [], [], [], []
    for _, run in runs.iterrows():
        setup, higher = setup_label(run), bool(run.get("higher_is_better", False))
        metric = str(run.get("metric", "loss"))
        rows = steps[steps.run == run.run].sort_values("step")
        train = rows[rows.step > 0]
        applied = train[train.get("skipped", pd.Series(0, index=train.index)).fillna(0) == 0]
        g = train.grad_norm.astype(float)
        finite_g = applied.grad_norm[np.isfinite(applied.grad_norm)].astype(float)
        median = float(finite_g.median()) if len(finite_g) else np.nan
        sudden = sudden_spikes(g, median)
        above = g > TAIL * median
        loss_spike = loss_spikes(train.loss.reset_index(drop=True), float(run.spike_factor),
                                 int(run.spike_window)).set_axis(train.index)
        spike = sudden | above | loss_spike | ~np.isfinite(train.loss)
        evals = rows[rows[f"val_{metric}"].notna()] if f"val_{metric}" in rows else rows.iloc[:0]
        eval_steps = evals.step.to_numpy(int)
        bad = _bad(evals[f"val_{metric}"], higher) if len(evals) else np.array([])
        initial = bad[0] if len(bad) and eval_steps[0] == 0 else np.nan
        steps_planned = int(run.get("steps", train.step.max() if len(train) else 0) or 0)
        max_at = int(train.step[g.where(np.isfinite(g)).idxmax()]) if np.isfinite(g).any() else None
        run_rows.append({
            "run": run.run, "setup": setup, "seed": int(run.seed), "lr": run.get("lr"), "metric": metric,
            "higher_is_better": higher, "steps": steps_planned, "steps_run": int(train.step.max()) if len(train) else 0,
            "diverged": bool(run.get("diverged", False)), "diverged_step": run.get("diverged_step"),
            "diverged_reason": run.get("diverged_reason"), "grad_norm_median": median,
            "grad_norm_max": float(finite_g.max()) if len(finite_g) else np.nan, "max_at_step": max_at,
            "max_over_median": float(finite_g.max() / median) if len(finite_g) and median > 0 else np.nan,
            "share_above_tail": float((finite_g > TAIL * median).mean()) if len(finite_g) else np.nan,
            "nonfinite_grad_steps": int((~np.isfinite(g) & g.notna()).sum()),
            "sudden_spikes": int(sudden.sum()),
            "sudden_spikes_after_10pct": int((sudden & (train.step > 0.1 * steps_planned)).sum()),
            "loss_spikes": int(loss_spike.sum()), "spike_steps": int(spike.sum()),
            "metric_initial": evals[f"val_{metric}"].iloc[0] if len(evals) else np.nan,
            "metric_best": run.get("best_metric"), "metric_final": run.get("final_metric"),
        })
        for q in QUANTILES:
            ratio = float(finite_g.quantile(q) / median) if len(finite_g) and median > 0 else np.nan
            quantile_rows.append({"run": run.run, "setup": setup, "seed": int(run.seed), "quantile": q,
                                  "ratio_to_median": ratio})
        # the trace: per bin, the median and max gradient norm and the mean loss
        if len(train):
            width = max(1, int(np.ceil(int(train.step.max()) / TRACE_BINS)))  # a run that diverged early: per step
            binned = train.assign(bin=((train.step - 1) // width) * width + 1,
                                  g=g.where(np.isfinite(g)), spike=spike.astype(int))
            agg = binned.groupby("bin").agg(grad_norm_median=("g", "median"), grad_norm_max=("g", "max"),
                                            loss=("loss", "mean"), spikes=("spike", "sum")).reset_index()
            for column in ("grad_norm_median", "grad_norm_max", "loss"):  # 4 significant digits: a small CSV
                agg[column] = agg[column].map(lambda v: float(f"{v:.4g}") if np.isfinite(v) else v)
            trace_rows.append(agg.rename(columns={"bin": "step"}).assign(run=run.run, setup=setup,
                                                                         seed=int(run.seed)))
        # episodes: spike steps grouped by the evaluation that follows them
        smooth = train.loss.rolling(TRAIN_WINDOW, min_periods=1).mean()
        train_initial = float(train.loss.head(TRAIN_WINDOW).mean()) if len(train) else np.nan
        spike_steps = train.step[spike].to_numpy(int)
        grad_spike_steps = set(train.step[sudden | above].to_numpy(int))
        if len(eval_steps) == 0:
            continue
        assigned = np.searchsorted(eval_steps, spike_steps, side="left")  # index of the first eval at/after the step
        for k in np.unique(assigned):
            if k >= len(eval_steps) or k == 0:
                continue
            in_episode = spike_steps[assigned == k]
            first = int(in_episode.min())
            best_before = float(np.min(bad[:k]))
            after = float(bad[k])
            progress = initial - best_before
            progress = progress if progress >= MIN_PROGRESS * abs(initial) else 0.0 if np.isfinite(progress) else np.nan
            undone = after - best_before
            diverged_here = bool(run.get("diverged", False)) and run.get("diverged_step") == eval_steps[k]
            if diverged_here or not np.isfinite(after):
                share = np.inf if progress > 0 else np.nan
            else:
                share = undone / progress if progress > 0 else np.nan
            position = train.step.searchsorted(first)
            t_best = float(smooth.iloc[:position].min()) if position > 0 else np.nan
            t_after = float(train.loss.iloc[position:position + TRAIN_WINDOW].max())
            t_progress = train_initial - t_best
            window_g = g[train.step.isin(in_episode)]
            episode_rows.append({
                "run": run.run, "setup": setup, "seed": int(run.seed), "metric": metric, "first_spike_step": first,
                "spike_steps": len(in_episode), "grad_spike": bool(grad_spike_steps & set(in_episode.tolist())),
                "max_ratio_to_median": float(window_g.max() / median)
                if len(window_g) and median > 0 else np.nan,
                "eval_step": int(eval_steps[k]), "metric_after": _unorient(after, higher),
                "metric_best_before": _unorient(best_before, higher), "metric_initial": _unorient(initial, higher),
                "undone": undone if np.isfinite(undone) else np.inf, "progress": progress, "undone_share": share,
                "diverged_here": diverged_here, "train_undone_share": (t_after - t_best) / t_progress
                if t_progress > 0 and np.isfinite(t_after) else (np.inf if t_progress > 0 else np.nan),
            })
    episode_columns = ["run", "setup", "seed", "metric", "first_spike_step", "spike_steps", "grad_spike",
                       "max_ratio_to_median",
                       "eval_step", "metric_after", "metric_best_before", "metric_initial", "undone", "progress",
                       "undone_share", "diverged_here", "train_undone_share"]
    trace_columns = ["run", "setup", "seed", "step", "grad_norm_median", "grad_norm_max", "loss", "spikes"]
    return {
        "runs": pd.DataFrame(run_rows),
        "tails": pd.DataFrame(quantile_rows, columns=["run", "setup", "seed", "quantile", "ratio_to_median"]),
        "traces": pd.concat(trace_rows, ignore_index=True)[trace_columns] if trace_rows
        else pd.DataFrame(columns=trace_columns),
        "episodes": pd.DataFrame(episode_rows, columns=episode_columns),
    }


def _unorient(value: float, higher: bool) -> float:
    return -value if higher and np.isfinite(value) else value

