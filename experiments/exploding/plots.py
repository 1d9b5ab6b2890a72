"""The figures: gradient-norm traces per setup, the tail of the gradient norm, and the progress each spike episode
undid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from experiments.common import Figure, save_figure  # noqa: E402
from experiments.exploding.rules import UNDONE_MUCH, counts_for_c2  # noqa: E402
from experiments.exploding.runs import QUANTILES, TAIL, TRACE_BINS  # noqa: E402

def figures(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    runs, traces, tails, episodes = (tables.get(k) for k in ("runs", "traces", "tails", "episodes"))
    result = []
    if traces is not None and not traces.empty and runs is not None:
        result.append(_traces_figure(traces, runs, out_dir / "exploding_traces.png"))
    if tails is not None and not tails.empty:
        result.append(_tails_figure(tails, runs, out_dir / "exploding_tails.png"))
    if runs is not None and not runs.empty and episodes is not None:
        result.append(_undone_figure(episodes, runs, out_dir / "exploding_undone.png"))
    return result


def _traces_figure(traces: pd.DataFrame, runs: pd.DataFrame, path: Path) -> Figure:
    setups = list(dict.fromkeys(runs.setup))
    cols = min(2, len(setups))
    rows = int(np.ceil(len(setups) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(6.4 * cols, 3.8 * rows), squeeze=False)
    palette = sns.color_palette("colorblind")
    styles = ["-", "--", ":", "-."]
    for ax, setup in zip(axes.flat, setups):
        part = traces[traces.setup == setup]
        for i, (seed, t) in enumerate(part.groupby("seed")):
            t = t.sort_values("step")
            ax.plot(t.step, t.grad_norm_max, color=palette[i % 10], ls=styles[i % 4], lw=0.9, label=f"seed {seed}")
        r = runs[runs.setup == setup]
        for i, (_, run) in enumerate(r.sort_values("seed").iterrows()):
            ax.axhline(run.grad_norm_median, color=palette[i % 10], lw=0.6, alpha=0.5, ls=":")
            if run.diverged and pd.notna(run.diverged_step):
                last = part[(part.seed == run.seed) & part.grad_norm_max.notna()].sort_values("step").tail(1)
                if len(last):
                    ax.scatter(last.step, last.grad_norm_max, marker="x", color="black", s=50, zorder=5)
        ax.set_yscale("log")
        ax.set(xlabel="optimizer step", ylabel="pre-clip gradient norm (max per bin, log)", title=setup)
        ax.legend(fontsize=7, ncol=2)
    for ax in list(axes.flat)[len(setups):]:
        ax.axis("off")
    save_figure(fig, path)
    seeds = runs.groupby("setup").seed.nunique().max()
    return Figure(path.name, f"Pre-clip global gradient norm per step without clipping, one panel per setup, one line "
                  f"per seed ({seeds} seeds; the maximum within bins of up to {TRACE_BINS} per run, so spikes are "
                  "kept; a run that diverged early, per step); dotted horizontal lines: each run's median; x: the last "
                  "finite norm of a run that diverged.")


def _tails_figure(tails: pd.DataFrame, runs: pd.DataFrame | None, path: Path) -> Figure:
    fig, ax = plt.subplots(figsize=(7, 4.2))
    data = tails.assign(q=tails["quantile"].map(lambda q: "max" if q == 1 else f"q{100 * q:g}"))
    order = ["max" if q == 1 else f"q{100 * q:g}" for q in QUANTILES]
    sns.pointplot(data=data, x="q", y="ratio_to_median", hue="setup", order=order, ax=ax,
                  estimator="median", errorbar=("pi", 100), dodge=0.3 if data.setup.nunique() > 1 else False,
                  linestyles="none",
                  markers=["o", "s", "^", "D", "v", "P"][: data.setup.nunique()], palette="colorblind")
    ax.axhline(TAIL, color="gray", ls=":", lw=1, label=f"{TAIL:g} x median")
    ax.set_yscale("log")
    ax.set(xlabel="quantile of the per-step gradient norm within a run",
           ylabel="gradient norm / run's median (log)", title="tail of the gradient norm, no clipping")
    ax.legend(fontsize=8)
    save_figure(fig, path)
    seeds = tails.groupby("setup").seed.nunique().max()
    return Figure(path.name, f"Quantiles of each run's gradient norms divided by the run's median, per setup (marker: "
                  f"median over {seeds} seeds; bar: min-max over seeds). Dotted: {TAIL:g} x the median.")


def _undone_figure(episodes: pd.DataFrame, runs: pd.DataFrame, path: Path) -> Figure:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 4.4), gridspec_kw={"width_ratios": [1.4, 1]})
    setups = list(dict.fromkeys(runs.setup))
    markers = dict(zip(setups, ["o", "s", "^", "D", "v", "P"]))
    palette = dict(zip(setups, sns.color_palette("colorblind")))
    share = pd.to_numeric(episodes.undone_share, errors="coerce") if len(episodes) else pd.Series(dtype=float)
    shown = episodes.assign(share=share)[share.notna() & counts_for_c2(episodes)] if len(episodes) else episodes
    top = 2.0
    for setup in setups:
        e = shown[shown.setup == setup] if len(shown) else shown
        if len(e) == 0:
            continue
        finite = e[np.isfinite(e.share)]
        ax.scatter(finite.eval_step, finite.share.clip(-1, top), marker=markers[setup], color=palette[setup],
                   s=30, alpha=0.8, label=setup)
        inf = e[~np.isfinite(e.share)]
        if len(inf):
            ax.scatter(inf.eval_step, np.full(len(inf), top * 1.05), marker="x", color=palette[setup], s=60,
                       label=f"{setup}: diverged")
    ax.axhline(UNDONE_MUCH, color="gray", ls=":", lw=1, label=f"{UNDONE_MUCH:.0%} of the progress")
    ax.axhline(0, color="black", lw=0.5)
    ax.set(xlabel="step of the evaluation after the spike episode",
           ylabel="share of progress undone (clipped to [-1, 2])", title="progress undone per spike episode",
           ylim=(-1.1, top * 1.12))
    ax.legend(fontsize=7)
    # counts per setup
    cats = ["loss spike only", "before progress", "recovered (< 0)", f"< {UNDONE_MUCH:.0%}",
            f">= {UNDONE_MUCH:.0%}", "diverged"]
    counts = []
    for setup in setups:
        e = episodes[episodes.setup == setup] if len(episodes) else episodes
        grad = counts_for_c2(e.assign(progress=1.0)) if len(e) else pd.Series(dtype=bool)
        s = pd.to_numeric(e.undone_share, errors="coerce")[grad] if len(e) else pd.Series(dtype=float)
        counts.append({"setup": setup, "loss spike only": int((~grad).sum()), cats[1]: int(s.isna().sum()),
                       cats[2]: int((s < 0).sum()),
                       cats[3]: int(((s >= 0) & (s < UNDONE_MUCH)).sum()),
                       cats[4]: int(((s >= UNDONE_MUCH) & np.isfinite(s)).sum()), cats[5]: int(np.isinf(s).sum())})
    frame = pd.DataFrame(counts).set_index("setup")[cats]
    frame.plot.barh(stacked=True, ax=ax2, color=["white", "#dddddd", "#bbbbbb", "#888888", "#444444", "black"],
                    edgecolor="black", width=0.6)
    for bar_container, hatch in zip(ax2.containers, ["", "", "//", "..", "xx", ""]):
        for bar in bar_container:
            bar.set_hatch(hatch)
    ax2.set(xlabel="spike episodes (all seeds)", ylabel="", title="episodes by progress undone")
    ax2.legend(fontsize=7)
    save_figure(fig, path)
    seeds = runs.groupby("setup").seed.nunique().max()
    return Figure(path.name, "Left: each gradient-spike episode (spike steps between two evaluations) after real "
                  "progress, as the held-out metric "
                  "at the evaluation after it minus the best before it, divided by the progress made before it "
                  "(0 = nothing lost, 1 = back to the start; x on top: the run diverged there), against the step of "
                  f"that evaluation, per setup (marker and colour), over {seeds} seeds. Right: all episodes counted "
                  "by how much they undid (grey shades and hatches), with those that had only a loss spike (white) "
                  "or came before any progress.")
