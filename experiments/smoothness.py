"""Zhang et al.'s (L0, L1)-smoothness (B1): does local smoothness grow with the gradient norm along training?

Zhang, He, Sra, Jadbabaie (ICLR 2020) explain why clipping helps by ||Hessian|| <= L0 + L1 ||grad||: where the gradient
is large the loss is also sharply curved, so a step of fixed lr is too long exactly there, and clipping shortens it.
Their evidence: along training, log local smoothness against log gradient norm is strongly correlated for an AWD-LSTM
on PTB, not for a ResNet on CIFAR-10 trained with SGD + momentum.

Runs (``conf/experiment/smoothness.yaml``): three setups at their own lrs — charlm_lstm (an LSTM, like theirs),
digits_deep_mlp (a deep tanh net with exploding gradients) and regression_mlp (SGD with momentum 0.9, like their ResNet
optimiser) — without clipping and with norm-1 clipping, seeds 0-2. Every 5th step the training loop records their
estimator ``||g(mid) - g(prev)|| / ||mid - prev||`` (mid halfway along the step just taken, same batch) beside the raw
(pre-clip) gradient norm at prev. Runs without clipping that diverge early contribute few points; a (setup, clip) cell
with fewer than MIN_POINTS points is not tested.

Per cell: Pearson r of log10 smoothness against log10 gradient norm over all its points (pooled over seeds), with a
95 % percentile-bootstrap interval over points (2000 resamples), Spearman's rho likewise, and the per-run r (median,
min, max). Points from one run are autocorrelated, so the point bootstrap is optimistic; the per-run r shows whether
the relation holds within every run. Only the first half of the claim (smoothness grows with the gradient norm) is
tested here; that this is *why* clipping helps is argued by Zhang et al., not measured.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from scipy.stats import rankdata  # noqa: E402

from experiments.common import Figure, Verdict, save_figure, setup_label  # noqa: E402

NAME = "smoothness"
TITLE = "Local smoothness vs gradient norm along training (Zhang et al.'s (L0, L1)-smoothness)"
CLAIMS = ("B1",)

# Fixed before the runs.
MIN_POINTS = 20  # a (setup, clip) cell needs this many measured steps
MIN_R = 0.5  # the relation holds in a cell if Pearson r >= MIN_R and its interval excludes 0
N_BOOT = 2000
STATEMENT = "(Zhang et al. 2020) Local smoothness grows with the gradient norm, which is why clipping helps."

RULE = (
    f"Per (setup, clip) cell with >= {MIN_POINTS} measured steps: the relation holds if the Pearson correlation of "
    f"log10 local smoothness with log10 pre-clip gradient norm (pooled over seeds) is >= {MIN_R:g} and its 95 % "
    f"bootstrap interval excludes 0. A setup holds if every tested cell of it holds. B1 supported if every tested "
    f"setup holds, partly if some do, not supported if none; not tested if no cell has {MIN_POINTS} points."
)



def _regime(run: pd.Series) -> str:
    threshold = float(run["clip_threshold"])
    if not np.isfinite(threshold):
        return "none"
    return f"norm {threshold:g}" if run["clip_method"] == "norm" else str(run["clip"])


def _boot_corr(x: np.ndarray, y: np.ndarray, spearman: bool, seed: int = 0) -> tuple[float, float, float]:
    if spearman:
        x, y = rankdata(x), rankdata(y)
    r = float(np.corrcoef(x, y)[0, 1])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(N_BOOT, len(x)))
    xs, ys = x[idx], y[idx]
    if spearman:
        xs, ys = rankdata(xs, axis=1), rankdata(ys, axis=1)
    xs = xs - xs.mean(axis=1, keepdims=True)
    ys = ys - ys.mean(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        rs = (xs * ys).sum(1) / np.sqrt((xs ** 2).sum(1) * (ys ** 2).sum(1))
    rs = rs[np.isfinite(rs)]
    return r, float(np.percentile(rs, 2.5)), float(np.percentile(rs, 97.5))


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    frames = []
    for _, run in runs.iterrows():
        rows = steps[(steps.run == run.run) & (steps.step > 0)]
        if "smoothness" not in rows:
            continue
        rows = rows[["step", "grad_norm", "smoothness"]].apply(pd.to_numeric, errors="coerce")
        rows = rows[(rows.grad_norm > 0) & (rows.smoothness > 0) & np.isfinite(rows.grad_norm)
                    & np.isfinite(rows.smoothness)]
        frames.append(rows.assign(run=run.run, setup=setup_label(run), clip=_regime(run), seed=int(run.seed),
                                  log10_grad_norm=np.log10(rows.grad_norm), log10_smoothness=np.log10(rows.smoothness)))
    columns = ["run", "setup", "clip", "seed", "step", "log10_grad_norm", "log10_smoothness"]
    points = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    correlations = correlation_table(points, runs)  # on the exact values; the stored points are rounded
    stored = points.assign(log10_grad_norm=points.log10_grad_norm.astype(float).round(4),
                           log10_smoothness=points.log10_smoothness.astype(float).round(4))
    return {"points": stored, "correlations": correlations}


def correlation_table(points: pd.DataFrame, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    cells = []
    keys = ([(setup_label(r), _regime(r)) for _, r in runs.iterrows()] if runs is not None and len(runs) else
            list(points.groupby(["setup", "clip"]).groups))
    for setup, clip in dict.fromkeys(keys):
        p = points[(points.setup == setup) & (points["clip"] == clip)]
        n_runs = int(((runs.apply(setup_label, axis=1) == setup) & (runs.apply(_regime, axis=1) == clip)).sum()) \
            if runs is not None and len(runs) else p.run.nunique()
        row = {"setup": setup, "clip": clip, "n_points": len(p), "n_runs": n_runs, "runs_with_points": p.run.nunique(),
               "pearson": np.nan, "pearson_lo": np.nan, "pearson_hi": np.nan, "spearman": np.nan,
               "spearman_lo": np.nan, "spearman_hi": np.nan, "run_r_median": np.nan, "run_r_min": np.nan,
               "run_r_max": np.nan, "slope": np.nan, "intercept": np.nan, "tested": False, "holds": False}
        x, y = p.log10_grad_norm.to_numpy(float), p.log10_smoothness.to_numpy(float)
        if len(p) >= MIN_POINTS and np.std(x) > 0 and np.std(y) > 0:
            row["pearson"], row["pearson_lo"], row["pearson_hi"] = _boot_corr(x, y, spearman=False)
            row["spearman"], row["spearman_lo"], row["spearman_hi"] = _boot_corr(x, y, spearman=True)
            per_run = [np.corrcoef(g.log10_grad_norm, g.log10_smoothness)[0, 1] for _, g in p.groupby("run")
                       if len(g) >= 3 and g.log10_grad_norm.std() > 0 and g.log10_smoothness.std() > 0]
            if per_run:
                row.update(run_r_median=float(np.median(per_run)), run_r_min=float(np.min(per_run)),
                           run_r_max=float(np.max(per_run)))
            row["slope"], row["intercept"] = (float(v) for v in np.polyfit(x, y, 1))
            row["tested"] = True
            row["holds"] = bool(row["pearson"] >= MIN_R and row["pearson_lo"] > 0)
        cells.append(row)
    return pd.DataFrame(cells)


def _flag(values: pd.Series) -> pd.Series:
    return values.astype(str).str.lower().isin(["true", "1", "1.0"])


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    corr = tables.get("correlations")
    anchor = ("Zhang et al. 2020: strong correlation of log smoothness with log gradient norm for AWD-LSTM on PTB; "
              "none for ResNet on CIFAR-10 with SGD + momentum")
    if corr is None or corr.empty or not _flag(corr.tested).any():
        return [Verdict("B1", STATEMENT, "no (setup, clip) cell with enough smoothness measurements", "–", anchor,
                        "not tested")]
    tested = corr[_flag(corr.tested)]
    holds = tested.groupby("setup", sort=False).holds.apply(lambda h: bool(_flag(h).all()))
    verdict = "supported" if holds.all() else "partly" if holds.any() else "not supported"
    held, failed = [s for s, h in holds.items() if h], [s for s, h in holds.items() if not h]
    parts = []
    for _, c in tested.iterrows():
        parts.append(f"{c.setup}/{c['clip']}: r {c.pearson:.2f} [{c.pearson_lo:.2f}, {c.pearson_hi:.2f}], rho "
                     f"{c.spearman:.2f} [{c.spearman_lo:.2f}, {c.spearman_hi:.2f}] (n={int(c.n_points)} steps, "
                     f"{int(c.runs_with_points)} seeds; per-seed r {c.run_r_min:.2f}..{c.run_r_max:.2f}; slope "
                     f"{c.slope:.2f}) -> {'holds' if _flag(pd.Series([c.holds])).iloc[0] else 'does not hold'}")
    untested = corr[~_flag(corr.tested)]
    if len(untested):
        parts.append("not tested (< %d points): " % MIN_POINTS + ", ".join(
            f"{c.setup}/{c['clip']} (n={int(c.n_points)})" for _, c in untested.iterrows()))
    return [Verdict("B1", STATEMENT, "Pearson / Spearman correlation of log10 local smoothness (Zhang et al.'s "
                    "estimator, every 5th step) with log10 pre-clip gradient norm, per setup and clip; 95 % point "
                    "bootstrap intervals (optimistic: points within a run are autocorrelated). The 'why clipping "
                    "helps' part is not measured", "; ".join(parts), anchor, verdict, figure="smoothness_scatter.png",
                    finding="log smoothness follows log gradient norm (r >= 0.5) on "
                            + (", ".join(held) or "no setup") + "; not on " + (", ".join(failed) or "any other"))]


def figures(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    points, corr = tables.get("points"), tables.get("correlations")
    if points is None or points.empty:
        return []
    path = out_dir / "smoothness_scatter.png"
    setups = list(dict.fromkeys(points.setup))
    clips = sorted(points["clip"].unique(), key=lambda c: (c != "none", c))
    palette = dict(zip(clips, sns.color_palette("colorblind")))
    markers = dict(zip(clips, ["o", "^", "s", "D"]))
    lines = dict(zip(clips, ["-", "--", ":", "-."]))
    fig, axes = plt.subplots(1, len(setups), figsize=(5.2 * len(setups), 4.4), squeeze=False)
    for ax, setup in zip(axes[0], setups):
        for clip in clips:
            p = points[(points.setup == setup) & (points["clip"] == clip)]
            if len(p) == 0:
                continue
            found = corr[(corr.setup == setup) & (corr["clip"] == clip)] if corr is not None else pd.DataFrame()
            c = found.iloc[0] if len(found) and _flag(found.tested).iloc[0] else None
            label = f"clip={clip} (n={len(p)}, too few to test)"
            if c is not None:
                label = f"clip={clip}: r={c.pearson:.2f} [{c.pearson_lo:.2f}, {c.pearson_hi:.2f}], n={len(p)}"
            ax.scatter(10 ** p.log10_grad_norm, 10 ** p.log10_smoothness, s=14, alpha=0.5, color=palette[clip], marker=markers[clip],
                       label=label, linewidths=0)
            if c is not None and np.isfinite(c.slope):
                xs = np.linspace(p.log10_grad_norm.min(), p.log10_grad_norm.max(), 20)
                ax.plot(10 ** xs, 10 ** (c.intercept + c.slope * xs), color=palette[clip], ls=lines[clip], lw=1.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(plain)
            axis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set(xlabel="pre-clip gradient norm ||g|| (log)", ylabel="local smoothness estimate (log)", title=setup)
        ax.legend(fontsize=7)
    save_figure(fig, path)
    seeds = points.groupby(["setup", "clip"]).seed.nunique().max()
    return [Figure(path.name, "Local smoothness (Zhang et al.'s estimator ||g(mid) - g(prev)|| / ||mid - prev||, every "
                   f"5th step) against the pre-clip gradient norm, log-log, one panel per setup, colour and marker by "
                   f"clipping, up to {seeds} seeds pooled; lines: least-squares fit of log smoothness on log gradient "
                   "norm; legend: Pearson r of the logs with its 95 % bootstrap interval over points.")]
