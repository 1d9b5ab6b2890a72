"""The report's figures (matplotlib/seaborn PNGs): training loss, held-out metric, gradient norm, final metric."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from gradclip.report.tables import num, seed_text  # noqa: E402

MAX_POINTS = 1000  # points per run in a line plot; longer runs are averaged into this many bins
EVENTS = {  # a remedy's per-step event columns (> 0: it happened at that step), marked on the loss curves
    "skipped_spike": ("v", "triangle down", "step skipped: loss or gradient-norm outlier"),
    "skipped_update": ("^", "triangle up", "update skipped: too large"),
    "moments_reset": ("D", "diamond", "optimizer moments reset"),
}

@dataclass
class Figure:
    name: str
    caption: str


def _downsample(steps: pd.DataFrame, column: str) -> pd.DataFrame:
    """Per run, at most MAX_POINTS points: the mean of `column` over equal step bins (exact for short runs)."""
    frame = steps.dropna(subset=[column])
    width = max(1, math.ceil(frame.step.max() / MAX_POINTS)) if len(frame) else 1
    if width == 1:
        return frame
    frame = frame.assign(step=(frame.step // width) * width)
    return frame.groupby(["run", "group", "task", "seed", "step"], as_index=False)[column].mean()


def _log_y(ax) -> None:
    """Log y axis with plain tick labels at 1, 2, 5 x powers of ten (not 2x10^0)."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))


def _use_log(values: pd.Series) -> bool:
    finite = values[np.isfinite(values) & (values > 0)]
    return len(finite) > 0 and finite.max() / finite.min() > 8


BOUNDED = {"accuracy", "error_rate"}  # metrics in [0, 1]: never on a log axis


def _palette(groups: list) -> dict:
    """One clearly different colour per group (colorblind-safe first, then husl for more than 10)."""
    colours = sns.color_palette("colorblind") if len(groups) <= 10 else sns.color_palette("husl", len(groups))
    return dict(zip(groups, colours))


def _worse_edge(ax, higher: bool) -> float:
    """The y of the plot's worse edge: the bottom when higher is better, else the top."""
    low, high = ax.get_ylim()
    return low if higher else high


def _events(steps: pd.DataFrame) -> list[str]:
    """The EVENTS columns with at least one event in these runs."""
    return [name for name in EVENTS if name in steps and (steps[name].fillna(0) > 0).any()]


def _mark_events(ax, steps: pd.DataFrame, curves: pd.DataFrame, column: str, events: list[str],
                 colours: dict) -> list:
    """Each run's events as markers on that run's drawn curve (its value in the bin holding the step), in its
    group's colour; returns the legend's handles, one per kind of event."""
    handles = []
    for name in events:
        hits = steps.loc[steps[name].fillna(0) > 0, ["run", "group", "step"]].sort_values("step")
        if hits.empty:
            continue
        placed = pd.merge_asof(hits, curves[["run", "step", column]].sort_values("step"), on="step", by="run")
        marker, _, text = EVENTS[name]
        ax.scatter(placed.step, placed[column], marker=marker, s=28, c=[colours[g] for g in placed.group],
                   edgecolor="black", linewidth=0.6, zorder=4)
        handles.append(plt.Line2D([], [], ls="", marker=marker, markerfacecolor="white", markeredgecolor="black",
                                  label=f"{text} ({len(hits)})"))
    return handles


def _line_figure(steps: pd.DataFrame, runs: pd.DataFrame, column: str, ylabel: str, path: Path, smooth: int,
                 higher: bool = False, target: float | None = None, events: list[str] = ()) -> str:
    """Median over seeds (line) with the min-max band, one facet per task; x marks where a run diverged, on the
    worse edge. Bounded metrics stay on a linear axis; a loss whose early spikes would squash the rest is zoomed
    to its 99th percentile; a metric spanning more than 8x goes on a log axis. Returns the y scale: "zoomed", "log" or
    "linear". ``target`` is drawn as a dashed line; ``events`` (EVENTS columns) are marked on each run's curve.

    The value at the divergence step is drawn only as the x, not folded into the median.
    """
    diverged_at = runs.loc[runs.diverged].set_index("run").diverged_step
    at_divergence = steps.step.eq(steps.run.map(diverged_at))
    marks = steps[at_divergence].dropna(subset=[column])
    data = _downsample(steps[~at_divergence], column)
    if smooth > 1:
        data = data.assign(**{column: data.groupby("run")[column].transform(
            lambda s: s.rolling(smooth, min_periods=1).mean())})
    tasks = sorted(data.task.unique())
    groups = list(dict.fromkeys(runs.group))
    scale = "linear"
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.4 * len(tasks), 4.2), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        part = data[data.task == task]
        sns.lineplot(data=part, x="step", y=column, hue="group", style="group", estimator="median",
                     errorbar=("pi", 100), ax=ax, linewidth=1.4, hue_order=groups, style_order=groups,
                     palette=_palette(groups))
        values = part[column][np.isfinite(part[column])]
        bounded = column.removeprefix("val_") in BOUNDED
        if len(values) and not bounded and values.max() > 4 * values.quantile(0.99):
            ax.set_ylim(max(0, values.min() - 0.05 * abs(values.min())), values.quantile(0.99) * 1.15)
            scale = "zoomed"
        elif not bounded and _use_log(part[column]):
            _log_y(ax)
            scale = "log"
        if target is not None:
            ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
        task_marks = marks[marks.task == task]
        if len(task_marks):
            edge = _worse_edge(ax, higher)
            ax.scatter(task_marks.step, [edge] * len(task_marks), marker="x", color="black", s=40, zorder=5,
                       clip_on=False, label=f"diverged (drawn on the {'bottom' if higher else 'top'} edge)")
        marked = _mark_events(ax, steps[steps.task == task], part, column, events, _palette(groups))
        ax.legend(handles=ax.get_legend_handles_labels()[0] + marked, fontsize=8)
        ax.set(xlabel="optimizer step", ylabel=ylabel + (" (log scale)" if ax.get_yscale() == "log" else ""),
               title=task if len(tasks) > 1 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return scale


SCALE = {"linear": "", "log": "; the y axis is logarithmic",
         "zoomed": "; the y axis stops at 1.15 x the 99th percentile: early spikes go off the top"}
MAX_PANELS = 12  # gradient-norm panels drawn; a larger sweep shows its first groups (the caption says so)
DENSITY_BINS = 50  # the clipped-step density: share of steps clipped in this many bins of the run


def grad_norm_figure(steps: pd.DataFrame, runs: pd.DataFrame, path: Path) -> None:
    """Pre-clip global gradient norm per step, one panel per group, one line per seed (median over seeds in black);
    threshold marked, and below it the share of steps clipped (all seeds) in bins of the run."""
    groups = list(dict.fromkeys(runs.group))[:MAX_PANELS]
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(2 * rows, cols, figsize=(5.2 * cols, 4.4 * rows), squeeze=False, sharex=True,
                             gridspec_kw={"height_ratios": [4, 1] * rows})
    data = steps.dropna(subset=["grad_norm"])
    data = data[np.isfinite(data.grad_norm) & (data.grad_norm > 0)]
    median = data.grad_norm.median()
    low, high = data.grad_norm.min(), data.grad_norm.max()
    for n, group in enumerate(groups):
        ax, share_ax = axes[2 * (n // cols), n % cols], axes[2 * (n // cols) + 1, n % cols]
        part = data[data.group == group]
        for i, (_, run) in enumerate(part.groupby("run", sort=False)):
            ax.plot(run.step, run.grad_norm, lw=0.5, alpha=0.5, color=sns.color_palette("colorblind")[i % 10])
        ends = part[part.run.isin(runs[runs.diverged].run)].groupby("run").tail(1)
        if len(ends):
            ax.scatter(ends.step, ends.grad_norm, marker="x", s=50, color="black", zorder=5, label="diverged")
        for t in runs[runs.group == group].clip_threshold.dropna().unique():
            if np.isfinite(t):
                ax.axhline(t, color="black", ls="--", lw=1, label=f"threshold {t:g}")
        ax.axhline(median, color="gray", ls=":", lw=1, label=f"median, all runs {num(median, 2)}")
        _log_y(ax)
        ax.set_ylim(low / 1.5, high * 1.5)
        ax.set(ylabel="pre-clip gradient norm (log scale)", title=group)
        ax.tick_params(labelbottom=True, labelleft=True)
        ax.legend(fontsize=7, loc="upper right")
        bins = (part.step * DENSITY_BINS // max(1, int(part.step.max()))).clip(upper=DENSITY_BINS - 1)
        share = part.groupby(bins).clipped.mean()
        width = max(1, int(part.step.max())) / DENSITY_BINS
        share_ax.bar(share.index * width, share.values, width=width, align="edge", color="0.35")
        share_ax.set(ylim=(0, 1), xlabel="optimizer step", ylabel="clipped")
        share_ax.tick_params(labelbottom=True, labelleft=True)
    for k in range(len(groups), rows * cols):
        axes[2 * (k // cols), k % cols].set_visible(False)
        axes[2 * (k // cols) + 1, k % cols].set_visible(False)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def final_figure(runs: pd.DataFrame, path: Path) -> None:
    """Final held-out metric of every run, one point per seed, and each group's median (a bar); diverged runs are x's
    in a grey band labelled "diverged" beyond the worse edge, apart from the scale of the runs that finished."""
    groups = list(dict.fromkeys(runs.group))
    higher = bool(runs.higher_is_better.iloc[0])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(groups) + 2), 4.2))
    values = pd.to_numeric(runs.final_metric, errors="coerce").astype(float)
    basis = values[~runs.diverged & np.isfinite(values)]
    low, high = (basis.min(), basis.max()) if len(basis) else (0.0, 1.0)
    pad = 0.1 * (high - low) or 0.05 * abs(high) or 1.0
    band = (high + 2 * pad, high + 4 * pad) if not higher else (low - 4 * pad, low - 2 * pad)
    diverged_y = sum(band) / 2
    colours = _palette(groups)
    offsets = np.linspace(-0.2, 0.2, max(2, runs.groupby("group").size().max()))
    for i, group in enumerate(groups):
        part = runs[runs.group == group].reset_index(drop=True)
        finished = values[(runs.group == group) & ~runs.diverged]
        for k, run in part.iterrows():
            x = i + offsets[k % len(offsets)]
            if run.diverged:
                ax.scatter(x, diverged_y, marker="x", s=60, color="black", zorder=3)
            else:
                ax.scatter(x, values[runs.index[runs.run == run.run][0]], marker="o", s=36, color=colours[group],
                           edgecolor="black", zorder=3)
        if len(finished):
            ax.hlines(finished.median(), i - 0.3, i + 0.3, color="black", lw=2, zorder=2)
    ticks = [v for v in ax.get_yticks() if low - pad <= v <= high + pad]
    if runs.diverged.any():
        ax.axhspan(*band, color="0.88", zorder=0)
        ax.set_yticks([*ticks, diverged_y], [*(num(v) for v in ticks), "diverged"])
        ax.set_ylim(*sorted((low - pad if not higher else high + pad, band[1] if not higher else band[0])))
    else:
        ax.set_ylim(low - pad, high + pad)
    ax.set_xticks(range(len(groups)), groups, rotation=15 if len(groups) > 3 else 0)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    metric = runs.metric.iloc[0] if runs.metric.nunique() == 1 else "metric"
    ax.set(xlabel="", ylabel=f"final held-out {metric} ({'higher' if higher else 'lower'} is better)")
    handles = [plt.Line2D([], [], ls="", marker="o", color="gray", label="a run (one seed)"),
               plt.Line2D([], [], color="black", lw=2, label="median of the runs that did not diverge")]
    if runs.diverged.any():
        handles.append(plt.Line2D([], [], ls="", marker="x", color="black", label="a run that diverged"))
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))  # beside: never on a point
    fig.savefig(path, dpi=110, bbox_inches="tight")  # the legend beside the axes included
    plt.close(fig)


def make_figures(runs: pd.DataFrame, steps: pd.DataFrame, figures: Path) -> list[Figure]:
    sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")
    figures.mkdir(parents=True, exist_ok=True)
    seeds = seed_text(runs)
    metric = runs.metric.iloc[0] if runs.metric.nunique() == 1 else "task metric"
    higher = bool(runs.higher_is_better.iloc[0])
    target = _target(runs, metric)
    edge = "bottom" if higher else "top"
    smooth = max(1, int(runs.steps_run.max()) // 100)
    band = f"line: median over {seeds}; band: min to max over the seeds still running at that step"
    events = _events(steps)
    loss_scale = _line_figure(steps, runs, "loss", "training loss (nats, per batch)", figures / "loss.png", smooth,
                              events=events)
    marks = "; ".join(f"{EVENTS[name][1]}: {EVENTS[name][2]} (column {name})" for name in events)
    heldout_scale = _line_figure(steps, runs, f"val_{metric}" if metric != "task metric" else "val_loss",
                 f"held-out {metric} ({'higher' if higher else 'lower'} is better)", figures / "heldout.png", 1,
                 higher, target)
    grad_norm_figure(steps, runs, figures / "grad_norm.png")
    final_figure(runs, figures / "final.png")
    more = runs.group.nunique() > MAX_PANELS
    return [
        Figure("loss.png", f"Training loss per step{f' (running mean over {smooth} steps)' if smooth > 1 else ''}, "
                           f"by group; {band}; x: a run diverged there (its line ends)"
                           f"{f'; markers on the curve of the run where it happened, {marks}' if events else ''}"
                           f"{SCALE[loss_scale]}."),
        Figure("heldout.png", f"Held-out {metric} at each evaluation, by group; {band}; x: a run diverged, on the "
                              f"{edge} (worse) edge (its value there is not part of the median)"
                              f"{f'; dashed: the target {target:g}' if target is not None else ''}"
                              f"{SCALE[heldout_scale]}."),
        Figure("grad_norm.png", "Global L2 norm of the raw gradient at every step (log scale), one panel per group"
                                f"{f' (the first {MAX_PANELS} of {runs.group.nunique()})' if more else ''}, "
                                "one line per seed; dashed: the clipping threshold; dotted: the median over all runs; "
                                f"x: the last step of a run that diverged. Below each panel: the share of steps "
                                f"clipped (all seeds) in {DENSITY_BINS} bins of the run."),
        Figure("final.png", f"Final held-out {metric} of every run ({seeds}), one point per seed; bar: the median "
                            "of the runs that did not diverge; x in the grey band beyond the "
                            f"{edge} (worse) edge: a run that diverged (not on the scale; its metric at divergence "
                            "is in the run table)."),
    ]


def _target(runs: pd.DataFrame, metric: str) -> float | None:
    """The target on the headline metric's scale (an error-rate target of 0.05 is accuracy 0.95), if it has one."""
    first = runs.iloc[0]
    if first.target is None or not math.isfinite(float(first.target)):
        return None
    if first.target_metric == metric:
        return float(first.target)
    return 1 - float(first.target) if (first.target_metric, metric) == ("error_rate", "accuracy") else None
