"""C6, "the usual max norm is 1": where does threshold 1 stand among thresholds 0.01 .. 100?

Each setup (charlm_lstm, regression_mlp, digits_deep_mlp) trains at its own lr (lr_scale 1, conf/setup/) with
global-norm clipping at 5 log-spaced thresholds (0.01, 0.1, 1, 10, 100: one per decade, so that the char LSTM fits the
budget; a Hydra sweep is a cartesian product, so every setup gets the same thresholds), 3 seeds. The setups' gradient
norms differ by four orders of magnitude (char LSTM ~0.2, deep MLP ~10, regression MLP ~10^3), so one fixed number
cannot sit in the same place relative to all of them: this experiment measures how much that matters. Beside the
outcome: the pre-clip gradient norm of the least-clipped stable runs, Pascanu et al.'s advice (thresholds from half to
ten times the average norm) and how often each threshold fires.

The tolerance helpers (``worst``, ``near_best``, ``TOLERANCE_WORDS``) are shared with ``small_lr_vs_clip`` and
``robustness`` so all three use one definition of "as good as".
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import Figure, Verdict, fmt_rate, median_ci, rate_ci

NAME = "threshold"
TITLE = "C6: is 1 the right max norm? (global-norm threshold 0.01-100 at each setup's lr)"
CLAIMS = ("C6",)

# "As good as the best": per metric, a relative band for lower-is-better metrics, absolute points for accuracy.
# bpc has a floor (the text's entropy), so relative gaps are compressed: 5 % (~0.11 bpc at 2.2, about the seed
# spread of norm-1 runs in the calibration); MSE is unbounded and noisy across seeds: 10 %; accuracy: 2 points.
TOLERANCE = {"bpc": ("relative", 0.05), "mse": ("relative", 0.10), "accuracy": ("absolute", 0.02)}
DEFAULT_TOLERANCE = ("relative", 0.10)
TOLERANCE_WORDS = ("A is as good as B when A <= 1.05 x B for bpc, A <= 1.10 x B for MSE, A >= B - 0.02 for "
                   "accuracy (other metrics: 10 % relative)")
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


# ---------------------------------------------------------------- shared helpers (also used by the other two)
def worst(higher_is_better: bool) -> float:
    return -math.inf if higher_is_better else math.inf


def scores(runs: pd.DataFrame) -> pd.Series:
    """Final metric of a run, or the worst possible value when it diverged or ended non-finite."""
    final = pd.to_numeric(runs.final_metric, errors="coerce").astype(float)
    higher = runs.higher_is_better.astype(bool)
    bad = runs.diverged.astype(bool) | ~np.isfinite(final)
    return final.where(~bad, higher.map(worst))


def near_best(value: float, best: float, metric: str, higher_is_better: bool) -> bool:
    """Whether ``value`` is as good as ``best`` within the metric's tolerance (TOLERANCE)."""
    if not (np.isfinite(value) and np.isfinite(best)):  # a diverged (worst) score: plain comparison
        return bool(value >= best) if higher_is_better else bool(value <= best)
    kind, amount = TOLERANCE.get(metric, DEFAULT_TOLERANCE)
    if higher_is_better:
        limit = best - amount if kind == "absolute" else best - amount * abs(best)
        return bool(value >= limit - 1e-12)
    limit = best + amount if kind == "absolute" else best + amount * abs(best)
    return bool(value <= limit + 1e-12)


def gap_text(value: float, best: float, metric: str, higher_is_better: bool) -> str:
    if not (np.isfinite(value) and np.isfinite(best)):
        return "diverged" if not np.isfinite(value) else "–"
    kind, _ = TOLERANCE.get(metric, DEFAULT_TOLERANCE)
    if kind == "absolute":
        return f"{100 * (value - best):+.1f} points"
    return f"{100 * (value - best) / abs(best):+.1f} %" if best else "–"


def thresholds(runs: pd.DataFrame) -> pd.Series:
    """The clipping threshold of each run; inf when it never clips (clip=none, or threshold inf: JSON stores null)."""
    raw = pd.to_numeric(runs.clip_threshold, errors="coerce").astype(float)
    return raw.fillna(math.inf)


def run_norms(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: median and mean of the pre-clip global gradient norm over the steps whose gradient was applied."""
    data = steps.loc[steps.step > 0, ["run", "grad_norm", "skipped"]]
    data = data[(data.skipped.fillna(0) == 0) & np.isfinite(pd.to_numeric(data.grad_norm, errors="coerce"))]
    return data.groupby("run").grad_norm.agg(norm_median="median", norm_mean="mean").reset_index()


def fmt_mid(mid, lo, hi, n, digits: int = 3) -> str:
    if not np.isfinite(mid):
        return "–"
    return f"{mid:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}] (n={int(n)})"


def log_y(ax) -> None:
    """Log y axis with plain tick labels (2, 5, 10 ... not 2x10^0)."""
    import matplotlib.ticker as ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))


def metric_axis_label(metric: str, higher: bool) -> str:
    unit = {"bpc": "bits/char", "mse": "squared target units", "accuracy": "fraction correct"}.get(metric, "")
    return f"final held-out {metric}{f' ({unit})' if unit else ''}\n{'higher' if higher else 'lower'} is better"


# ---------------------------------------------------------------- tables
def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = runs.assign(threshold=thresholds(runs), score=scores(runs)).merge(run_norms(steps), on="run", how="left")
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
def best_row(part: pd.DataFrame, higher: bool) -> pd.Series:
    """The best cell by score (median final metric, diverged = worst); ties: fewer divergences, then listed first."""
    key = pd.DataFrame({"score": -part.score_median if higher else part.score_median, "diverged": part.diverged})
    return part.loc[key.sort_values(["score", "diverged"], kind="stable").index[0]]


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
    fig.tight_layout()
    fig.savefig(out_dir / "threshold_final.png", dpi=110)
    plt.close(fig)
    return [Figure("threshold_final.png",
                   f"Top: final held-out metric against the global-norm clipping threshold (log x), per setup at its "
                   f"own lr; dots = median over the seeds that finished (of {seeds}), bars = 95 % bootstrap interval "
                   f"of that median; 'k/n div.' = seeds that diverged; dashed line = threshold 1, dotted = median "
                   f"pre-clip gradient norm of the least-clipped stable runs, shaded = Pascanu's 0.5-10x the mean "
                   f"norm. Bottom: % of steps where clipping fired (median over {seeds} seeds, bars = min-max).")]
