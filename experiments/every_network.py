"""C7: "Caffe clips the global L2 norm over all parameters; otherwise implement it; use it on every network".

Two parts.

1. Semantics, no training (computed in ``tables()``). Caffe's SGDSolver clips with ``clip_gradients``: when the L2
   norm of the gradients of ALL learnable parameters exceeds the threshold, every gradient is scaled by
   threshold / norm; this happens before weight decay is added (ClipGradients, then Regularize, then the momentum
   update). An independent numpy implementation of that is run beside our ``norm`` clip followed by
   ``torch.optim.SGD(momentum, weight_decay)`` on random gradients of a small MLP, for 1-3 steps: the clipped
   gradients and the parameters after the updates are compared (max abs difference). Two controls show the check can
   fail: the other order (decay added, then clipped) and per-tensor clipping (Keras ``clipnorm``) against Caffe's.
2. Outcome: norm-1 clipping vs none, 5 seeds, on networks that do not explode: the shallow digits MLP with SGD
   (lr 0.1) and the same MLP with Adam (lr 1e-3). The char LSTM with Adam was left out: 10 runs of ~13 s would
   exceed this experiment's budget (150 single-core seconds), and in a timing run its gradient norm never exceeded
   1 (max 0.84), so norm-1 clipping would not have fired there.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import Figure, Verdict, median_ci, metric_axis_label, save_figure, scores

NAME = "every_network"
TITLE = "C7: Caffe's clipping semantics, and norm-1 clipping on networks that do not explode"
CLAIMS = ("C7",)
SEMANTICS_TOL = 1e-6  # max abs difference (float32 parameters and gradients of magnitude <= ~1)

RULE = f"""Semantics: our `norm` clip must equal Caffe's formula (one L2 norm over all parameters' gradients; above the
threshold every gradient times threshold / norm) and the SGD update after it (momentum, weight decay) must equal
Caffe's order (clip, then add decay, then momentum) to {SEMANTICS_TOL:g} max abs difference on every case; if not, our
runs do not use Caffe's clipping and C7 is not tested. Outcome per network (5 seeds each of no clip and norm-1 clip):
score = final held-out metric, a diverged seed counting as the worst value; clipping 'does nothing' if it fired on 0
steps in every seed; otherwise it 'helps' if the median score with clipping is better than the best no-clip seed's
score, 'hurts' if it is worse than the worst no-clip seed's score, 'no effect' otherwise. C7 ("use it on every
network") is supported if clipping hurts on no network and helps on at least one; partly if it hurts on none and
helps on none (harmless, but no benefit seen); not supported if it hurts on at least one."""

STATEMENT = "Clip the global L2 norm (as Caffe does) and use it on every network."
ANCHOR = ("Caffe: clip_gradients (default -1 = off): global L2 over all learnable parameters, applied before weight "
          "decay (../shared/CLAIMS.md; Caffe's source not re-read here); Keras clipnorm is per variable, "
          "global_clipnorm global")


# ---------------------------------------------------------------- semantics (no training)
def caffe_clip(grads: list[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Caffe's SGDSolver::ClipGradients: one L2 norm over every learnable parameter's diff."""
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    return [g * (threshold / norm) for g in grads] if norm > threshold else [g.copy() for g in grads]


def caffe_steps(weights, grads_per_step, threshold, lr, momentum, wd, clip_first: bool = True):
    """Caffe's SGD: ClipGradients, Regularize (diff += wd * w), history = momentum * history + lr * diff,
    w -= history. ``clip_first=False`` is the other order (decay first, then clip), a control."""
    weights = [w.copy() for w in weights]
    history = [np.zeros_like(w) for w in weights]
    for grads in grads_per_step:
        if clip_first:
            diffs = [g + wd * w for g, w in zip(caffe_clip(grads, threshold), weights)]
        else:
            diffs = caffe_clip([g + wd * w for g, w in zip(grads, weights)], threshold)
        history = [momentum * h + lr * d for h, d in zip(history, diffs)]
        weights = [w - h for w, h in zip(weights, history)]
    return weights


CASES = [  # grad scale, threshold, weight decay, momentum, steps
    (10.0, 1.0, 0.0, 0.0, 1), (10.0, 1.0, 1e-2, 0.0, 1), (0.01, 1.0, 1e-2, 0.0, 1),
    (3.0, 0.25, 5e-4, 0.9, 3), (10.0, 1.0, 0.05, 0.9, 3)]


def semantics(*args, **kwargs) -> pd.DataFrame:
    """``_semantics`` on one torch thread (tiny tensors: more threads only wait for each other), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _semantics(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _semantics(lr: float = 0.1) -> pd.DataFrame:
    import torch

    from types import SimpleNamespace

    from gradclip.clipping.norm import Norm
    from gradclip.clipping.per_tensor import PerTensor
    from gradclip.models.mlp import MLP, Activation

    rows = []
    for case, (scale, threshold, wd, momentum, n_steps) in enumerate(CASES):
        torch.manual_seed(case)
        model = MLP(depth=2, width=32, activation=Activation.relu, init_gain=1.0).build(
            SimpleNamespace(input_dim=64, output_dim=10))
        params = list(model.parameters())
        weights = [p.detach().double().numpy().copy() for p in params]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
        grads_per_step, clip_diff, per_tensor_diff, fired, norms = [], 0.0, 0.0, False, []
        for _ in range(n_steps):
            raw = [torch.randn_like(p) * scale for p in params]
            grads = [g.double().numpy().copy() for g in raw]
            grads_per_step.append(grads)
            expected = caffe_clip(grads, threshold)
            for p, g in zip(params, raw):  # control: per-tensor clipping (Keras clipnorm) vs Caffe's global one
                p.grad = g.clone()
            PerTensor(name="per_tensor", threshold=threshold)(params)
            per_tensor_diff = max(per_tensor_diff, max(float(np.abs(p.grad.double().numpy() - e).max())
                                                       for p, e in zip(params, expected)))
            for p, g in zip(params, raw):
                p.grad = g.clone()
            stats = Norm(name="norm", threshold=threshold)(params)
            fired |= stats.fired
            norms.append(stats.pre_norm)
            clip_diff = max(clip_diff, max(float(np.abs(p.grad.double().numpy() - e).max())
                                           for p, e in zip(params, expected)))
            optimizer.step()
        ours = [p.detach().double().numpy() for p in params]
        caffe = caffe_steps(weights, grads_per_step, threshold, lr, momentum, wd)
        other_order = caffe_steps(weights, grads_per_step, threshold, lr, momentum, wd, clip_first=False)
        rows.append({"case": case, "grad_scale": scale, "threshold": threshold, "weight_decay": wd,
                     "momentum": momentum, "lr": lr, "steps": n_steps, "global_norm_max": float(max(norms)),
                     "clipped": bool(fired), "clip_max_abs_diff": clip_diff,
                     "update_max_abs_diff": max(float(np.abs(o - c).max()) for o, c in zip(ours, caffe)),
                     "control_other_order_diff": max(float(np.abs(o - c).max()) for o, c in zip(other_order, caffe)),
                     "control_per_tensor_diff": per_tensor_diff})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- tables
def _arm(runs: pd.DataFrame) -> pd.Series:
    """'none' or 'norm <threshold>' (the sweep runs clip=none and clip=norm1)."""
    return pd.Series([("none" if m == "none" else f"{m} {t:g}") for m, t in zip(runs.clip_method, runs.clip_threshold)],
                     index=runs.index)


def tables(runs: pd.DataFrame, steps: pd.DataFrame) -> dict[str, pd.DataFrame]:
    runs = runs.assign(network=runs.setup_name, arm=_arm(runs), score=scores(runs))
    per_run = runs[["network", "optim", "lr", "arm", "seed", "diverged", "final_metric", "score", "steps_to_target",
                    "clipped_fraction", "grad_norm_median", "grad_norm_max", "metric", "higher_is_better",
                    "target_metric", "target"]].copy()
    per_run["clipped_pct"] = 100 * pd.to_numeric(per_run.clipped_fraction, errors="coerce")
    rows = []
    for (network, optim, arm), part in runs.groupby(["network", "optim", "arm"], sort=False):
        finished = part[~part.diverged.astype(bool)]
        mid, lo, hi = median_ci(finished.final_metric)
        finals = pd.to_numeric(finished.final_metric, errors="coerce")
        reached = pd.to_numeric(part.steps_to_target, errors="coerce").dropna()
        clipped = 100 * pd.to_numeric(part.clipped_fraction, errors="coerce")
        rows.append({"network": network, "optim": optim, "lr": float(part.lr.iloc[0]), "arm": arm,
                     "runs": len(part), "diverged": int(part.diverged.astype(bool).sum()), "finished": len(finished),
                     "final_median": mid, "final_lo": lo, "final_hi": hi, "final_min": finals.min(),
                     "final_max": finals.max(), "score_median": float(np.median(part.score)),
                     "score_best": float(part.score.max() if part.higher_is_better.iloc[0] else part.score.min()),
                     "score_worst": float(part.score.min() if part.higher_is_better.iloc[0] else part.score.max()),
                     "steps_to_target": reached.median() if len(reached) else np.nan, "reached": len(reached),
                     "clipped_pct_median": clipped.median(), "clipped_pct_max": clipped.max(),
                     "grad_norm_median": pd.to_numeric(part.grad_norm_median, errors="coerce").median(),
                     "grad_norm_max": pd.to_numeric(part.grad_norm_max, errors="coerce").max(),
                     "metric": part.metric.iloc[0], "higher_is_better": bool(part.higher_is_better.iloc[0]),
                     "target_metric": part.target_metric.iloc[0], "target": part.target.iloc[0]})
    return {"outcomes": pd.DataFrame(rows), "runs": per_run, "semantics": semantics()}


# ---------------------------------------------------------------- verdict
def effect(outcomes: pd.DataFrame) -> str | None:
    """One network's rows (arms 'none' and 'norm ...') -> helps / hurts / no effect / does nothing (None: missing)."""
    plain, clip = outcomes[outcomes.arm == "none"], outcomes[outcomes.arm != "none"]
    if plain.empty or clip.empty:
        return None
    plain, clip = plain.iloc[0], clip.iloc[0]
    if clip.clipped_pct_max == 0:
        return "does nothing"
    higher = bool(clip.higher_is_better)
    better = clip.score_median > plain.score_best if higher else clip.score_median < plain.score_best
    worse = clip.score_median < plain.score_worst if higher else clip.score_median > plain.score_worst
    return "helps" if better else "hurts" if worse else "no effect"


def _fmt(row) -> str:
    if not np.isfinite(row.final_median):
        return "–"
    return f"{row.final_median:.3g} [{row.final_lo:.3g}, {row.final_hi:.3g}] (n={int(row.finished)})"


def _steps(row) -> str:
    if not row.reached:
        return f"target not reached (0/{int(row.runs)})"
    return f"target at step {row.steps_to_target:g} (median of {int(row.reached)}/{int(row.runs)} that reached it)"


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    sem, outcomes = tables.get("semantics"), tables.get("outcomes")
    if sem is None or sem.empty or outcomes is None or outcomes.empty:
        return [Verdict("C7", STATEMENT, "no runs or no semantics check", "–", ANCHOR, "not tested")]
    worst_diff = float(max(sem.clip_max_abs_diff.max(), sem.update_max_abs_diff.max()))
    sem_ok = worst_diff <= SEMANTICS_TOL
    controls = sem[sem.clipped.astype(bool)]
    sem_text = (f"Caffe semantics, {len(sem)} cases (1-3 SGD steps, momentum 0/0.9, weight decay 0-0.05): max abs "
                f"difference of clipped gradients and parameters to Caffe's formula and order {worst_diff:.1e} "
                f"(tolerance {SEMANTICS_TOL:g}); controls on the {len(controls)} clipped cases: decay-then-clip order "
                f"differs by up to {controls.control_other_order_diff.max():.1e}, per-tensor clipping by up to "
                f"{controls.control_per_tensor_diff.max():.1e}")
    effects, notes = {}, []
    for (network, optim), part in outcomes.groupby(["network", "optim"], sort=False):
        result = effect(part)
        if result is None:
            continue
        effects[network] = result
        plain, clip = part[part.arm == "none"].iloc[0], part[part.arm != "none"].iloc[0]
        notes.append(f"{network} ({optim}, lr {clip.lr:g}, {clip.metric}): {result}: no clip {_fmt(plain)}, seeds "
                     f"{plain.final_min:.3g}-{plain.final_max:.3g}, diverged {int(plain.diverged)}/{int(plain.runs)}, "
                     f"{_steps(plain)}; {clip.arm} {_fmt(clip)}, diverged {int(clip.diverged)}/{int(clip.runs)}, "
                     f"{_steps(clip)}, clipped {clip.clipped_pct_median:.1f} % of steps (median; max "
                     f"{clip.clipped_pct_max:.1f} %), median pre-clip norm {clip.grad_norm_median:.2g}")
    if not effects:
        return [Verdict("C7", STATEMENT, "no network with both arms", sem_text, ANCHOR, "not tested")]
    values = set(effects.values())
    if not sem_ok:
        verdict = "not tested"
    elif "hurts" in values:
        verdict = "not supported"
    else:
        verdict = "supported" if "helps" in values else "partly"
    seeds = int(outcomes.runs.max())
    measured = (f"our norm clip + SGD update vs Caffe's formula and order (no training); norm-1 clipping vs none on "
                f"{len(effects)} networks that do not explode, {seeds} seeds each: final metric, steps to target, "
                f"% of steps clipped")
    return [Verdict("C7", STATEMENT, measured, f"{sem_text}. " + "; ".join(notes), ANCHOR, verdict)]


# ---------------------------------------------------------------- figures
def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_run, outcomes = tables.get("runs"), tables.get("outcomes")
    if per_run is None or per_run.empty or outcomes is None:
        return []
    networks = list(dict.fromkeys(zip(per_run.network, per_run.optim)))
    seeds = int(outcomes.runs.max())
    sns.set_theme(style="whitegrid", context="notebook")
    fig, axes = plt.subplots(2, len(networks), figsize=(4.6 * len(networks), 7.0), squeeze=False)
    for col, (network, optim) in enumerate(networks):
        part = per_run[(per_run.network == network) & (per_run.optim == optim)]
        arms = ["none"] + sorted(a for a in part.arm.unique() if a != "none")
        summary = outcomes[(outcomes.network == network) & (outcomes.optim == optim)].set_index("arm")
        ax, ax2 = axes[0, col], axes[1, col]
        steps_max = 0
        for i, arm in enumerate(arms):
            rows = part[part.arm == arm]
            ok = rows[~rows.diverged.astype(bool)]
            x = i + (np.linspace(-0.15, 0.15, len(ok)) if len(ok) > 1 else np.zeros(len(ok)))
            marker, face = ("o", "none") if arm == "none" else ("s", "0.6")
            ax.scatter(x, ok.final_metric, marker=marker, facecolors=face, edgecolors="black", s=34, zorder=3)
            if arm in summary.index and np.isfinite(summary.loc[arm, "final_median"]):
                ax.hlines(summary.loc[arm, "final_median"], i - 0.25, i + 0.25, color="black", lw=2)
            if rows.diverged.astype(bool).any():
                ax.annotate(f"{int(rows.diverged.sum())}/{len(rows)} diverged", (i, 0.98),
                            xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=7)
            reached = pd.to_numeric(rows.steps_to_target, errors="coerce")
            steps_max = max(steps_max, reached.max() if reached.notna().any() else 0)
            xs = i + (np.linspace(-0.15, 0.15, len(rows)) if len(rows) > 1 else np.zeros(len(rows)))
            ax2.scatter(xs[reached.notna().to_numpy()], reached.dropna(), marker=marker, facecolors=face,
                        edgecolors="black", s=34, zorder=3)
            missing = int(reached.isna().sum())
            if missing:
                ax2.annotate(f"{missing}/{len(rows)} not\nreached", (i, 0.97), xycoords=("data", "axes fraction"),
                             ha="center", va="top", fontsize=7)
        labels = [a if a == "none" else f"{a}\n({summary.loc[a, 'clipped_pct_median']:.1f} % clipped)"
                  if a in summary.index else a for a in arms]
        for a in (ax, ax2):
            a.set_xticks(range(len(arms)), labels)
            a.set_xlim(-0.6, len(arms) - 0.4)
        metric, higher = part.metric.iloc[0], bool(part.higher_is_better.iloc[0])
        ax.set(ylabel=metric_axis_label(metric, higher), title=f"{network} ({optim}, lr {part.lr.iloc[0]:g})")
        target = f"{part.target_metric.iloc[0]} <= {part.target.iloc[0]:g}"
        ax2.set(ylabel=f"steps to held-out {target}", ylim=(0, max(steps_max, 1) * 1.25))
        for a in (ax, ax2):
            a.yaxis.label.set_size(9)
    save_figure(fig, out_dir / "every_network_final.png")
    return [Figure("every_network_final.png",
                   f"Networks that do not explode, without clipping (circles) and with norm-1 clipping (grey squares), "
                   f"{seeds} seeds each. Top: final held-out metric of every seed, bar = median. Bottom: first "
                   f"evaluation step at which the held-out target was reached, per seed (evaluations every 100 steps); "
                   f"the tick label gives the median % of steps where clipping fired.")]
