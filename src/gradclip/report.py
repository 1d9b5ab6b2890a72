"""The report of a sweep: report.md, a self-contained report.html and figures/*.png under <sweep>/report/.

Built only from the job files on disk (summary.json, metrics.csv), so it can be rebuilt at any time:
``python -m gradclip.report <sweep-dir>`` or ``gradclip-report <sweep-dir>``.
"""

from __future__ import annotations

import argparse
import base64
import html
import math
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from gradclip.files import write_atomic  # noqa: E402
from gradclip.summary import RunSummary  # noqa: E402
from gradclip.sweep import failed_runs, job_summaries, run_name  # noqa: E402

MAX_POINTS = 1000  # points per run in a line plot; longer runs are averaged into this many bins


# ---------------------------------------------------------------- loading
def load_runs(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per finished job (its summary.json) and all their metric rows, with a `group` label per run.

    Failed and unfinished jobs are left out (``failed_runs`` lists them). The group of a run is what the sweep varied
    for it: its overrides, less the seed and less those every run shares.
    """
    summaries, metrics = [], []
    for job_dir, summary in job_summaries(folder):
        if summary is None or summary.get("status") == "failed":
            continue
        run, typed = run_name(folder, job_dir), RunSummary.from_dict(summary)
        summaries.append({**asdict(typed), "run": run})
        metrics.append(pd.read_csv(job_dir / "metrics.csv").assign(run=run, seed=typed.seed))
    if not summaries:
        raise FileNotFoundError(f"{folder}: no finished runs (no summary.json below it)")
    runs = pd.DataFrame(summaries)
    runs["group"] = group_labels(runs["overrides"].tolist())
    steps = pd.concat(metrics, ignore_index=True).merge(runs[["run", "group", "task"]], on="run")
    return runs, steps


def group_labels(overrides: list[list[str]]) -> list[str]:
    parsed = [dict(o.split("=", 1) for o in run if "=" in o) for run in overrides]
    keys = []
    for run in parsed:
        keys += [k for k in run if k not in keys and k.lstrip("+~") != "seed"]
    varied = [k for k in keys if len({run.get(k) for run in parsed}) > 1]
    if not varied:
        return ["all runs"] * len(parsed)
    return [", ".join(f"{k}={run.get(k, '(default)')}" for k in varied) for run in parsed]


# ---------------------------------------------------------------- figures
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


def _line_figure(steps: pd.DataFrame, runs: pd.DataFrame, column: str, ylabel: str, path: Path, smooth: int,
                 higher: bool = False, target: float | None = None) -> bool:
    """Median over seeds (line) with the min-max band, one facet per task; x marks where a run diverged, on the
    worse edge. Bounded metrics stay on a linear axis; a loss whose early spikes would squash the rest is zoomed
    to its 99th percentile (returns True when it was). ``target`` is drawn as a dashed line.

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
    zoomed = False
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
            zoomed = True
        elif not bounded and _use_log(part[column]):
            _log_y(ax)
        if target is not None:
            ax.axhline(target, color="black", ls="--", lw=1, label=f"target {target:g}")
        task_marks = marks[marks.task == task]
        if len(task_marks):
            edge = _worse_edge(ax, higher)
            ax.scatter(task_marks.step, [edge] * len(task_marks), marker="x", color="black", s=40, zorder=5,
                       clip_on=False, label=f"diverged (drawn on the {'bottom' if higher else 'top'} edge)")
        ax.legend(fontsize=8)
        ax.set(xlabel="optimizer step", ylabel=ylabel, title=task if len(tasks) > 1 else None)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return zoomed


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
        ax.axhline(median, color="gray", ls=":", lw=1, label=f"median, all runs {median:.2g}")
        _log_y(ax)
        ax.set_ylim(low / 1.5, high * 1.5)
        ax.set(ylabel="pre-clip gradient norm", title=group)
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
    """Final held-out metric of every run, one point per seed; diverged runs are x's on the worse edge."""
    groups = list(dict.fromkeys(runs.group))
    higher = bool(runs.higher_is_better.iloc[0])
    fig, ax = plt.subplots(figsize=(max(4.5, 1.6 * len(groups) + 2), 4.2))
    values = pd.to_numeric(runs.final_metric, errors="coerce").astype(float)
    basis = values[~runs.diverged & np.isfinite(values)]
    basis = basis if len(basis) else values[np.isfinite(values)]
    low, high = (basis.min(), basis.max()) if len(basis) else (0.0, 1.0)
    pad = 0.1 * (high - low) or 0.05 * abs(high) or 1.0
    ax.set_ylim(low - pad, high + pad)
    colours = _palette(groups)
    offsets = np.linspace(-0.2, 0.2, max(2, runs.groupby("group").size().max()))
    for group in groups:
        part = runs[runs.group == group].reset_index(drop=True)
        i = groups.index(group)
        for k, run in part.iterrows():
            x = i + offsets[k % len(offsets)]
            if run.diverged:
                ax.scatter(x, low - pad if higher else high + pad, marker="x", s=50, color="black", clip_on=False,
                           zorder=3)
            else:
                ax.scatter(x, values[runs.index[runs.run == run.run][0]], marker="o", s=36, color=colours[group],
                           edgecolor="black", zorder=3)
    ax.set_xticks(range(len(groups)), groups, rotation=15 if len(groups) > 3 else 0)
    ax.set_xlim(-0.5, len(groups) - 0.5)
    metric = runs.metric.iloc[0] if runs.metric.nunique() == 1 else "metric"
    ax.set(xlabel="", ylabel=f"final held-out {metric} ({'higher' if higher else 'lower'} is better)")
    edge = "bottom" if higher else "top"
    handles = [plt.Line2D([], [], ls="", marker="o", color="gray", label="finished"),
               plt.Line2D([], [], ls="", marker="x", color="black", label=f"diverged (on the {edge} edge)")]
    ax.legend(handles=handles, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def make_figures(runs: pd.DataFrame, steps: pd.DataFrame, figures: Path) -> list[Figure]:
    sns.set_theme(style="whitegrid", palette="colorblind", context="notebook")
    figures.mkdir(parents=True, exist_ok=True)
    seeds = _seed_text(runs)
    metric = runs.metric.iloc[0] if runs.metric.nunique() == 1 else "task metric"
    higher = bool(runs.higher_is_better.iloc[0])
    target = _target(runs, metric)
    edge = "bottom" if higher else "top"
    smooth = max(1, int(runs.steps_run.max()) // 100)
    band = f"line: median over {seeds}; band: min to max over the seeds still running at that step"
    zoomed = _line_figure(steps, runs, "loss", "training loss (nats, per batch)", figures / "loss.png", smooth)
    _line_figure(steps, runs, f"val_{metric}" if metric != "task metric" else "val_loss",
                 f"held-out {metric} ({'higher' if higher else 'lower'} is better)", figures / "heldout.png", 1,
                 higher, target)
    grad_norm_figure(steps, runs, figures / "grad_norm.png")
    final_figure(runs, figures / "final.png")
    more = runs.group.nunique() > MAX_PANELS
    return [
        Figure("loss.png", f"Training loss per step{f' (running mean over {smooth} steps)' if smooth > 1 else ''}, "
                           f"by group; {band}; x: a run diverged there (its line ends)"
                           + ("; the y axis stops at 1.15 x the 99th percentile: early spikes go off the top." if zoomed
                              else ".")),
        Figure("heldout.png", f"Held-out {metric} at each evaluation, by group; {band}; x: a run diverged, on the "
                              f"{edge} (worse) edge (its value there is not part of the median)"
                              + (f"; dashed: the target {target:g}." if target is not None else ".")),
        Figure("grad_norm.png", "Global L2 norm of the raw gradient at every step (log scale), one panel per group"
                                f"{f' (the first {MAX_PANELS} of {runs.group.nunique()})' if more else ''}, "
                                "one line per seed; dashed: the clipping threshold; dotted: the median over all runs; "
                                f"x: the last step of a run that diverged. Below each panel: the share of steps "
                                f"clipped (all seeds) in {DENSITY_BINS} bins of the run."),
        Figure("final.png", f"Final held-out {metric} of every run ({seeds}), one point per seed; x: a run that "
                            f"diverged, drawn on the {edge} (worse) edge (its metric at divergence is in the run "
                            "table)."),
    ]


def _target(runs: pd.DataFrame, metric: str) -> float | None:
    """The target on the headline metric's scale (an error-rate target of 0.05 is accuracy 0.95), if it has one."""
    first = runs.iloc[0]
    if first.target is None or not math.isfinite(float(first.target)):
        return None
    if first.target_metric == metric:
        return float(first.target)
    return 1 - float(first.target) if (first.target_metric, metric) == ("error_rate", "accuracy") else None


# ---------------------------------------------------------------- tables
def _seed_text(runs: pd.DataFrame) -> str:
    counts = runs.groupby("group").size()
    n = counts.iloc[0] if counts.nunique() == 1 else f"{counts.min()}-{counts.max()}"
    return f"{n} seed{'s' if str(n) != '1' else ''}"


def _num(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{value:.{digits}g}"


def _spread(values: pd.Series, digits: int = 3) -> str:
    values = pd.to_numeric(values, errors="coerce")
    values = values[np.isfinite(values)]
    if not len(values):
        return "–"
    if len(values) == 1:
        return _num(float(values.iloc[0]), digits)
    return f"{_num(float(values.median()), digits)} [{_num(float(values.min()), digits)}, {_num(float(values.max()), digits)}]"


def group_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for group, part in runs.groupby("group", sort=False):
        diverged = part[part.diverged]
        reached = part.steps_to_target.dropna()
        target = part.target.iloc[0]
        rows.append({
            "group": group, "runs": len(part),
            f"final {part.metric.iloc[0]} (runs that finished)": _spread(part.final_metric[~part.diverged], 4),
            f"best {part.metric.iloc[0]}": _spread(part.best_metric, 4),
            "diverged (at step)": f"{len(diverged)}/{len(part)}" + (
                f" ({', '.join(str(int(s)) for s in diverged.diverged_step)})" if len(diverged) else ""),
            f"steps to {part.target_metric.iloc[0]} ≤ {_num(target)}": (
                f"{_spread(reached)} ({len(reached)}/{len(part)} reached)" if target is not None else "–"),
            "% steps clipped": _spread(100 * part.clipped_fraction, 3),
            "median grad norm": _spread(part.grad_norm_median, 2),
            "loss-spike steps": _spread(part.loss_spikes),
            "wall time (s)": _spread(part.wall_time_s, 2),
        })
    return pd.DataFrame(rows)


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "run": runs.run, "group": runs.group, "seed": runs.seed, "status": [
            f"diverged at {int(s)} ({r})" if d else "ok"
            for d, s, r in zip(runs.diverged, runs.diverged_step, runs.diverged_reason)],
        "final": runs.final_metric.map(lambda v: _num(v, 4)), "best (step)": [
            f"{_num(b, 4)} ({_num(s)})" for b, s in zip(runs.best_metric, runs.best_step)],
        "steps to target": runs.steps_to_target.map(_num),
        "% clipped": (100 * runs.clipped_fraction).map(lambda v: _num(v, 3)),
        "grad norm median / max": [f"{_num(a, 2)} / {_num(b, 2)}" for a, b in zip(runs.grad_norm_median, runs.grad_norm_max)],
        "loss-spike steps": runs.loss_spikes.map(_num),
        "non-finite steps": runs.nonfinite_steps.map(_num),
        "wall (s)": runs.wall_time_s.map(lambda v: _num(v, 2)),
    })


# ---------------------------------------------------------------- rendering
def md_text(text) -> str:
    """Config strings in Markdown as text: `<` cannot open an HTML tag, a newline cannot end a table row."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    cells = [[md_text(c).replace("|", "\\|") for c in row] for row in [frame.columns, *frame.astype(str).values]]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells[1:]])


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.astype(str).values)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def describe(runs: pd.DataFrame) -> list[str]:
    """Plain sentences on what was run, shared by every run unless a group says otherwise."""
    first = runs.iloc[0]
    data = first.data if isinstance(first.data, dict) else {}
    corpus = data.get("corpus")
    lines = [
        f"{len(runs)} runs in {runs.group.nunique()} groups ({_seed_text(runs)} each); "
        f"{int(runs.steps.max())} optimizer steps per run.",
        f"Task {', '.join(runs.task.unique())}; model {', '.join(runs.model.unique())}; optimizer "
        f"{', '.join(sorted({f'{o} lr {l:g}' for o, l in zip(runs.optim, runs.lr)}))}.",
        f"Held-out metric: {first.metric} ({'higher' if first.higher_is_better else 'lower'} is better); "
        f"target: {first.target_metric} ≤ {_num(first.target)}.",
        "Diverged = non-finite loss, loss above the configured multiple of the first step's loss, or too many "
        "non-finite gradients in a row; a diverged run stops there and is kept as a result.",
        f"Loss-spike step = a step whose training loss exceeds the median of the {first.spike_window} losses before "
        f"it by more than {first.spike_factor:g} robust SDs of them (1.4826 x their median absolute deviation; config "
        f"keys spike_factor, spike_window).",
    ]
    if corpus:
        lines.append(f"Corpus: {corpus['source']}; {sum(corpus['chars'].values())} characters; sha256 "
                     f"{corpus['sha256'][:16]}….")
    shared = runs.population.fillna(1) if "population" in runs else pd.Series([1])
    if (shared > 1).any():
        lines.append(f"Runs were trained in populations of up to {int(shared.max())} (the population launcher steps "
                     "them together): a run's wall time is its population's.")
    versions = first.versions if isinstance(first.versions, dict) else {}
    lines.append(f"Device {first.device}, {first.threads} threads; " +
                 ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    return lines


DEFAULT_JOB = {"task": "charlm", "model": "lstm", "lr": 16.0}  # the main job's lr, picked so no clipping fails


def answer(runs: pd.DataFrame) -> list[str]:
    """The report's first lines when the sweep compares two arms on shared seeds: the paired difference of the final
    held-out metric (t-interval: a bootstrap is degenerate at n <= 5) and of the divergence rate (Newcombe), with n,
    in sentences one can quote, and a warning when n is too small to say much."""
    from scipy import stats as scipy_stats

    from gradclip.stats import rate_difference

    groups = list(dict.fromkeys(runs.group))
    if len(groups) != 2:
        return []
    clipped = [g for g in groups if (runs[runs.group == g].clip_method != "none").any()]
    first = clipped[0] if len(clipped) == 1 else groups[0]
    a, b = (runs[runs.group == g].set_index("seed") for g in (first, next(g for g in groups if g != first)))
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return []
    a, b, n = a.loc[seeds], b.loc[seeds], len(seeds)
    metric, higher = a.metric.iloc[0], bool(a.higher_is_better.iloc[0])
    both = ~a.diverged.to_numpy() & ~b.diverged.to_numpy()
    d = (a.final_metric.to_numpy(float) - b.final_metric.to_numpy(float))[both]
    name_a, name_b = (str(x.group.iloc[0]) for x in (a, b))
    lines = [f"**{name_a}** vs **{name_b}**, {n} seed{'s' if n > 1 else ''} each, paired by seed (same initialisation "
             f"and batch order)."]
    if len(d) >= 2:
        half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        better = (d.mean() > 0) == higher
        lines.append(f"Final held-out {metric} ({'higher' if higher else 'lower'} is better) on the {len(d)} seeds "
                     f"where neither diverged: {a.final_metric[both].mean():.4g} with {name_a} vs "
                     f"{b.final_metric[both].mean():.4g} with {name_b}: {name_a} {'better' if better else 'worse'} by "
                     f"{abs(d.mean()):.3g} {metric} (95 % t-interval of the paired difference {name_a} − {name_b}: "
                     f"{d.mean() - half:+.3g} to {d.mean() + half:+.3g}"
                     f"{', which includes 0' if abs(d.mean()) <= half else ''}).")
    else:
        lines.append(f"Final held-out {metric}: fewer than 2 seeds where neither arm diverged, so no interval.")
    ka, kb = int(a.diverged.sum()), int(b.diverged.sum())
    iv = rate_difference(ka, n, kb, n)
    lines.append(f"Diverged: {ka}/{n} runs with {name_a}, {kb}/{n} with {name_b} (difference {100 * iv.estimate:+.0f} "
                 f"points, Newcombe 95 % interval {100 * iv.low:+.0f} to {100 * iv.high:+.0f}).")
    if n < 5:
        lines.append(f"Warning: n = {n} per arm is too few to say how big the difference is or whether it is there; "
                     f"add seeds (seed=0,1,2,...) before quoting it.")
    first_run = runs.iloc[0]
    if all(first_run.get(k) == v for k, v in DEFAULT_JOB.items()):
        lines.append("lr 16 was chosen so that no clipping fails here (README: calibration); with each arm's lr "
                     "tuned and 10 fresh seeds, see results/REPORT.md (make reproduce) for what holds.")
    return lines


def build_report(folder: str | Path) -> Path:
    """Write <folder>/report/{report.md, report.html, figures/*.png} from the job files below ``folder``.

    Failed and unfinished jobs are listed first; a report is written even when no job finished.
    """
    folder = Path(folder)
    failed = pd.DataFrame(failed_runs(folder), columns=["run", "overrides", "status", "error"])
    try:
        runs, steps = load_runs(folder)
    except FileNotFoundError:
        if failed.empty:
            raise
        runs = steps = None
    out = folder / "report"
    title = f"gradclip report: {folder.name}"
    md, body = [f"# {title}", ""], [f"<h1>{html.escape(title)}</h1>"]
    if not failed.empty:
        note = (f"{len(failed)} job(s) did not finish; they are not in the tables and figures below. A failed job's "
                "traceback is in its summary.json; rerunning the same command reruns it (finished jobs are skipped).")
        md += ["## Failed or unfinished runs", "", md_text(note), "", markdown_table(failed), ""]
        body += ["<h2>Failed or unfinished runs</h2>", f"<p>{html.escape(note)}</p>", html_table(failed)]
    if runs is not None:
        figures = make_figures(runs, steps, out / "figures")
        intro = describe(runs)
        groups, per_run = group_table(runs), run_table(runs)
        cell = "Cells: median [min, max] over seeds."
        md[2:2] = [*[f"- {md_text(line)}" for line in intro], ""]
        md += ["## Summary by group", "", cell, "", markdown_table(groups), "", "## Figures", ""]
        for fig in figures:
            md += [f"![{fig.caption}](figures/{fig.name})", "", f"*{fig.caption}*", ""]
        md += ["## Every run", "", markdown_table(per_run), ""]
        body[1:1] = ["<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in intro) + "</ul>"]
        lines = answer(runs)  # first: what the sweep says about its question, before how it was run
        if lines:
            md[2:2] = ["## The answer", "", *[part for line in lines for part in (md_text(line), "")]]
            body[1:1] = ["<h2>The answer</h2>", *[f"<p>{html.escape(line.replace('**', ''))}</p>" for line in lines]]
        body += ["<h2>Summary by group</h2>", f"<p>{html.escape(cell)}</p>", html_table(groups), "<h2>Figures</h2>"]
        for fig in figures:
            encoded = base64.b64encode((out / "figures" / fig.name).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(fig.name)}" src="data:image/png;base64,{encoded}">'
                        f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
        body += ["<h2>Every run</h2>", html_table(per_run)]
    write_atomic(out / "report.md", "\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}"
             "th{background:#eee}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    write_atomic(out / "report.html", page)
    return out / "report.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gradclip-report", description=__doc__.splitlines()[0])
    parser.add_argument("folder", help="a sweep folder (multirun/<date>/<time>) or one run's folder")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        sys.exit(f"error: {folder}: no such folder")
    try:
        path = build_report(folder)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    print(f"report: {path.resolve()}")


if __name__ == "__main__":
    main()
