"""The report's first lines for a two-arm comparison: divergence, then the paired difference, in words."""

from __future__ import annotations

import math

import pandas as pd


DEFAULT_JOB = {"task": "charlm", "model": "lstm", "lr": 16.0}  # the main job's lr, picked so no clipping fails


def answer(runs: pd.DataFrame) -> list[str]:
    """The report's first lines when the sweep compares two arms on shared seeds: the paired difference of the final
    held-out metric (t-interval: a bootstrap is degenerate at n <= 5) and of the divergence rate (Newcombe), with n,
    in sentences one can quote, and a warning when n is too small to say much."""
    from scipy import stats as scipy_stats

    from gradclip.stats import rate_difference

    groups = list(dict.fromkeys(runs.group))
    if len(groups) != 2:
        return []
    clipped = [g for g in groups if (runs[runs.group == g].clip_method != "none").any()]
    first = clipped[0] if len(clipped) == 1 else groups[0]
    a, b = (runs[runs.group == g].set_index("seed") for g in (first, next(g for g in groups if g != first)))
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return []
    a, b, n = a.loc[seeds], b.loc[seeds], len(seeds)
    metric, higher = a.metric.iloc[0], bool(a.higher_is_better.iloc[0])
    both = ~a.diverged.to_numpy() & ~b.diverged.to_numpy()
    d = (a.final_metric.to_numpy(float) - b.final_metric.to_numpy(float))[both]
    name_a, name_b = (str(x.group.iloc[0]) for x in (a, b))
    lines = [f"**{name_a}** vs **{name_b}**, {n} seed{'s' if n > 1 else ''} each, paired by seed (same initialisation "
             f"and batch order)."]
    if len(d) >= 2:
        half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        better = (d.mean() > 0) == higher
        lines.append(f"Final held-out {metric} ({'higher' if higher else 'lower'} is better) on the {len(d)} seeds "
                     f"where neither diverged: {a.final_metric[both].mean():.4g} with {name_a} vs "
                     f"{b.final_metric[both].mean():.4g} with {name_b}: {name_a} {'better' if better else 'worse'} by "
                     f"{abs(d.mean()):.3g} {metric} (95 % t-interval of the paired difference {name_a} − {name_b}: "
                     f"{d.mean() - half:+.3g} to {d.mean() + half:+.3g}"
                     f"{', which includes 0' if abs(d.mean()) <= half else ''}).")
    else:
        lines.append(f"Final held-out {metric}: fewer than 2 seeds where neither arm diverged, so no interval.")
    ka, kb = int(a.diverged.sum()), int(b.diverged.sum())
    iv = rate_difference(ka, n, kb, n)
    lines.append(f"Diverged: {ka}/{n} runs with {name_a}, {kb}/{n} with {name_b} (difference {100 * iv.estimate:+.0f} "
                 f"points, Newcombe 95 % interval {100 * iv.low:+.0f} to {100 * iv.high:+.0f}).")
    if n < 5:
        lines.append(f"Warning: n = {n} per arm is too few to say how big the difference is or whether it is there; "
                     f"add seeds (seed=0,1,2,...) before quoting it.")
    first_run = runs.iloc[0]
    if all(first_run.get(k) == v for k, v in DEFAULT_JOB.items()):
        lines.append("lr 16 was chosen so that no clipping fails here (README: calibration); with each arm's lr "
                     "tuned and 10 fresh seeds, see results/REPORT.md (make reproduce) for what holds.")
    return lines
