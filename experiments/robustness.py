"""C5, "less hyper-parameter trial and error": does clipping widen the range of learning rates that work?

A grid of lr (0.1, 0.3, 1, 3, 10 x each setup's lr, half-decade steps) x global-norm threshold (1, 10, 100, inf =
never clips) on the two cheap exploding setups (regression_mlp, digits_deep_mlp), 3 seeds per cell. The char LSTM is
left out to fit the budget. If clipping removes trial and error, then with clipping more of the grid's lrs end as
good as the best run of the whole grid than without it. The thresholds span the setups' pre-clip gradient norms (deep
MLP ~10, regression MLP ~10^3): one sweep cannot scale thresholds per setup, so the widest-lr finite threshold is
taken for "with clipping" (a best case for clipping: that threshold had to be found too), and threshold 1 (the usual
default, no tuning) is reported beside it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import (TOLERANCE_WORDS, Figure, Verdict, best_row, fmt_rate, median_ci, near_best, rate_ci,
                                save_figure, scores)

NAME = "robustness"
TITLE = "C5: does clipping widen the range of learning rates that work? (lr x threshold grid)"
CLAIMS = ("C5",)
RULE = f"""Per setup and (lr, threshold) cell, the score is the median over the 3 seeds of the final held-out metric,
a diverged seed counting as the worst possible value. The best score is that of the best cell of the whole grid (any
threshold, inf included; ties: fewer diverged seeds). An lr 'works' at a threshold when its cell is as good as that
best ({TOLERANCE_WORDS}). Width = number of grid lrs (of 5, half a decade apart) that work. Without clipping =
threshold inf; with clipping = the finite threshold with the largest width (ties: the smaller threshold). C5 (less
trial and error) is supported if the width with clipping is larger than without on every setup, partly if on some,
not supported if on none; a setup is not tested without both an inf and a finite threshold or when every cell's
score is a divergence."""
STATEMENT = "Clipping means less hyper-parameter trial and error (a wider range of learning rates works)."
ANCHOR = ("Zhang et al. 2020 (AWD-LSTM on PTB): lr 30 with clip 0.25 vs lr 2 without clipping; Pascanu et al. 2013: "
          "thresholds 0.5-10x the average norm 'can still yield convergence'; Keras tutorial regression MLP: test MSE "
          "17.5-87.3 over clipnorm 1-32")


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = runs.assign(threshold=runs.clip_threshold.astype(float), score=scores(runs),
                       lr_scale=runs.lr_scale.astype(float))
    rows = []
    for (setup, scale, threshold), part in runs.groupby(["setup_name", "lr_scale", "threshold"], sort=True):
        finished = part[~part.diverged.astype(bool)]
        mid, lo, hi = median_ci(finished.final_metric)
        k, n = int(part.diverged.astype(bool).sum()), len(part)
        _, dlo, dhi = rate_ci(k, n)
        rows.append({"setup": setup, "lr_scale": scale, "lr": float(part.lr.iloc[0]), "threshold": threshold,
                     "metric": part.metric.iloc[0], "higher_is_better": bool(part.higher_is_better.iloc[0]),
                     "runs": n, "diverged": k, "div_rate": k / n, "div_lo": dlo, "div_hi": dhi,
                     "finished": len(finished), "final_median": mid, "final_lo": lo, "final_hi": hi,
                     "score_median": float(np.median(part.score)),
                     "clipped_pct_median": 100 * pd.to_numeric(part.clipped_fraction, errors="coerce").median()})
    grid = pd.DataFrame(rows)
    return {"grid": grid, "width": widths(grid)}


def widths(grid: pd.DataFrame) -> pd.DataFrame:
    """Per setup: the best cell, and per threshold which grid lrs are as good as it (the rule's statistic)."""
    rows = []
    for setup, part in grid.groupby("setup", sort=False):
        higher, metric = bool(part.higher_is_better.iloc[0]), part.metric.iloc[0]
        best = best_row(part, higher)
        n_lrs = part.lr_scale.nunique()
        for threshold, cells in part.groupby("threshold", sort=True):
            good = cells[[near_best(v, best.score_median, metric, higher) for v in cells.score_median]]
            scales = sorted(good.lr_scale)
            rows.append({"setup": setup, "threshold": threshold, "metric": metric, "higher_is_better": higher,
                         "best_score": best.score_median, "best_lr_scale": best.lr_scale,
                         "best_threshold": best.threshold, "lrs_in_grid": n_lrs, "width": len(scales),
                         "decades": float(np.log10(max(scales) / min(scales))) if scales else np.nan,
                         "working_lr_scales": " ".join(f"{s:g}" for s in scales)})
    return pd.DataFrame(rows, columns=["setup", "threshold", "metric", "higher_is_better", "best_score",
                                       "best_lr_scale", "best_threshold", "lrs_in_grid", "width", "decades",
                                       "working_lr_scales"])


def compare(width: pd.DataFrame) -> list[dict]:
    """Per setup: width without clipping (inf) vs the widest finite threshold (ties: smaller) and threshold 1."""
    out = []
    for setup, part in width.groupby("setup", sort=False):
        if not np.isfinite(part.best_score.iloc[0]):  # every cell's median run diverged: nothing to compare
            continue
        inf = part[~np.isfinite(part.threshold)]
        finite = part[np.isfinite(part.threshold)].sort_values(["width", "threshold"], ascending=[False, True])
        if inf.empty or finite.empty:
            continue
        one = part[np.isclose(part.threshold, 1.0)]
        out.append({"setup": setup, "none": inf.iloc[0], "clip": finite.iloc[0],
                    "one": one.iloc[0] if len(one) else None})
    return out


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    grid = tables.get("grid")
    if grid is None or grid.empty:
        return [Verdict("C5", STATEMENT, "no runs", "–", ANCHOR, "not tested")]
    cases = compare(widths(grid))
    if not cases:
        return [Verdict("C5", STATEMENT, "no setup with both an inf and a finite threshold and a cell that trained",
                        "–", ANCHOR, "not tested")]
    wins, notes = 0, []
    for c in cases:
        none, clip, one = c["none"], c["clip"], c["one"]
        wins += bool(clip.width > none.width)
        part = grid[grid.setup == c["setup"]]
        n, seeds = int(clip.lrs_in_grid), int(part.runs.max())

        def working(r) -> str:
            listed = f" (x{r.working_lr_scales.replace(' ', ', x')})" if r.width else ""
            return f"{int(r.width)}/{n} lrs{listed}"

        def diverged(threshold) -> str:
            cells = part[part.threshold == threshold]
            return fmt_rate(int(cells.diverged.sum()), int(cells.runs.sum()))

        best = part[np.isclose(part.lr_scale, clip.best_lr_scale) & (part.threshold == clip.best_threshold)].iloc[0]
        notes.append(
            f"{c['setup']} ({clip.metric}, {seeds} seeds/cell): best cell lr x{clip.best_lr_scale:g}, threshold "
            f"{clip.best_threshold:g}: median {best.final_median:.4g} [{best.final_lo:.4g}, {best.final_hi:.4g}]; "
            f"lrs as good as it without clipping {working(none)}, with clipping (threshold {clip.threshold:g}) "
            f"{working(clip)}" + (f", at threshold 1 {working(one)}" if one is not None else "")
            + f"; runs diverged without clipping {diverged(none.threshold)}, at threshold {clip.threshold:g} "
            f"{diverged(clip.threshold)}")
    verdict = "supported" if wins == len(cases) else "partly" if wins else "not supported"
    return [Verdict("C5", STATEMENT,
                    f"number of grid lrs (0.1-10x, half-decade steps) as good as the grid's best, with the best finite "
                    f"threshold vs without clipping: wider with clipping on {wins}/{len(cases)} setups",
                    "; ".join(notes), ANCHOR, verdict)]


def _label(t: float) -> str:
    return "inf (none)" if not math.isfinite(t) else f"{t:g}"


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid = tables.get("grid")
    if grid is None or grid.empty:
        return []
    width = widths(grid)
    setups = list(dict.fromkeys(grid.setup))
    seeds = int(grid.runs.max())
    fig, axes = plt.subplots(len(setups), 2, figsize=(11.5, 4.2 * len(setups)), squeeze=False)
    for row, setup in enumerate(setups):
        part = grid[grid.setup == setup]
        metric, higher = part.metric.iloc[0], bool(part.higher_is_better.iloc[0])
        scales = sorted(part.lr_scale.unique())
        ths = sorted(part.threshold.unique())
        base_lr = float(part.lr.iloc[0] / part.lr_scale.iloc[0])
        value = part.pivot(index="lr_scale", columns="threshold", values="score_median").reindex(index=scales,
                                                                                                 columns=ths)
        rate = part.pivot(index="lr_scale", columns="threshold", values="div_rate").reindex(index=scales, columns=ths)
        div = part.pivot(index="lr_scale", columns="threshold", values="diverged").reindex(index=scales, columns=ths)
        runs = part.pivot(index="lr_scale", columns="threshold", values="runs").reindex(index=scales, columns=ths)
        good = width[width.setup == setup]
        best = good.iloc[0] if len(good) else None
        finite = value.to_numpy()[np.isfinite(value.to_numpy())]
        ax = axes[row, 0]
        if len(finite):
            positive = finite[finite > 0]
            use_log = not higher and len(positive) == len(finite) and positive.max() / positive.min() > 8
            norm = LogNorm(positive.min(), positive.max()) if use_log else Normalize(finite.min(), finite.max())
            masked = np.ma.masked_invalid(value.to_numpy(dtype=float))
            cmap = plt.get_cmap("viridis" if higher else "viridis_r").with_extremes(bad="0.3")
            image = ax.imshow(masked, cmap=cmap, norm=norm, origin="lower", aspect="auto")
            fig.colorbar(image, ax=ax, label=f"median final {metric}")
        for i, s in enumerate(scales):
            for j, t in enumerate(ths):
                v = value.loc[s, t]
                works = best is not None and near_best(v, best.best_score, metric, higher)
                text = f"{v:.3g}" if np.isfinite(v) else "diverged"
                ax.text(j, i, text + ("\n(as good\nas best)" if works else ""), ha="center", va="center",
                        fontsize=7.5, color="white", weight="bold" if works else "normal",
                        bbox=dict(boxstyle="round,pad=0.15", fc="black", alpha=0.35, lw=0))
        ax2 = axes[row, 1]
        ax2.imshow(rate.to_numpy(dtype=float), cmap="Greys", vmin=0, vmax=1, origin="lower", aspect="auto")
        for i, s in enumerate(scales):
            for j, t in enumerate(ths):
                r = rate.loc[s, t]
                ax2.text(j, i, f"{int(div.loc[s, t])}/{int(runs.loc[s, t])}" if np.isfinite(r) else "–",
                         ha="center", va="center", fontsize=9, color="white" if r > 0.5 else "black")
        for a, title in ((ax, f"{setup}: median final {metric} ({'higher' if higher else 'lower'} is better)"),
                         (ax2, f"{setup}: diverged seeds (dark = all)")):
            a.set_xticks(range(len(ths)), [_label(t) for t in ths])
            a.set_yticks(range(len(scales)), [f"x{s:g} (lr {s * base_lr:.3g})" for s in scales])
            a.set(xlabel="clipping threshold (global L2 norm; inf = no clipping)", ylabel="learning rate", title=title)
            a.grid(False)
    save_figure(fig, out_dir / "robustness_heatmap.png")
    return [Figure("robustness_heatmap.png",
                   f"lr x threshold grid per setup, {seeds} seeds per cell. Left: median final held-out metric over "
                   f"the seeds, a diverged seed counting as the worst value ('diverged' = the median run diverged; "
                   f"dark gray cell); '(as good as best)' marks the cells within the tolerance of the grid's best "
                   f"({TOLERANCE_WORDS}). Right: diverged seeds / seeds (darker = more).")]
