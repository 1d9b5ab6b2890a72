"""B2 (beyond the post): does adaptive clipping (AutoClip, AGC, ZClip) match the best fixed threshold without tuning?

On the two setups where clipping matters and is cheap (regression_mlp: no-clip diverges, gradient norm ~10^2-10^3;
digits_deep_mlp: no-clip diverges, norm ~5-10), each at its own lr, 3 seeds:
  - no clipping;
  - global-norm clipping at 4 fixed thresholds, 0.1 / 1 / 10 / 100 (one per decade, covering both setups' gradient
    norms), whose best, picked after the runs, is the tuned baseline ("tuning cost" = 4 settings);
  - AutoClip at its default percentile 10, AGC at its default lambda 0.01, ZClip at its reference defaults (alpha
    0.97, z 2.5, warm-up 25, every step capped at max_grad_norm 1): one setting each, untuned;
  - AGC at lambda 0.16, the other end of the NFNets range, and ZClip without the cap, reported beside the defaults
    (choosing either would be tuning). With norms of 5-1000, ZClip's cap of 1 makes it norm-1 clipping on these
    setups; without it, only its spike rule clips.
The char LSTM is left out: 10 arms x 3 seeds x ~13 s would exceed this experiment's budget (300 single-core seconds)
on its own.

The sweep is one Hydra multirun with one ``clip`` axis of group options (none, norm, norm/0.1, norm/10, norm/100,
autoclip, agc, agc/0.16, zclip, zclip/nocap), so no run is repeated.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import (DEFAULT_TOLERANCE, TOLERANCE, TOLERANCE_WORDS, Figure, Verdict, gap_text, log_y,
                                median_ci, metric_axis_label, near_best, save_figure, scores)

NAME = "adaptive"
TITLE = "B2: adaptive clipping (AutoClip, AGC, ZClip) at its defaults vs the best of 4 fixed norm thresholds"
CLAIMS = ("B2",)
DEFAULTS = {"autoclip": ("percentile", 10.0), "agc": ("clip_factor", 0.01), "zclip": ("z_thresh", 2.5)}
NAMES = {"autoclip": "AutoClip", "agc": "AGC", "zclip": "ZClip"}
RANK = {"supported": 2, "partly": 1, "not supported": 0}

RULE = f"""Per setup and arm (3 seeds), score = median final held-out metric, a diverged seed counting as the worst
value. The best fixed threshold is the global-norm threshold (of 0.1, 1, 10, 100) with the best score (ties: fewer
diverged seeds, then the smaller threshold), picked after the runs: its tuning cost is the 4 settings run. An adaptive
method at its default setting (AutoClip percentile 10, AGC lambda 0.01, ZClip alpha 0.97 / z 2.5 / warm-up 25 / cap
1; tuning cost 1) matches on a setup when its score is as good as the best fixed threshold's ({TOLERANCE_WORDS}) and none
of its seeds diverged. A method is supported if it matches on every setup, partly if on some, not supported if on
none. The B2 verdict is the best default method's (supported > partly > not supported; ties: more setups matched,
then the smaller mean gap); which method that is, is said. AGC at lambda 0.16 and ZClip without its cap are judged the
same way and reported, but not used for the verdict (picking between two settings is tuning)."""

STATEMENT = "Adaptive clipping (AutoClip, AGC, ZClip) matches the best fixed threshold without tuning it."
ANCHOR = ("AutoClip (Seetharaman et al. 2020): clip at the p-th percentile of past norms, best p ~ 10 (unverified); "
          "AGC (Brock et al. 2021): unit-wise lambda 0.01..0.16, final layer not clipped; ZClip (2025, reference code "
          "bluorion-com/ZClip, zclip 1.0.0): alpha 0.97, z 2.5, warm-up 25, max_grad_norm 1")


# ---------------------------------------------------------------- arms
def _param(params, key, default=math.nan) -> float:
    if isinstance(params, dict) and params.get(key) is not None:
        return float(params[key])
    return default


def arm_of(method: str, threshold, params) -> tuple[str, str, float, bool]:
    """(label, family, setting, default_setting) of a run's clipping: family none / fixed / adaptive."""
    threshold = math.inf if threshold is None else float(threshold)  # None: no fixed threshold (adaptive methods)
    if method == "none" or (method == "norm" and not np.isfinite(threshold)):
        return "none", "none", math.inf, True
    if method == "norm":
        return f"norm {threshold:g}", "fixed", threshold, True
    if method in DEFAULTS:
        key, default = DEFAULTS[method]
        value = _param(params, key, default)
        symbol = {"autoclip": "p", "agc": "λ ", "zclip": "z "}[method]
        capless = method == "zclip" and isinstance(params, dict) and params.get("max_grad_norm") is None
        return (f"{NAMES[method]} {symbol}{value:g}{' no cap' if capless else ''}", "adaptive", value,
                bool(np.isclose(value, default)) and not capless)
    return method, "other", threshold, True


def _arms(runs: pd.DataFrame) -> pd.DataFrame:
    params = runs.clip_params if "clip_params" in runs else pd.Series([None] * len(runs), index=runs.index)
    values = [arm_of(m, t, p) for m, t, p in zip(runs.clip_method, runs.clip_threshold, params)]
    return runs.assign(setup=runs.setup_name, method=runs.clip_method.astype(str),
                       arm=[v[0] for v in values], family=[v[1] for v in values],
                       setting=[v[2] for v in values], default_setting=[v[3] for v in values], score=scores(runs))


def _order(frame: pd.DataFrame) -> pd.DataFrame:
    family = frame.family.map({"none": 0, "fixed": 1, "adaptive": 2}).fillna(3)
    method = frame.method.map({"autoclip": 0, "agc": 1, "zclip": 2}).fillna(-1)
    return (frame.assign(_f=family, _m=method).sort_values(["setup", "_f", "_m", "setting"], kind="stable")
            .drop(columns=["_f", "_m"]).reset_index(drop=True))


# ---------------------------------------------------------------- tables
def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = _arms(runs)
    per_run = runs[["setup", "arm", "family", "method", "setting", "default_setting", "seed", "lr", "diverged",
                    "diverged_step", "final_metric", "score", "steps_to_target", "clipped_fraction", "metric",
                    "higher_is_better"]].copy()
    per_run["clipped_pct"] = 100 * pd.to_numeric(per_run.clipped_fraction, errors="coerce")
    rows = []
    for (setup, arm), part in runs.groupby(["setup", "arm"], sort=False):
        finished = part[~part.diverged.astype(bool)]
        mid, lo, hi = median_ci(finished.final_metric)
        finals = pd.to_numeric(finished.final_metric, errors="coerce")
        reached = pd.to_numeric(part.steps_to_target, errors="coerce").dropna()
        family = part.family.iloc[0]
        n_fixed = runs[(runs.setup == setup) & (runs.family == "fixed")].arm.nunique()
        rows.append({"setup": setup, "arm": arm, "family": family, "method": part.method.iloc[0],
                     "setting": float(part.setting.iloc[0]), "default_setting": bool(part.default_setting.iloc[0]),
                     "tuning_cost": n_fixed if family == "fixed" else 1, "lr": float(part.lr.iloc[0]),
                     "runs": len(part), "diverged": int(part.diverged.astype(bool).sum()), "finished": len(finished),
                     "final_median": mid, "final_lo": lo, "final_hi": hi, "final_min": finals.min(),
                     "final_max": finals.max(), "score_median": float(np.median(part.score)),
                     "steps_to_target": reached.median() if len(reached) else np.nan, "reached": len(reached),
                     "clipped_pct_median": 100 * pd.to_numeric(part.clipped_fraction, errors="coerce").median(),
                     "metric": part.metric.iloc[0], "higher_is_better": bool(part.higher_is_better.iloc[0]),
                     "target_metric": part.target_metric.iloc[0], "target": part.target.iloc[0]})
    outcomes = _order(pd.DataFrame(rows)) if rows else pd.DataFrame()
    return {"outcomes": outcomes, "runs": _order(per_run) if len(per_run) else per_run,
            "comparison": compare(outcomes)}


# ---------------------------------------------------------------- verdict
def best_fixed(part: pd.DataFrame) -> pd.Series | None:
    """The best fixed-threshold row of one setup (best score; ties: fewer diverged, then smaller threshold)."""
    fixed = part[part.family == "fixed"]
    if fixed.empty:
        return None
    higher = bool(fixed.higher_is_better.iloc[0])
    key = fixed.assign(_s=-fixed.score_median if higher else fixed.score_median)
    return fixed.loc[key.sort_values(["_s", "diverged", "setting"]).index[0]]


def compare(outcomes: pd.DataFrame) -> pd.DataFrame:
    """Per setup and adaptive arm: the best fixed threshold, the gap and whether the arm matches it."""
    rows = []
    if outcomes is None or outcomes.empty:
        return pd.DataFrame(columns=["setup", "arm", "method", "default_setting", "best_fixed", "matches"])
    for setup, part in outcomes.groupby("setup", sort=False):
        best = best_fixed(part)
        if best is None:
            continue
        metric, higher = best.metric, bool(best.higher_is_better)
        for _, r in part[part.family == "adaptive"].iterrows():
            good = near_best(r.score_median, best.score_median, metric, higher)
            gap = ((best.score_median - r.score_median) if higher else (r.score_median - best.score_median))
            rel = gap / abs(best.score_median) if np.isfinite(gap) and best.score_median else math.inf
            rows.append({"setup": setup, "arm": r.arm, "method": r.method, "default_setting": bool(r.default_setting),
                         "score": r.score_median, "diverged": int(r.diverged), "runs": int(r.runs),
                         "best_fixed": best.arm, "best_fixed_score": best.score_median,
                         "best_fixed_diverged": int(best.diverged), "gap": gap, "relative_gap": rel,
                         "gap_text": gap_text(r.score_median, best.score_median, metric, higher),
                         "as_good": bool(good), "matches": bool(good and r.diverged == 0), "metric": metric})
    return pd.DataFrame(rows)


def _fmt(row) -> str:
    if not np.isfinite(row.final_median):
        return "–"
    return f"{row.final_median:.3g} [{row.final_lo:.3g}, {row.final_hi:.3g}] (n={int(row.finished)})"


def method_verdicts(comparison: pd.DataFrame, setups: int) -> dict[str, tuple[str, int, float]]:
    """arm -> (verdict, setups matched, mean relative gap) for every adaptive arm."""
    out = {}
    for arm, part in comparison.groupby("arm", sort=False):
        matched = int(part.matches.sum())
        verdict = "supported" if matched == setups and len(part) == setups else "partly" if matched else \
            "not supported"
        gaps = part.relative_gap.replace([np.inf, -np.inf], np.nan)
        out[arm] = (verdict, matched, float(gaps.mean()) if gaps.notna().any() else math.inf)
    return out


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    outcomes = tables.get("outcomes")
    if outcomes is None or outcomes.empty:
        return [Verdict("B2", STATEMENT, "no runs", "–", ANCHOR, "not tested")]
    comparison = compare(outcomes)
    setups = comparison.setup.nunique() if len(comparison) else 0
    if setups == 0:
        return [Verdict("B2", STATEMENT, "no setup with both fixed thresholds and an adaptive method", "–", ANCHOR,
                        "not tested")]
    results = method_verdicts(comparison, setups)
    defaults = comparison[comparison.default_setting].arm.unique()
    if len(defaults) == 0:
        return [Verdict("B2", STATEMENT, "no adaptive method at its default setting", "–", ANCHOR, "not tested")]
    best = sorted(defaults, key=lambda a: (-RANK[results[a][0]], -results[a][1], results[a][2]))[0]
    notes, per_run = [], tables.get("runs", pd.DataFrame())
    for setup, part in outcomes.groupby("setup", sort=False):
        fixed_best = best_fixed(part)
        none = part[part.family == "none"]
        text = f"{setup} ({part.metric.iloc[0]}, {int(part.runs.max())} seeds per arm): "
        if len(none):
            n = none.iloc[0]
            text += f"no clip {_fmt(n)}, diverged {int(n.diverged)}/{int(n.runs)}; "
        fixed = part[part.family == "fixed"]
        text += "fixed thresholds (score): " + ", ".join(
            f"{r.arm[5:]}: " + (f"{r.score_median:.3g}" if np.isfinite(r.score_median) else "diverged")
            + (f" ({int(r.diverged)}/{int(r.runs)} div.)" if r.diverged else "") for r in fixed.itertuples())
        if fixed_best is not None:
            text += (f"; best fixed = {fixed_best.arm} {_fmt(fixed_best)}, diverged {int(fixed_best.diverged)}/"
                     f"{int(fixed_best.runs)}, tuning cost {int(fixed_best.tuning_cost)} settings")
        for r in comparison[comparison.setup == setup].itertuples():
            o = part[part.arm == r.arm].iloc[0]
            steps = (f"target at {o.steps_to_target:g} ({int(o.reached)}/{int(o.runs)})" if o.reached
                     else "target not reached")
            same = twins(per_run, setup, r.arm)
            text += (f"; {r.arm}{'' if r.default_setting else ' (not default)'} {_fmt(o)}, diverged {r.diverged}/"
                     f"{r.runs}, {r.gap_text} vs best, clips {o.clipped_pct_median:.0f} %, {steps}"
                     f"{f', seed for seed the same final metric as {same}' if same else ''} -> "
                     f"{'matches' if r.matches else 'does NOT match'}")
        notes.append(text)
    per_method = "; ".join(f"{arm}: {v} ({m}/{setups} setups)" for arm, (v, m, _) in results.items())
    numbers = (f"Per method: {per_method}. B2 verdict = the best default method's: {best}. " + " | ".join(notes))
    measured = (f"final held-out metric (3 seeds) of AutoClip / AGC / ZClip at their defaults (tuning cost 1) vs the "
                f"best of 4 fixed global-norm thresholds (tuning cost 4) on {setups} setups where no-clip diverges")
    return [Verdict("B2", STATEMENT, measured, numbers, ANCHOR, results[best][0])]


def twins(per_run: pd.DataFrame, setup: str, arm: str) -> str:
    """The fixed thresholds whose runs finished, seed for seed, with exactly this arm's final metric (ZClip at its
    default cap of 1, for one, clips every step to norm 1 where the norms are larger), joined by ' and '; '' if none."""
    if per_run.empty or not {"setup", "arm", "family", "seed", "final_metric", "diverged"} <= set(per_run.columns):
        return ""
    part = per_run[(per_run.setup == setup) & ~per_run.diverged.astype(bool)]
    mine = part[part.arm == arm].set_index("seed").final_metric
    same = [other for other, runs in part[part.family == "fixed"].groupby("arm", sort=False)
            if len(mine) and runs.set_index("seed").final_metric.reindex(mine.index).equals(mine)]
    return " and ".join(same)


# ---------------------------------------------------------------- figures
MARKER = {"none": "o", "fixed": "s", "adaptive": "^", "other": "D"}
FACE = {"none": "none", "fixed": "0.55", "adaptive": "white", "other": "0.8"}


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes, per_run = tables.get("outcomes"), tables.get("runs")
    if outcomes is None or outcomes.empty or per_run is None:
        return []
    setups = list(dict.fromkeys(outcomes.setup))
    seeds = int(outcomes.runs.max())
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, len(setups), figsize=(6.2 * len(setups), 4.6), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        part = outcomes[outcomes.setup == setup].reset_index(drop=True)
        metric, higher = part.metric.iloc[0], bool(part.higher_is_better.iloc[0])
        best = best_fixed(part)
        if best is not None and np.isfinite(best.score_median):
            kind, amount = TOLERANCE.get(metric, DEFAULT_TOLERANCE)
            step = amount if kind == "absolute" else amount * abs(best.score_median)
            limit = best.score_median - step if higher else best.score_median + step
            ax.axhspan(min(best.score_median, limit), max(best.score_median, limit), color="0.85", zorder=0)
        finals = []
        for i, r in part.iterrows():
            mine = per_run[(per_run.setup == setup) & (per_run.arm == r.arm)]
            ok = mine[~mine.diverged.astype(bool) & np.isfinite(pd.to_numeric(mine.final_metric, errors="coerce"))]
            x = i + (np.linspace(-0.15, 0.15, len(ok)) if len(ok) > 1 else np.zeros(len(ok)))
            ax.scatter(x, ok.final_metric, marker=MARKER.get(r.family, "D"), facecolors=FACE.get(r.family, "0.8"),
                       edgecolors="black", s=34, zorder=3)
            finals += list(pd.to_numeric(ok.final_metric))
            if np.isfinite(r.final_median):
                ax.hlines(r.final_median, i - 0.25, i + 0.25, color="black", lw=2, zorder=4)
            if r.diverged:
                ax.annotate(f"x {int(r.diverged)}/{int(r.runs)}\ndiverged", (i, 0.98),
                            xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7)
        finals = np.array([f for f in finals if np.isfinite(f) and f > 0])
        if not higher and len(finals) and finals.max() / finals.min() > 8:
            log_y(ax)
        labels = [a + ("" if d or f != "adaptive" else "*") for a, d, f in zip(part.arm, part.default_setting,
                                                                                 part.family)]
        ax.set_xticks(range(len(part)), labels, rotation=35, ha="right", fontsize=8)
        ax.set_xlim(-0.6, len(part) - 0.4)
        shade = f"; shaded = as good as best fixed ({best.arm})" if best is not None else ""
        ax.set(ylabel=metric_axis_label(metric, higher), title=f"{setup} (lr {part.lr.iloc[0]:g}){shade}")
        ax.title.set_size(10)
        ax.yaxis.label.set_size(9)
    save_figure(fig, out_dir / "adaptive_final.png")
    return [Figure("adaptive_final.png",
                   f"Final held-out metric of every seed ({seeds} per arm): no clipping (circles), global-norm "
                   f"clipping at fixed thresholds (grey squares), adaptive methods (white triangles; * = not the "
                   f"method's default setting); bar = median of the seeds that finished; 'x k/n diverged' = seeds that "
                   f"diverged (no final value). Shaded: the band counted as 'as good as' the best fixed threshold.")]
