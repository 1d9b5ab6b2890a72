"""C4, "norm clipping rescales the gradient when its norm exceeds a threshold: direction kept, step limited".

Four ways to clip at the same threshold 1 — global norm (Pascanu's Algorithm 1), element-wise value (Mikolov),
each tensor to its own norm (Keras ``clipnorm``) and Goodfellow et al.'s control (above the threshold, a random
direction of norm 1) — plus no clipping, on three setups: two where norm-1 clipping fires on most steps
(regression_mlp, gradient norm ~10^2-10^3; digits_deep_mlp, ~5-10) and one where it fires rarely (digits_mlp, a few %
of the steps: the regime Goodfellow et al. talk about, rare cliffs). 4 seeds, diag_every 1: the cosine between the
applied and the raw gradient is logged on every step.

Why these choices. Threshold 1 for every method, value clipping included: the same nominal number, as the post and
Goodfellow et al. compare the variants ("work similarly"); element-wise clipping at 1 bounds the update norm far less
tightly (by sqrt(#parameters)), and that difference is part of what is compared. The char LSTM is left out: at
threshold 1 norm clipping fires on < 1 % of its steps (README calibration) and value clipping on none in a timing
run, and its ~13 s per run would take the 20 runs over this experiment's budget (250 single-core seconds).

On diagnostic steps (here every step) the training loop measures the cosine and the post-clip norm from the
gradients before and after clipping, for every method. Beside them a direct check measures both outside training:
real back-prop gradients of two MLPs clipped by the same ``Clipper`` the training loop uses, the cosine and norms
computed in float64 from the tensors before and after (``direct`` table, computed in ``tables()``, no training).
C4's direction and step bound hold by construction of norm clipping, so they are reported as a check, not evidence.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from experiments.common import (TOLERANCE_WORDS, Figure, Verdict, gap_text, log_y, median_ci,
                                metric_axis_label, near_best, save_figure, scores)

NAME = "direction"
TITLE = "C4: does norm clipping keep the direction (and limit the step)? norm vs value vs per-tensor vs random"
CLAIMS = ("C4",)
COS_TOL = 1e-6  # "cosine 1" = cosine >= 1 - COS_TOL (float32 gradients: the cosine's own noise is ~1e-7..1e-6)
STEP_TOL = 1e-5  # "step limited" = post-clip global norm <= threshold x (1 + STEP_TOL) (clip_grad_norm_ adds 1e-6)
METHODS = ["none", "norm", "value", "per_tensor", "random"]
LABELS = {"none": "no clip", "norm": "norm", "value": "value", "per_tensor": "per-tensor", "random": "random"}
MARKERS = {"none": "o", "norm": "s", "value": "^", "per_tensor": "D", "random": "X"}

RULE = f"""All methods clip at threshold 1; 4 seeds per (setup, method); cosine = cos(applied gradient, raw gradient),
logged on every step. (a) Logged: on every setup, every clipped step of the norm runs has cosine >= 1 - {COS_TOL:g}
and a post-clip global norm <= 1 x (1 + {STEP_TOL:g}) (step limited), both measured. (b) Direct: on real back-prop
gradients of two MLPs clipped by the training code's Clipper, the float64 cosine is >= 1 - {COS_TOL:g} and the
post-clip norm <= 1 x (1 + {STEP_TOL:g}) on every case where norm clipping fired. (c) Contrast: value and per-tensor
clipping, on every setup where they clipped at least one step, have a median cosine < 1 - {COS_TOL:g} over their
clipped steps, and each clipped somewhere (the measurement can tell a changed direction). This is a check (true by
construction of norm clipping): passed if (a), (b) and (c) hold, failed otherwise (including a direct check where norm
clipping never fired); not tested if no norm run has a clipped step with a logged cosine.
Reported beside the verdict, not part of it: whether direction matters for the outcome, i.e. whether random-direction
clipping is as good as norm clipping on a setup, score = median final held-out metric over the seeds, a diverged seed
counting as the worst value ({TOLERANCE_WORDS}); Goodfellow et al. say it works "almost as well"."""

STATEMENT = "Norm clipping rescales the gradient when its norm exceeds a threshold: direction kept, step limited."
ANCHOR = ("Pascanu et al. 2013, Algorithm 1: g <- threshold * g / ||g||, one global norm; Goodfellow et al. 2016 "
          "§10.11.1: element-wise and norm clipping 'work similarly'; a random step of size v when the norm exceeds "
          "v 'works almost as well'")


# ---------------------------------------------------------------- direct check (no training)
def _flat(tensors) -> np.ndarray:
    return np.concatenate([t.detach().double().numpy().ravel() for t in tensors])


def direct_check(*args, **kwargs) -> pd.DataFrame:
    """``_direct_check`` on one torch thread (tiny tensors: more threads only wait for each other), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _direct_check(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _direct_check(threshold: float = 1.0) -> pd.DataFrame:
    """Real back-prop gradients of two MLPs (a regression MLP with unscaled targets, a deep tanh MLP), as they are
    and scaled by 1e-3, clipped by the training loop's Clipper at ``threshold``: float64 cosine, pre/post norm."""
    import torch

    from gradclip.clipping import method_class
    from gradclip.models.mlp import MLP, Activation

    def mlp(inputs, outputs, depth, width, activation, gain):
        shapes = SimpleNamespace(input_dim=inputs, output_dim=outputs)
        return MLP(depth=depth, width=width, activation=Activation(activation), init_gain=gain).build(shapes)

    cases = [("regression MLP 20-25-1, targets x100", 20, lambda: mlp(20, 1, 1, 25, "relu", 1.0), "mse"),
             ("deep tanh MLP 20 x 128, gain 2", 64, lambda: mlp(64, 10, 20, 128, "tanh", 2.0), "ce")]
    rows = []
    for i, (case, inputs, build, loss_kind) in enumerate(cases):
        torch.manual_seed(i)
        model = build()
        params = [p for p in model.parameters()]
        x = torch.randn(32, inputs)
        if loss_kind == "mse":
            loss = torch.nn.functional.mse_loss(model(x).squeeze(-1), 100 * torch.randn(32))
        else:
            loss = torch.nn.functional.cross_entropy(model(x), torch.randint(0, 10, (32,)))
        loss.backward()
        raw = [p.grad.detach().clone() for p in params]
        for scale in (1.0, 1e-3):
            for method in METHODS[1:]:
                for p, r in zip(params, raw):
                    p.grad = (r * scale).clone()
                before = _flat(p.grad for p in params)
                clipper = method_class(method)(name=method, threshold=threshold)
                clipper.prepare(seed=i, exclude=set())
                stats = clipper(params, measure=True)
                after = _flat(p.grad for p in params)
                pre, post = float(np.linalg.norm(before)), float(np.linalg.norm(after))
                cosine = float(before @ after / (pre * post)) if pre > 0 and post > 0 else math.nan
                rows.append({"case": case, "grad_scale": scale, "method": method, "threshold": threshold,
                             "parameters": int(before.size), "pre_norm": pre, "post_norm": post,
                             "fired": bool(stats.fired), "cosine": cosine, "one_minus_cos": 1 - cosine,
                             "logged_cosine": stats.cosine})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables
def _meta(runs: pd.DataFrame) -> pd.DataFrame:
    return runs.assign(setup=runs.setup_name, method=runs.clip_method.astype(str),
                       threshold=runs.clip_threshold.astype(float),
                       score=scores(runs))


def _applied(steps: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """Step rows whose gradient was computed and applied (not the eval-only step 0 nor a divergence row)."""
    data = steps[steps.step > 0]
    data = data[pd.to_numeric(data.grad_norm, errors="coerce").notna()]
    if "skipped" in data:
        data = data[data.skipped.fillna(0) == 0]
    data = data.assign(clipped=data.clipped.fillna(0).astype(int))
    return data.merge(meta[["run", "setup", "method", "threshold"]], on="run")


def _cos_stats(clipped: pd.DataFrame, unclipped: pd.DataFrame) -> dict:
    cos = pd.to_numeric(clipped.cosine, errors="coerce").dropna()
    noise = (1 - pd.to_numeric(unclipped.cosine, errors="coerce").dropna()).abs()
    q = cos.quantile([0.05, 0.25, 0.5, 0.75, 0.95]).to_numpy() if len(cos) else [np.nan] * 5
    post = (clipped.grad_norm_clipped / clipped.threshold).replace([np.inf, -np.inf], np.nan).dropna()
    return {"clipped_steps": len(clipped), "cos_steps": len(cos),
            "cos_min": cos.min() if len(cos) else np.nan, "cos_q05": q[0], "cos_q25": q[1], "cos_median": q[2],
            "cos_q75": q[3], "cos_q95": q[4], "cos_max": cos.max() if len(cos) else np.nan,
            "unclipped_cos_noise": noise.max() if len(noise) else np.nan,
            "post_over_threshold_max": post.max() if len(post) else np.nan}


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    meta = _meta(runs)
    data = _applied(steps, meta)
    per_run = []
    for _, r in meta.iterrows():
        part = data[data.run == r.run]
        stats = _cos_stats(part[part.clipped == 1], part[part.clipped == 0])
        per_run.append({"setup": r.setup, "method": r.method, "threshold": r.threshold, "seed": r.seed, "run": r.run,
                        "metric": r.metric, "higher_is_better": bool(r.higher_is_better),
                        "diverged": bool(r.diverged), "diverged_step": r.diverged_step,
                        "final_metric": r.final_metric, "score": r.score,
                        "clipped_pct": 100 * float(r.clipped_fraction),
                        "cos_median": stats["cos_median"], "cos_min": stats["cos_min"],
                        "clipped_steps": stats["clipped_steps"]})
    per_run = pd.DataFrame(per_run)
    rows = []
    order = {m: i for i, m in enumerate(METHODS)}
    for (setup, method), part in meta.groupby(["setup", "method"], sort=False):
        steps_part = data[(data.setup == setup) & (data.method == method)]
        finished = part[~part.diverged.astype(bool)]
        mid, lo, hi = median_ci(finished.final_metric)
        finals = pd.to_numeric(finished.final_metric, errors="coerce")
        clipped = 100 * pd.to_numeric(part.clipped_fraction, errors="coerce")
        rows.append({"setup": setup, "method": method, "threshold": float(part.threshold.iloc[0]),
                     "metric": part.metric.iloc[0], "higher_is_better": bool(part.higher_is_better.iloc[0]),
                     "runs": len(part), "diverged": int(part.diverged.astype(bool).sum()), "finished": len(finished),
                     "final_median": mid, "final_lo": lo, "final_hi": hi, "final_min": finals.min(),
                     "final_max": finals.max(), "score_median": float(np.median(part.score)),
                     "clipped_pct_median": clipped.median(), "clipped_pct_min": clipped.min(),
                     "clipped_pct_max": clipped.max(),
                     **_cos_stats(steps_part[steps_part.clipped == 1], steps_part[steps_part.clipped == 0])})
    outcomes = pd.DataFrame(rows)
    if len(outcomes):
        outcomes = outcomes.sort_values(["setup", "method"], key=lambda s: s.map(order) if s.name == "method" else s,
                                        kind="stable").reset_index(drop=True)
    return {"outcomes": outcomes, "runs": per_run, "direct": direct_check()}


# ---------------------------------------------------------------- verdict
def _fmt(row) -> str:
    if not np.isfinite(row.final_median):
        return "–"
    return f"{row.final_median:.3g} [{row.final_lo:.3g}, {row.final_hi:.3g}] (n={int(row.finished)})"


def direction_outcome(outcomes: pd.DataFrame) -> tuple[str, int, int]:
    """The 'does direction matter' sentence: random-direction vs norm clipping per setup (not part of the verdict)."""
    notes, same, tested = [], 0, 0
    for setup, part in outcomes.groupby("setup", sort=False):
        part = part.set_index("method")
        if "norm" not in part.index or "random" not in part.index:
            continue
        tested += 1
        norm, rnd = part.loc["norm"], part.loc["random"]
        metric, higher = norm.metric, bool(norm.higher_is_better)
        ok = near_best(rnd.score_median, norm.score_median, metric, higher)
        same += ok
        none = (f"; no clip {_fmt(part.loc['none'])}, diverged {int(part.loc['none'].diverged)}/"
                f"{int(part.loc['none'].runs)}" if "none" in part.index else "")
        notes.append(f"{setup} ({metric}): norm {_fmt(norm)}, diverged {int(norm.diverged)}/{int(norm.runs)}, clips "
                     f"{norm.clipped_pct_median:.0f} % of steps; random {_fmt(rnd)}, diverged {int(rnd.diverged)}/"
                     f"{int(rnd.runs)}, clips {rnd.clipped_pct_median:.0f} % "
                     f"({gap_text(rnd.score_median, norm.score_median, metric, higher)} vs norm: "
                     f"{'as good' if ok else 'NOT as good'}){none}")
    text = (f"Direction and outcome (not part of the verdict): random-direction clipping was as good as norm clipping "
            f"on {same}/{tested} setups: " + "; ".join(notes)) if tested else ""
    return text, same, tested


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    outcomes, direct = tables.get("outcomes"), tables.get("direct")
    if outcomes is None or outcomes.empty:
        return [Verdict("C4", STATEMENT, "no runs", "–", ANCHOR, "not tested")]
    direct = direct if direct is not None else pd.DataFrame(columns=["method", "fired", "cosine", "post_norm",
                                                                     "threshold", "one_minus_cos"])
    norm = outcomes[(outcomes.method == "norm") & (outcomes.clipped_steps > 0) & (outcomes.cos_steps > 0)]
    d_norm = direct[(direct.method == "norm") & direct.fired.astype(bool)]
    if norm.empty:
        return [Verdict("C4", STATEMENT, "no norm-clipped step with a logged cosine", "–", ANCHOR, "not tested")]
    logged_ok = bool((norm.cos_min >= 1 - COS_TOL).all() and (norm.post_over_threshold_max <= 1 + STEP_TOL).all())
    direct_ok = bool((d_norm.cosine >= 1 - COS_TOL).all()
                     and (d_norm.post_norm <= d_norm.threshold * (1 + STEP_TOL)).all()) and not d_norm.empty
    contrast, notes = True, []
    for method in ("value", "per_tensor"):
        rows = outcomes[(outcomes.method == method) & (outcomes.cos_steps > 0)]
        changed = rows.cos_median < 1 - COS_TOL
        contrast &= bool(len(rows) and changed.all())
        notes.append(f"{LABELS[method]}: " + ("; ".join(
            f"{r.setup} median cos {r.cos_median:.4g}, min {r.cos_min:.4g} over {int(r.cos_steps)} clipped steps "
            f"({r.clipped_pct_median:.0f} % of steps, median of {int(r.runs)} seeds)" for r in rows.itertuples())
            or "never clipped"))
    verdict = "check passed" if logged_ok and direct_ok and contrast else "check failed"
    norm_text = "; ".join(
        f"{r.setup}: cosine logged on {int(r.cos_steps)} of {int(r.clipped_steps)} clipped steps "
        f"({r.clipped_pct_median:.0f} % of steps clipped, median of {int(r.runs)} seeds), min cos {r.cos_min:.9g}, "
        f"max post-clip norm / threshold {r.post_over_threshold_max:.7g}" for r in norm.itertuples())
    d_all = direct[direct.fired.astype(bool)]
    direct_text = (f"direct check on {len(d_norm)} clipped back-prop gradients: norm min cos "
                   f"{d_norm.cosine.min():.12g} (max 1-cos {d_norm.one_minus_cos.max():.1e}), max post norm "
                   f"{d_norm.post_norm.max():.7g}; " + ", ".join(
                       f"{LABELS[m]} min cos {g.cosine.min():.3g}" for m, g in d_all.groupby("method", sort=False)
                       if m != "norm")) if len(d_norm) else "direct check: norm never fired"
    sentence, _, _ = direction_outcome(outcomes)
    numbers = f"Norm (logged): {norm_text}. {direct_text}. Contrast: {'; '.join(notes)}. {sentence}"
    seeds = int(outcomes.runs.max())
    measured = (f"cos(applied, raw gradient) on every clipped step, threshold 1, {outcomes.setup.nunique()} setups x "
                f"{seeds} seeds and post-clip norm (measured in training, and directly in float64 on back-prop "
                f"gradients); "
                f"and final metric of random-direction vs norm clipping")
    return [Verdict("C4", STATEMENT, measured, numbers, ANCHOR, verdict, figure="direction_cosine.png",
                    finding=f"measured in training: norm clipping keeps cos = 1 and the step bound "
                            f"({'on every setup' if logged_ok else 'NOT on every setup'}); value and per-tensor "
                            f"clipping turn the gradient")]


# ---------------------------------------------------------------- figures
def _axes(n: int, height: float = 3.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(1, max(n, 1), figsize=(5.0 * max(n, 1), height), squeeze=False)
    return plt, fig, list(axes[0])


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    outcomes, per_run = tables.get("outcomes"), tables.get("runs")
    if outcomes is None or outcomes.empty or per_run is None:
        return []
    setups = list(dict.fromkeys(outcomes.setup))
    seeds = int(outcomes.runs.max())

    # 1. cosine over clipped steps, per method (boxes from the stored quantiles; dots = per-seed medians)
    plt, fig, axes = _axes(len(setups))
    for ax, setup in zip(axes, setups):
        part = outcomes[(outcomes.setup == setup) & (outcomes.method != "none")].reset_index(drop=True)
        stats, positions = [], []
        for i, r in part.iterrows():
            ax.text(i, 1.13, f"{r.clipped_pct_median:.0f} %\nclipped", ha="center", va="bottom", fontsize=7)
            if r.cos_steps == 0:
                ax.text(i, 0.5, "never\nclipped", ha="center", va="center", fontsize=8, color="0.3")
                continue
            stats.append({"med": r.cos_median, "q1": r.cos_q25, "q3": r.cos_q75, "whislo": r.cos_q05,
                          "whishi": r.cos_q95, "fliers": [r.cos_min], "label": LABELS[r.method]})
            positions.append(i)
        if stats:
            ax.bxp(stats, positions=positions, widths=0.5, patch_artist=True,
                   boxprops={"facecolor": "0.85", "edgecolor": "black"}, medianprops={"color": "black", "lw": 2},
                   flierprops={"marker": "v", "markerfacecolor": "black", "markersize": 6})
        runs_part = per_run[(per_run.setup == setup) & (per_run.method != "none")]
        for i, r in part.iterrows():
            dots = runs_part[runs_part.method == r.method].cos_median.dropna()
            ax.scatter(i + np.linspace(-0.15, 0.15, len(dots)) if len(dots) > 1 else [i] * len(dots), dots,
                       marker=MARKERS[r.method], facecolors="none", edgecolors="black", s=28, zorder=3)
        ax.set_xticks(range(len(part)), [LABELS[m] for m in part.method], rotation=20)
        ax.set_xlim(-0.6, len(part) - 0.4)
        ax.set_ylim(-0.25, 1.3)
        ax.axhline(1.0, color="black", ls=":", lw=1)
        ax.set(ylabel="cos(applied, raw gradient)\non clipped steps (1 = direction kept)", title=setup)
        ax.yaxis.label.set_size(9)
    save_figure(fig, out_dir / "direction_cosine.png")

    # 2. final metric per method: every seed, diverged seeds marked at the top
    plt, fig, axes = _axes(len(setups))
    for ax, setup in zip(axes, setups):
        part = outcomes[outcomes.setup == setup].reset_index(drop=True)
        runs_part = per_run[per_run.setup == setup]
        metric, higher = part.metric.iloc[0], bool(part.higher_is_better.iloc[0])
        finals = []
        for i, r in part.iterrows():
            mine = runs_part[runs_part.method == r.method]
            ok = mine[~mine.diverged.astype(bool) & np.isfinite(pd.to_numeric(mine.final_metric, errors="coerce"))]
            x = i + (np.linspace(-0.15, 0.15, len(ok)) if len(ok) > 1 else np.zeros(len(ok)))
            ax.scatter(x, ok.final_metric, marker=MARKERS[r.method], facecolors="none", edgecolors="black", s=32,
                       zorder=3)
            finals += list(ok.final_metric)
            if np.isfinite(r.final_median):
                ax.hlines(r.final_median, i - 0.25, i + 0.25, color="black", lw=2)
            if r.diverged:
                ax.annotate(f"x {int(r.diverged)}/{int(r.runs)}\ndiverged", (i, 0.98),
                            xycoords=("data", "axes fraction"),
                            ha="center", va="top", fontsize=7, color="0.2")
        finals = np.array([f for f in finals if np.isfinite(f) and f > 0])
        if not higher and len(finals) and finals.max() / finals.min() > 8:
            log_y(ax)
        ax.set_xticks(range(len(part)), [LABELS[m] for m in part.method], rotation=20)
        ax.set_xlim(-0.6, len(part) - 0.4)
        ax.set(ylabel=metric_axis_label(metric, higher), title=setup)
        ax.yaxis.label.set_size(9)
    save_figure(fig, out_dir / "direction_final.png")
    return [
        Figure("direction_cosine.png",
               f"Cosine between the applied and the raw gradient on the steps where each method clipped (threshold 1 "
               f"for all), pooled over {seeds} seeds per setup: box = 25-75 %, whiskers = 5-95 %, triangle = minimum, "
               f"hollow markers = each seed's median; the % above a box = median share of steps clipped. Norm "
               f"clipping's logged cosine is 1 by construction of the logger; the verdict's direct check measures it."),
        Figure("direction_final.png",
               f"Final held-out metric of every seed ({seeds} per method) for each clipping method at threshold 1 and "
               f"without clipping; bar = median of the seeds that finished; 'x k/n diverged' = seeds that diverged "
               f"(no final value shown)."),
    ]
