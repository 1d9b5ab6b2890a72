"""C6, "the usual max norm is 1": where does threshold 1 stand among thresholds 0.01 .. 100?

Each setup (charlm_lstm, regression_mlp, digits_deep_mlp) trains at its own lr (lr_scale 1, conf/setup/) with
global-norm clipping at 5 log-spaced thresholds (0.01, 0.1, 1, 10, 100: one per decade, so that the char LSTM fits the
budget; a Hydra sweep is a cartesian product, so every setup gets the same thresholds), 3 seeds. The setups' gradient
norms differ by four orders of magnitude (char LSTM ~0.2, deep MLP ~10, regression MLP ~10^3), so one fixed number
cannot sit in the same place relative to all of them: this experiment measures how much that matters. Beside the
outcome: the pre-clip gradient norm of the least-clipped stable runs, Pascanu et al.'s advice (thresholds from half to
ten times the average norm) and how often each threshold fires.

"As good as" (``near_best``, ``TOLERANCE_WORDS``) and the scores come from experiments/common.py, shared by every
experiment that compares outcomes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import (TOLERANCE_WORDS, Figure, Verdict, best_row, fmt_mid, fmt_rate, gap_text, log_y,
                                median_ci, metric_axis_label, near_best, rate_ci, save_figure, scores)

NAME = "threshold"
TITLE = "C6: is 1 the right max norm? (global-norm threshold 0.01-100 at each setup's lr)"
CLAIMS = ("C6",)

PASCANU_BAND = (0.5, 10.0)  # x the mean pre-clip gradient norm

RULE = f"""Per setup and threshold, the score is the median over the 3 seeds of the final held-out metric, a diverged
seed counting as the worst possible value; the best threshold has the best score (ties: fewer diverged seeds).
Threshold 1 is 'near the best' on a setup when its score is as good as the best threshold's score
({TOLERANCE_WORDS}) and it has no more diverged seeds than that best threshold. C6 is supported if threshold 1 is
near the best on every tested setup, partly if on some, not supported if on none; a setup is not tested when it has
no runs at threshold 1 or every threshold's score is a divergence. Reported beside the verdict, not part of it:
whether 1 lies in Pascanu's band (0.5-10x the mean pre-clip gradient norm of the runs at the largest threshold where
no seed diverged), where 1 falls relative to the median norm, and the % of steps it clips."""

STATEMENT = "The usual max norm is 1."
ANCHOR = ("Pascanu et al. 2013: 'values from half to ten times this average [gradient norm] can still yield "
          "convergence'; defaults: PyTorch/HF/nanoGPT/GPT-3/LLaMA 1.0, word_language_model and AWD-LSTM 0.25, "
          "seq2seq 5; Keras tutorial (regression MLP, per-variable clipnorm 1/2/4/8/16/32): test MSE 17.5 / 11.0 / "
          "10.1 / 10.7 / 25.3 / 87.3")


def run_norms(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: median and mean of the pre-clip global gradient norm over the steps whose gradient was applied."""
    data = steps.loc[steps.step > 0, ["run", "grad_norm", "skipped"]]
    data = data[(data.skipped.fillna(0) == 0) & np.isfinite(pd.to_numeric(data.grad_norm, errors="coerce"))]
    return data.groupby("run").grad_norm.agg(norm_median="median", norm_mean="mean").reset_index()


# ---------------------------------------------------------------- tables
def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = runs.assign(threshold=runs.clip_threshold.astype(float), score=scores(runs))
    runs = runs.merge(run_norms(steps), on="run", how="left")
    rows = []
    for (setup, threshold), part in runs.groupby(["setup_name", "threshold"], sort=True):
        finished = part[~part.diverged.astype(bool)]
        mid, lo, hi = median_ci(finished.final_metric)
        k, n = int(part.diverged.astype(bool).sum()), len(part)
        _, dlo, dhi = rate_ci(k, n)
        clipped = 100 * pd.to_numeric(part.clipped_fraction, errors="coerce")
        rows.append({"setup": setup, "threshold": threshold, "lr": float(part.lr.iloc[0]),
                     "metric": part.metric.iloc[0], "higher_is_better": bool(part.higher_is_better.iloc[0]),
                     "runs": n, "diverged": k, "div_rate": k / n, "div_lo": dlo, "div_hi": dhi,
                     "finished": len(finished), "final_median": mid, "final_lo": lo, "final_hi": hi,
                     "score_median": float(np.median(part.score)),
                     "clipped_pct_median": clipped.median(), "clipped_pct_min": clipped.min(),
                     "clipped_pct_max": clipped.max(),
                     "norm_median": part.norm_median.median(), "norm_mean": part.norm_mean.median()})
    grid = pd.DataFrame(rows)
    norms = []
    for setup, part in grid.groupby("setup", sort=False):
        stable = part[(part.diverged == 0) & np.isfinite(part.norm_mean)]
        if stable.empty:
            continue
        ref = stable.loc[stable.threshold.idxmax()]
        norms.append({"setup": setup, "reference_threshold": ref.threshold, "norm_median": ref.norm_median,
                      "norm_mean": ref.norm_mean, "band_lo": PASCANU_BAND[0] * ref.norm_mean,
                      "band_hi": PASCANU_BAND[1] * ref.norm_mean})
    norms = pd.DataFrame(norms, columns=["setup", "reference_threshold", "norm_median", "norm_mean", "band_lo",
                                         "band_hi"])
    return {"grid": grid, "norms": norms}


# ---------------------------------------------------------------- verdict
def assess(part: pd.DataFrame) -> dict | None:
    """One setup's grid rows -> best threshold, threshold-1 row and whether 1 is near the best (None: no data)."""
    part = part.sort_values("threshold")
    one = part[np.isclose(part.threshold, 1.0)]
    if part.empty or one.empty:
        return None
    higher, metric = bool(part.higher_is_better.iloc[0]), part.metric.iloc[0]
    best = best_row(part, higher)
    if not np.isfinite(best.score_median):  # no threshold trained on most seeds: nothing to be near
        return None
    one = one.iloc[0]
    near = near_best(one.score_median, best.score_median, metric, higher) and one.diverged <= best.diverged
    return {"best": best, "one": one, "near": bool(near), "metric": metric, "higher": higher}


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    grid, norms = tables.get("grid"), tables.get("norms")
    if grid is None or grid.empty:
        return [Verdict("C6", STATEMENT, "no runs", "–", ANCHOR, "not tested")]
    notes, near, tested = [], 0, 0
    for setup, part in grid.groupby("setup", sort=False):
        a = assess(part)
        if a is None:
            notes.append(f"{setup}: not tested (no runs at threshold 1, or most seeds diverged at every threshold)")
            continue
        tested += 1
        near += a["near"]
        best, one, metric, higher = a["best"], a["one"], a["metric"], a["higher"]
        band = norms[norms.setup == setup] if norms is not None and len(norms) else pd.DataFrame()
        where = ""
        if len(band):
            b = band.iloc[0]
            inside = b.band_lo <= 1.0 <= b.band_hi
            where = (f"; median pre-clip norm {b.norm_median:.3g} (mean {b.norm_mean:.3g}, at threshold "
                     f"{b.reference_threshold:g}), so 1 = {1 / b.norm_median:.2g}x the median norm, "
                     f"{'inside' if inside else 'outside'} Pascanu's band {b.band_lo:.2g}-{b.band_hi:.2g}")
        notes.append(
            f"{setup} ({metric}): best threshold {best.threshold:g}: "
            f"{fmt_mid(best.final_median, best.final_lo, best.final_hi, best.finished)}, diverged "
            f"{int(best.diverged)}/{int(best.runs)}; threshold 1: "
            f"{fmt_mid(one.final_median, one.final_lo, one.final_hi, one.finished)}, diverged "
            f"{fmt_rate(int(one.diverged), int(one.runs))}, "
            f"{gap_text(one.score_median, best.score_median, metric, higher)} "
            f"vs best, clips {one.clipped_pct_median:.0f} % of steps -> {'near' if a['near'] else 'NOT near'} the "
            f"best{where}")
    if tested == 0:
        verdict = "not tested"
    else:
        verdict = "supported" if near == tested else "partly" if near else "not supported"
    thr = ", ".join(f"{t:g}" for t in sorted(grid.threshold.unique()))
    seeds = int(grid.runs.max())
    return [Verdict("C6", STATEMENT,
                    f"final metric at global-norm thresholds {thr} (each setup's own lr, {seeds} seeds): threshold 1 "
                    f"as good as the best threshold on {near}/{tested} setups", "; ".join(notes), ANCHOR, verdict)]


# ---------------------------------------------------------------- figures
def _xpos(values: pd.Series) -> np.ndarray:
    """Plot positions: finite thresholds as they are; inf one decade beyond the largest finite one."""
    values = values.astype(float).to_numpy()
    finite = values[np.isfinite(values)]
    top = finite.max() * 10 if len(finite) else 1.0
    return np.where(np.isfinite(values), values, top)


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    grid, norms = tables.get("grid"), tables.get("norms")
    if grid is None or grid.empty:
        return []
    if norms is None:
        norms = pd.DataFrame(columns=["setup"])
    setups = list(dict.fromkeys(grid.setup))
    seeds = int(grid.runs.max())
    has_inf = bool((~np.isfinite(grid.threshold)).any())
    with sns.axes_style("whitegrid"):
        fig, axes = plt.subplots(2, len(setups), figsize=(4.8 * len(setups), 7.4), squeeze=False, sharex="col")
    for col, setup in enumerate(setups):
        part = grid[grid.setup == setup].sort_values("threshold")
        metric, higher = part.metric.iloc[0], bool(part.higher_is_better.iloc[0])
        x = _xpos(part.threshold)
        ax = axes[0, col]
        band = norms[norms.setup == setup]
        if len(band):
            b = band.iloc[0]
            ax.axvspan(b.band_lo, b.band_hi, color="0.85", zorder=0, label="Pascanu: 0.5-10x mean norm")
            ax.axvline(b.norm_median, color="0.35", ls=":", lw=1.5, label=f"median pre-clip norm ({b.norm_median:.2g})")
        ax.axvline(1.0, color="black", ls="--", lw=1, label="threshold 1")
        ok = part.finished > 0
        ax.errorbar(x[ok], part.final_median[ok],
                    yerr=[(part.final_median - part.final_lo)[ok], (part.final_hi - part.final_median)[ok]],
                    marker="o", color="black", capsize=3, lw=1.2, label="median of finished seeds, 95 % CI")
        for xi, (_, row) in zip(x, part.iterrows()):
            if row.diverged:
                ax.annotate(f"{int(row.diverged)}/{int(row.runs)}\ndiv.", (xi, 0.02),
                            xycoords=("data", "axes fraction"), ha="center", va="bottom", fontsize=7)
        finals = part.final_median[ok & (part.final_median > 0)]
        if len(finals) and finals.max() / finals.min() > 8:
            log_y(ax)
        ax.set_xscale("log")
        ax.set(ylabel=metric_axis_label(metric, higher), title=f"{setup} (lr {part.lr.iloc[0]:g})")
        ax.legend(fontsize=7, loc="best")
        ax2 = axes[1, col]
        ax2.errorbar(x, part.clipped_pct_median,
                     yerr=[part.clipped_pct_median - part.clipped_pct_min,
                           part.clipped_pct_max - part.clipped_pct_median],
                     marker="s", color="black", capsize=3, lw=1.2, label="median, bar = min-max over seeds")
        ax2.axvline(1.0, color="black", ls="--", lw=1)
        if len(band):
            ax2.axvline(band.iloc[0].norm_median, color="0.35", ls=":", lw=1.5)
        ax2.set_xscale("log")
        ax2.set(xlabel="clipping threshold (global L2 norm)" + ("; rightmost = inf" if has_inf else ""),
                ylabel="% of applied steps clipped", ylim=(-3, 103))
        ax2.legend(fontsize=7, loc="best")
    save_figure(fig, out_dir / "threshold_final.png")
    return [Figure("threshold_final.png",
                   f"Top: final held-out metric against the global-norm clipping threshold (log x), per setup at its "
                   f"own lr; dots = median over the seeds that finished (of {seeds}), bars = 95 % bootstrap interval "
                   f"of that median; 'k/n div.' = seeds that diverged; dashed line = threshold 1, dotted = median "
                   f"pre-clip gradient norm of the least-clipped stable runs, shaded = Pascanu's 0.5-10x the mean "
                   f"norm. Bottom: % of steps where clipping fired (median over {seeds} seeds, bars = min-max).")]
