"""Exploding gradients without clipping (C1, C2): do real networks show cliffs, and does a step at one undo progress?

Runs (``conf/experiment/exploding.yaml``): no clipping, plain SGD at each setup's own lr, seeds 0-3, on four setups:
digits_deep_mlp (20 tanh layers, gain 2: products of many large weights), adding_rnn (Pascanu's tanh RNN, L = 50),
charlm_lstm (the default job's LSTM at lr 16) and regression_mlp (the Keras tutorial's "exploding" MLP, unscaled
targets). Every lr is the setup's (conf/setup/), chosen there before this experiment; here ``diverge_factor`` is 100
instead of 5, so that a run goes on through a loss spike and we can see whether what it lost comes back (a run still
ends on a non-finite loss, 5 non-finite gradients in a row, or a loss 100 x its first), and held-out evaluation runs
every 25 steps so that "the first evaluation after a spike" is close to it.

C1 is read from the pre-clip gradient norm g_s of every step. A *sudden spike* is a step whose g_s is at least
SUDDEN x the smallest norm of the (up to) 5 steps before it AND at least SUDDEN x the run's median (or non-finite): the
norm rose tenfold within a few steps to a value ten times the typical one. A cliff is such a jump; the definition does
not count the large-but-decaying gradients of the first steps of training (e.g. the deep tanh net's huge gradient at
its initialisation, which then falls) nor batch-to-batch noise, which stays near the median. A gradient that grows
geometrically over several steps until the run diverges does count: a huge gradient, whatever its cause. Tail
statistics (max / median, where the max is, share of steps above 10 x the run's median) are reported beside it.

C2 is read from the held-out metric: every step that is a sudden spike, has g_s > 10 x the run's median, or is a loss
spike (loss > running median + spike_factor robust SDs of the spike_window losses before, the suite's definition,
gradclip.summary.spike_steps) is a spike step;
spike steps between two evaluations form one *episode*. For each episode: the metric at the first evaluation at or
after its first spike step against the best metric of the evaluations before it (metric units, oriented so that
positive = worse), and that as a share of the progress made so far (initial metric - best before). An episode whose
run diverged at that evaluation undid everything (share = inf). Episodes before any real progress (less than
MIN_PROGRESS = 5 % of the initial metric's magnitude, so that a tiny improvement does not make noise look like a
huge share) have no share. Only episodes that contain a gradient spike (sudden, or > 10 x the run's median) count for
C2: a loss spike alone is not a step at a cliff, and on small noisy batches (adding: 20 sequences) the suite's
loss-spike test fires on ordinary batch-to-batch noise; loss-only episodes are kept in the table and the figure.
The same share is given for the training loss (max over the 10 steps from the spike vs the best 10-step mean before
it) as a finer-grained check; the verdict uses the held-out metric.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from experiments.common import Figure, Verdict, fmt_ci, fmt_rate, save_figure, setup_label  # noqa: E402
from gradclip.summary import spike_steps as loss_spikes  # noqa: E402

NAME = "exploding"
TITLE = "Exploding gradients without clipping: cliffs in real networks, and the progress a spike undoes"
CLAIMS = ("C1", "C2")

# Fixed before the runs.
SUDDEN = 10.0  # sudden spike: g_s >= SUDDEN x the minimum of the previous WINDOW steps and >= SUDDEN x the run median
WINDOW = 5
TAIL = 10.0  # tail statistic and spike step: g_s > TAIL x the run's median
UNDONE_MUCH = 0.5  # an episode undoes much: it gives back >= half of the progress made before it
MIN_PROGRESS = 0.05  # progress counts only once it is >= this share of the initial metric's magnitude
TRAIN_WINDOW = 10
TRACE_BINS = 100  # per run, at most this many bins in the stored gradient-norm trace
QUANTILES = (0.5, 0.9, 0.99, 1.0)

RULE = (
    f"A sudden spike is a step whose pre-clip gradient norm is >= {SUDDEN:g} x the smallest of the up to {WINDOW} "
    f"steps before it and >= {SUDDEN:g} x the run's median (or non-finite). C1: a setup shows cliffs if more than "
    f"half of its seeds have a sudden spike; supported if every setup tested shows cliffs, partly if some do, not "
    f"supported if none. C2: spike steps (sudden spike, norm > {TAIL:g} x the run's median, or loss spike) "
    f"between two evaluations form an episode; it undoes "
    f"much if the held-out metric at the first evaluation after it is worse than the best before it by >= "
    f"{UNDONE_MUCH:g} x the progress made so far (progress counts once >= 5 % of the initial metric; divergence "
    f"there = all of it); only episodes with a gradient spike count. Supported if in at least one setup "
    f"more than half of the seeds have such an episode; partly if some run has one but no setup on most seeds; "
    f"not supported if episodes after progress exist but none undoes that much; not tested if none exist."
)


# ---------------------------------------------------------------- helpers
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


# ---------------------------------------------------------------- tables
def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
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


# ---------------------------------------------------------------- verdicts
STATEMENTS = {
    "C1": "Strongly non-linear objectives (RNNs, deep nets) have cliffs: products of many large weights give huge "
          "gradients.",
    "C2": "One step at a cliff throws the parameters far and can undo much of the progress made.",
}


def verdict_c1(runs: pd.DataFrame | None) -> Verdict:
    if runs is None or runs.empty:
        return Verdict("C1", STATEMENTS["C1"], "no runs", "–", "–", "not tested")
    parts, shows = [], []
    for setup, r in runs.groupby("setup", sort=False):
        has = int((r.sudden_spikes > 0).sum())
        cliff = has > len(r) / 2
        shows.append(cliff)
        parts.append(f"{setup}: sudden spikes on {fmt_rate(has, len(r))} seeds (after the first 10 % of steps: "
                     f"{int((r.sudden_spikes_after_10pct > 0).sum())}/{len(r)}), max/median {fmt_ci(r.max_over_median)}"
                     f" (max at step {', '.join(str(int(v)) for v in r.max_at_step.dropna())}), share of steps > "
                     f"{TAIL:g}x median {fmt_ci(100 * r.share_above_tail)} %, diverged "
                     f"{int(r.diverged.sum())}/{len(r)} -> {'cliffs' if cliff else 'no cliffs'}")
    verdict = "supported" if all(shows) else "partly" if any(shows) else "not supported"
    return Verdict("C1", STATEMENTS["C1"], "sudden spikes of the pre-clip gradient norm (a tenfold rise within 5 "
                   "steps to >= 10 x the run's median) and its tail, per setup, no clipping, each setup's own lr",
                   "; ".join(parts),
                   "Pascanu et al. 2013 Fig. 6, Goodfellow et al. §8.2.4 (mechanism, no rate given); docs/sources.md: "
                   "a "
                   "1x128 char-LSTM with plain SGD has a median gradient norm of ~0.2-0.3 and diverges within a few "
                   "steps at lr 32 without clipping; a transformer log: the norm stayed < 1 (clipping never fired)",
                   verdict, figure="exploding_traces.png",
                   finding="real networks without clipping: sudden gradient spikes on most seeds of "
                           + ", ".join(s for s, shown in zip(runs.setup.unique(), shows) if shown) + "; not on "
                           + (", ".join(s for s, shown in zip(runs.setup.unique(), shows) if not shown) or "none"))


def verdict_c2(episodes: pd.DataFrame | None, runs: pd.DataFrame | None) -> Verdict:
    if episodes is None or runs is None or runs.empty:
        return Verdict("C2", STATEMENTS["C2"], "no runs", "–", "–", "not tested")
    counted = episodes[_counted(episodes)] if len(episodes) else episodes
    after_progress = counted
    if len(after_progress) == 0:
        return Verdict("C2", STATEMENTS["C2"], "held-out metric after spike episodes", "no gradient-spike episode "
                       f"after any progress ({len(episodes)} episodes in all); divergences "
                       f"{int(runs.diverged.sum())}/{len(runs)} runs", "–", "not tested")
    share = pd.to_numeric(after_progress.undone_share, errors="coerce")
    much = after_progress[share >= UNDONE_MUCH]
    parts, majority = [], []
    for setup, r in runs.groupby("setup", sort=False):
        e = after_progress[after_progress.setup == setup]
        m = much[much.setup == setup]
        seeds = m.seed.nunique()
        majority.append(seeds > len(r) / 2)
        finite = pd.to_numeric(e.undone_share, errors="coerce")
        parts.append(f"{setup}: {len(e)} gradient-spike episodes after progress on {e.seed.nunique()}/{len(r)} seeds "
                     f"({int((episodes.setup == setup).sum())} episodes in all), undoing "
                     f">= {UNDONE_MUCH:.0%} on {fmt_rate(seeds, len(r))} seeds ({len(m)} episodes, "
                     f"{int(m.diverged_here.astype(bool).sum())} of them divergences); share undone "
                     f"{fmt_ci(finite[np.isfinite(finite)])}; training-loss share undone "
                     f"{fmt_ci(pd.to_numeric(e.train_undone_share, errors='coerce').replace(np.inf, np.nan))}; "
                     f"diverged runs {int(r.diverged.sum())}/{len(r)}")
    verdict = "supported" if any(majority) else "partly" if len(much) else "not supported"
    return Verdict("C2", STATEMENTS["C2"], "held-out metric at the first evaluation after a spike episode vs the "
                   "best before it, as a share of the progress made so far (no clipping, per setup over seeds)",
                   "; ".join(parts), "Goodfellow et al. §8.2.4: 'possibly losing most of the optimization work' "
                   "(no rate given); README calibration: charlm at lr 16 no-clip diverged 2/5 within 6 steps", verdict,
                   finding=f"real networks without clipping: a spike that undid >= {UNDONE_MUCH:.0%} of the progress "
                           f"on {much.seed.nunique()} of {len(runs)} runs; divergences {int(runs.diverged.sum())}/"
                           f"{len(runs)}")


def _counted(episodes: pd.DataFrame) -> pd.Series:
    """Episodes that count for C2: a gradient spike in them, and real progress before them."""
    grad = episodes.grad_spike.astype(str).str.lower().isin(["true", "1", "1.0"])
    return grad & (pd.to_numeric(episodes.progress, errors="coerce") > 0)


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    runs = tables.get("runs")
    return [verdict_c1(runs), verdict_c2(tables.get("episodes"), runs)]


# ---------------------------------------------------------------- figures
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
                  estimator="median", errorbar=("pi", 100), dodge=0.3, linestyles="none",
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
    shown = episodes.assign(share=share)[share.notna() & _counted(episodes)] if len(episodes) else episodes
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
        grad = _counted(e.assign(progress=1.0)) if len(e) else pd.Series(dtype=bool)
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
