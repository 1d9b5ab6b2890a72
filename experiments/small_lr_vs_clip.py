"""C3 and C5: is a smaller learning rate enough, or does clipping make training faster and more predictable?

Per setup (charlm_lstm, regression_mlp, digits_deep_mlp), 5 seeds each: the setup's (large) lr without clipping, a
4x smaller lr without clipping, and the large lr with norm-1 clipping; the cartesian sweep adds the small lr with
clipping as a fourth regime, reported but not used by the rules.

Why 4x (lr_scale 0.25), fixed before the runs: the README's calibration scan found that on the char LSTM lr 4 (= 16/4)
without clipping trained 5/5 seeds smoothly while lr 16 failed. A factor just small enough to avoid the cliff is the
strongest no-clip competitor: a much smaller factor (0.1, 0.01) would make "slower" true by construction, which
would test nothing. If 4x is not small enough on a setup, the verdict says so (the robustness experiment covers lrs
down to 0.1x).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import (TOLERANCE_WORDS, Figure, Verdict, fmt_rate, log_y, median_ci, metric_axis_label,
                                near_best, rate_ci, save_figure, scores)

NAME = "small_lr_vs_clip"
TITLE = "C3/C5: a 4x smaller learning rate vs norm-1 clipping at the large one"
CLAIMS = ("C3", "C5")
SMALL_LR_SCALE = 0.25
SLOWER = 1.25  # "later" = at least 25 % more steps to the target (median over seeds)
BINS = 50  # training-loss curve: step bins per setup
LARGE, SMALL, CLIP, SMALL_CLIP = "large lr, no clip", "small lr, no clip", "large lr + clip", "small lr + clip"
ORDER = [LARGE, SMALL, CLIP, SMALL_CLIP]

RULE = f"""Regimes (5 seeds each): large lr = the setup's lr, small lr = {SMALL_LR_SCALE:g} x it, both without clipping;
large lr + norm-1 clipping (small lr + clipping is run and shown, not used). Per regime: steps to target = median over
the seeds of the first eval step at which the target is reached, a diverged or never-reaching seed counting as
infinity; spread = max - min of the final held-out metric over the finished seeds (infinite with fewer than 2);
score = median final metric, a diverged seed counting as the worst value; {TOLERANCE_WORDS}.
A is 'slower' than B when A's steps to target >= {SLOWER:g} x B's (infinity counts; both infinite: not slower) or A's
score is not as good as B's. C3, on each setup where the large lr diverged on >= 1 seed: supported there if the small
lr diverged on 0 seeds AND is slower than large lr + clip; partly if it diverged on 0 seeds but is not slower (as good
as clipping); not supported if it diverged on >= 1 seed. Overall: supported / not supported if every such setup says
so, partly otherwise, not tested if the large lr never diverged. C5, on every setup, large lr + clip against the better
no-clip regime (better score; tie: fewer divergences): 'faster' = the no-clip regime is slower than clip (as defined
above); 'more predictable' = clip has no more divergences AND (fewer divergences OR a smaller spread). Supported there
if both, partly if one, not supported if neither; overall supported / not supported if every setup says so, else
partly."""
C3_STATEMENT = "A very small learning rate avoids the cliffs but trains slowly and can get stuck."
C5_STATEMENT = "Clipping makes training faster and more predictable."
C3_ANCHOR = ("Zhang et al. 2020 (AWD-LSTM, PTB): lr 30 + clip 0.25 vs lr 2 without clipping; README calibration scan "
             "here (char LSTM, 1200 steps): lr 4 without clipping 2.18-2.25 bpc, target at step 400-450, vs lr 16 + "
             "norm-1 clipping 2.17-2.24, target at 300-350")
C5_ANCHOR = ("Pascanu et al. 2013 Table 1 (PTB chars): bpc train 1.46 (SGD) vs 1.34 (SGD + clip), test 1.50 vs 1.42; "
             "Zhang et al. 2020: clipped GD can be arbitrarily faster than fixed-step GD from a poor start")


def regime(clip: str, lr_scale: float) -> str:
    size = ("large lr" if math.isclose(lr_scale, 1.0) else "small lr" if math.isclose(lr_scale, SMALL_LR_SCALE)
            else f"lr x{lr_scale:g}")
    return f"{size}, no clip" if clip == "none" else f"{size} + clip"


# ---------------------------------------------------------------- tables
def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = runs.assign(regime=[regime(c, float(s)) for c, s in zip(runs["clip"], runs.lr_scale)],
                       score=scores(runs))
    diverged = runs.diverged.astype(bool)
    reached = pd.to_numeric(runs.steps_to_target, errors="coerce").astype(float)
    runs = runs.assign(steps_to_target_inf=reached.where(~diverged & reached.notna(), math.inf))
    per_run = runs[["setup_name", "regime", "seed", "lr", "diverged", "diverged_step", "final_metric", "score",
                    "steps_to_target_inf", "loss_spikes", "clipped_fraction", "metric", "higher_is_better"]].rename(
        columns={"setup_name": "setup", "steps_to_target_inf": "steps_to_target"})
    per_run = per_run.assign(diverged=per_run.diverged.astype(bool),
                             final_metric=pd.to_numeric(per_run.final_metric, errors="coerce"))

    rows = []
    for (setup, name), part in runs.groupby(["setup_name", "regime"], sort=True):
        finished = part[~part.diverged.astype(bool)]
        finals = pd.to_numeric(finished.final_metric, errors="coerce").astype(float)
        finals = finals[np.isfinite(finals)]
        mid, lo, hi = median_ci(finals)
        k, n = int(part.diverged.astype(bool).sum()), len(part)
        _, dlo, dhi = rate_ci(k, n)
        hit = part.steps_to_target_inf[np.isfinite(part.steps_to_target_inf)]
        rows.append({"setup": setup, "regime": name, "lr": float(part.lr.iloc[0]), "clip": part["clip"].iloc[0],
                     "metric": part.metric.iloc[0], "higher_is_better": bool(part.higher_is_better.iloc[0]),
                     "target": pd.to_numeric(part.target, errors="coerce").iloc[0] if "target" in part else np.nan,
                     "runs": n, "diverged": k, "div_rate": k / n, "div_lo": dlo, "div_hi": dhi,
                     "finished": len(finals), "final_median": mid, "final_lo": lo, "final_hi": hi,
                     "final_min": finals.min() if len(finals) else np.nan,
                     "final_max": finals.max() if len(finals) else np.nan,
                     "spread": float(finals.max() - finals.min()) if len(finals) >= 2 else math.inf,
                     "score_median": float(np.median(part.score)),
                     "reached": len(hit), "steps_to_target": float(np.median(part.steps_to_target_inf)),
                     "steps_to_target_reached": float(hit.median()) if len(hit) else np.nan,
                     "loss_spikes_median": float(pd.to_numeric(part.loss_spikes, errors="coerce").median()),
                     "loss_spikes_max": float(pd.to_numeric(part.loss_spikes, errors="coerce").max()),
                     "clipped_pct_median": 100 * float(pd.to_numeric(part.clipped_fraction, errors="coerce").median())})
    summary = pd.DataFrame(rows)
    return {"summary": summary, "runs": per_run, "curves": loss_curves(runs, steps)}


def loss_curves(runs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """Per setup, regime and step bin: median, min and max over seeds of each run's mean training loss in the bin.

    The step at which a run diverged (its loss is the blow-up itself) is left out; the runs table marks it.
    """
    info = runs[["run", "setup_name", "regime", "diverged_step"]]
    data = steps.loc[steps.step > 0, ["run", "step", "loss"]].merge(info, on="run")
    data = data[np.isfinite(pd.to_numeric(data.loss, errors="coerce"))]
    data = data[~(data.step == data.diverged_step)]
    columns = ["setup", "regime", "step", "loss_median", "loss_min", "loss_max", "seeds"]
    if data.empty:
        return pd.DataFrame(columns=columns)
    last = data.groupby("setup_name").step.transform("max")
    width = np.maximum(1, np.ceil(last / BINS)).astype(int)
    data = data.assign(bin=((data.step - 1) // width) * width + (width + 1) / 2)
    per_run = data.groupby(["setup_name", "regime", "run", "bin"], as_index=False).loss.mean()
    curves = per_run.groupby(["setup_name", "regime", "bin"]).loss.agg(
        loss_median="median", loss_min="min", loss_max="max", seeds="count").reset_index()
    return curves.rename(columns={"setup_name": "setup", "bin": "step"})[columns]


# ---------------------------------------------------------------- verdicts
def slower(a: pd.Series, b: pd.Series) -> bool:
    """Whether regime ``a`` is slower than ``b`` (RULE): >= SLOWER x the steps to target, or a worse score."""
    sa, sb = float(a.steps_to_target), float(b.steps_to_target)
    later = not (math.isinf(sa) and math.isinf(sb)) and sa >= SLOWER * sb
    worse = not near_best(float(a.score_median), float(b.score_median), a.metric, bool(a.higher_is_better))
    return bool(later or worse)


def describe(r: pd.Series) -> str:
    steps = (f"target (<= {r.target:g}) at step {r.steps_to_target:g} (median, {int(r.reached)}/{int(r.runs)} reached)"
             if np.isfinite(r.steps_to_target) else f"target reached by {int(r.reached)}/{int(r.runs)}")
    final = (f"{r.final_median:.4g} [{r.final_lo:.4g}, {r.final_hi:.4g}] (n={int(r.finished)}, range "
             f"{r.final_min:.4g}-{r.final_max:.4g})" if r.finished else "– (none finished)")
    return (f"{r.regime} (lr {r.lr:g}): diverged {fmt_rate(int(r.diverged), int(r.runs))}, final {r.metric} {final}, "
            f"{steps}, loss spikes {r.loss_spikes_median:g} (max {r.loss_spikes_max:g})")


def _combine(per_setup: list[str]) -> str:
    if not per_setup:
        return "not tested"
    if all(v == "supported" for v in per_setup):
        return "supported"
    if all(v == "not supported" for v in per_setup):
        return "not supported"
    return "partly"


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    summary = tables.get("summary")
    if summary is None or summary.empty:
        return [Verdict("C3", C3_STATEMENT, "no runs", "–", C3_ANCHOR, "not tested"),
                Verdict("C5", C5_STATEMENT, "no runs", "–", C5_ANCHOR, "not tested")]
    c3, c3_notes, c5, c5_notes = [], [], [], []
    for setup, part in summary.groupby("setup", sort=False):
        rows = {r.regime: r for _, r in part.iterrows()}
        if not all(k in rows for k in (LARGE, SMALL, CLIP)):
            c3_notes.append(f"{setup}: a regime is missing")
            continue
        large, small, clip = rows[LARGE], rows[SMALL], rows[CLIP]
        if large.diverged > 0:
            if small.diverged > 0:
                v = "not supported"
            else:
                v = "supported" if slower(small, clip) else "partly"
            c3.append(v)
            c3_notes.append(f"{setup}: {v} — {describe(large)}; {describe(small)}; {describe(clip)}")
        else:
            c3_notes.append(f"{setup}: not tested (the large lr never diverged: {describe(large)})")
        higher = bool(clip.higher_is_better)
        key = lambda r: ((-r.score_median if higher else r.score_median), r.diverged)  # noqa: E731
        other = min((large, small), key=key)
        faster = slower(other, clip)
        predictable = bool(clip.diverged <= other.diverged and
                           (clip.diverged < other.diverged or clip.spread < other.spread))
        v = "supported" if faster and predictable else "partly" if faster or predictable else "not supported"
        c5.append(v)
        c5_notes.append(f"{setup}: {v} — clip vs the better no-clip regime ({other.regime}): faster {faster}, more "
                        f"predictable {predictable} (divergences {int(clip.diverged)}/{int(clip.runs)} vs "
                        f"{int(other.diverged)}/{int(other.runs)}, final spread {clip.spread:.3g} vs "
                        f"{other.spread:.3g}); {describe(clip)}; {describe(other)}")
    seeds = int(summary.runs.max())
    return [
        Verdict("C3", C3_STATEMENT,
                f"{SMALL_LR_SCALE:g}x lr without clipping vs the setup's lr with and without norm-1 clipping, {seeds} "
                f"seeds, on the {len(c3)} setups where the large lr diverged: per setup "
                f"{', '.join(c3) if c3 else 'none'}", "; ".join(c3_notes), C3_ANCHOR, _combine(c3)),
        Verdict("C5", C5_STATEMENT,
                f"large lr + norm-1 clipping vs the better no-clip regime ({SMALL_LR_SCALE:g}x or 1x lr), {seeds} "
                f"seeds, {len(c5)} setups: per setup {', '.join(c5) if c5 else 'none'}", "; ".join(c5_notes),
                C5_ANCHOR, _combine(c5)),
    ]


# ---------------------------------------------------------------- figures
HATCHES = ["", "//", "..", "xx", "\\\\"]
STYLE = {LARGE: ("-", "o"), SMALL: ("--", "s"), CLIP: ("-.", "^"), SMALL_CLIP: (":", "D")}


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    summary, curves, per_run = tables.get("summary"), tables.get("curves"), tables.get("runs")
    if summary is None or summary.empty:
        return []
    setups = list(dict.fromkeys(summary.setup))
    regimes = [r for r in ORDER if r in set(summary.regime)] + sorted(set(summary.regime) - set(ORDER))
    colors = dict(zip(regimes, sns.color_palette("colorblind", len(regimes))))
    style = {r: STYLE.get(r, ("-", "v")) for r in regimes}
    seeds = int(summary.runs.max())

    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(1, len(setups), figsize=(5.2 * len(setups), 4.2), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        part = curves[curves.setup == setup] if curves is not None else pd.DataFrame()
        for r in regimes:
            c = part[part.regime == r]
            if c.empty:
                continue
            ls, marker = style[r]
            ax.plot(c.step, c.loss_median, ls=ls, marker=marker, markevery=max(1, len(c) // 8), ms=4,
                    color=colors[r], lw=1.5, label=r)
            ax.fill_between(c.step, c.loss_min, c.loss_max, color=colors[r], alpha=0.15, lw=0)
        values = part[["loss_min", "loss_max"]].to_numpy().ravel() if len(part) else np.array([])
        values = values[np.isfinite(values) & (values > 0)]
        if len(values) and values.max() / values.min() > 8:
            log_y(ax)
        top = ax.get_ylim()[1]
        if per_run is not None and len(per_run):
            gone = per_run[(per_run.setup == setup) & per_run.diverged.astype(bool)]
            for r, g in gone.groupby("regime"):
                ax.scatter(g.diverged_step, [top] * len(g), marker="x", s=45, color=colors.get(r, "black"),
                           clip_on=False, zorder=5, label=f"{r}: diverged ({len(g)})")
            ax.set_ylim(top=top)
        ax.set(xlabel="optimizer step", title=setup,
               ylabel="training loss, mean per step bin\n(cross-entropy in nats; MSE for regression)")
        ax.legend(fontsize=7)
    save_figure(fig, out_dir / "small_lr_vs_clip_loss.png")

    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(2, len(setups), figsize=(5.2 * len(setups), 7.2), squeeze=False,
                                 gridspec_kw={"height_ratios": [2, 1]})
    for col, setup in enumerate(setups):
        part = summary[summary.setup == setup].set_index("regime").reindex([r for r in regimes])
        part = part[part.runs.notna()]
        ax, ax2 = axes[0, col], axes[1, col]
        x = np.arange(len(part))
        metric, higher = part.metric.iloc[0], bool(part.higher_is_better.iloc[0])
        seeds_here = per_run[per_run.setup == setup] if per_run is not None else pd.DataFrame()
        for i, r in enumerate(part.index):
            _, marker = style[r]
            s = seeds_here[seeds_here.regime == r] if len(seeds_here) else pd.DataFrame()
            fin = s[~s.diverged.astype(bool)] if len(s) else s
            if len(fin):
                jitter = np.linspace(-0.15, 0.15, len(fin))
                ax.scatter(i + jitter, fin.final_metric, marker=marker, color=colors[r], s=28, zorder=3,
                           edgecolor="black", lw=0.5)
            row = part.loc[r]
            if not row.finished:
                ax.annotate("all\ndiverged", (i, 0.5), xycoords=("data", "axes fraction"), ha="center", fontsize=8)
            else:
                ax.errorbar(i + 0.3, row.final_median, yerr=[[row.final_median - row.final_lo],
                                                             [row.final_hi - row.final_median]],
                            fmt="_", ms=14, color="black", capsize=3)
        finals = pd.to_numeric(seeds_here.final_metric, errors="coerce") if len(seeds_here) else pd.Series(dtype=float)
        finals = finals[~seeds_here.diverged.astype(bool)] if len(seeds_here) else finals
        if len(finals) and (finals > 0).all() and finals.max() / finals.min() > 8:
            log_y(ax)
        ax.set_xticks(x, [""] * len(x))
        ax.set(ylabel=metric_axis_label(metric, higher), title=setup, xlim=(-0.6, len(x) - 0.4))
        for i, r in enumerate(part.index):
            row = part.loc[r]
            ax2.bar(i, 100 * row.div_rate, color=colors[r], edgecolor="black", hatch=HATCHES[i % len(HATCHES)])
            ax2.errorbar(i, 100 * row.div_rate, yerr=[[100 * (row.div_rate - row.div_lo)],
                                                      [100 * (row.div_hi - row.div_rate)]],
                         fmt="none", color="black", capsize=3)
            ax2.text(i + 0.12, 100 * row.div_rate + 3, f"{int(row.diverged)}/{int(row.runs)}", fontsize=8)
        ax2.set_xticks(x, [r.replace(", ", ",\n").replace(" + ", "\n+ ") for r in part.index], fontsize=8)
        ax2.set(ylabel="diverged seeds (%)", ylim=(0, 115), xlim=(-0.6, len(x) - 0.4))
    save_figure(fig, out_dir / "small_lr_vs_clip_final.png")
    return [
        Figure("small_lr_vs_clip_loss.png",
               f"Training loss against the step, per setup and regime (small lr = {SMALL_LR_SCALE:g}x the setup's "
               f"lr; clip = global norm 1): each run's mean loss per step bin ({BINS} bins), line = median over the "
               f"seeds still running (of {seeds}), band = min-max over them; x on the top edge = the step at which a "
               f"run diverged (it stops there)."),
        Figure("small_lr_vs_clip_final.png",
               f"Top: final held-out metric per seed (markers; finished runs only, of {seeds}) and the median of "
               f"the finished seeds with its 95 % bootstrap interval (black bar). Bottom: share of the seeds that "
               f"diverged (k/n beside each bar), with its 95 % Wilson interval."),
    ]
