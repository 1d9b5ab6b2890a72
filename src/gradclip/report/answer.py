"""The report's title, its how-to-read line and its first lines for a two-arm comparison: divergence first, then each
arm's score and the paired effect, in words with their direction."""

from __future__ import annotations

import math

import pandas as pd

from gradclip.report.tables import num, seed_text, spread

DEFAULT_JOB = {"task": "charlm", "model": "lstm", "lr": 16.0}  # the main job's lr, picked so no clipping fails


def signed(value: float, digits: int = 3) -> str:
    """+0.113 / −0.866: a plain number with its sign (a real minus sign); digits=0: a whole number."""
    return ("−" if round(value, 9) < 0 else "+") + (f"{abs(value):.0f}" if digits == 0 else num(abs(value), digits))


def arms(runs: pd.DataFrame) -> tuple[str, str] | None:
    """The two groups of a two-arm sweep, the clipped one first (else in sweep order); None for other sweeps."""
    groups = list(dict.fromkeys(runs.group))
    if len(groups) != 2:
        return None
    clipped = [g for g in groups if (runs[runs.group == g].clip_method != "none").any()]
    first = clipped[0] if len(clipped) == 1 else groups[0]
    return first, next(g for g in groups if g != first)


def title(runs: pd.DataFrame) -> str:
    """What was compared, on what, with how many seeds: 'clip=norm1 vs clip=none on charlm / lstm, 4 seeds each'."""
    on = f"{', '.join(runs.task.unique())} / {', '.join(runs.model.unique())}"
    pair, groups = arms(runs), list(dict.fromkeys(runs.group))
    if pair:
        return f"{pair[0]} vs {pair[1]} on {on}, {seed_text(runs)} each"
    if len(groups) == 1:
        return f"{groups[0]} on {on}, {seed_text(runs)}"
    keys = [part.split("=", 1)[0] for part in groups[0].split(", ")]
    return f"{len(groups)} groups over {', '.join(keys)} on {on}, {seed_text(runs)} each"


def how_to_read(runs: pd.DataFrame) -> str:
    """One line under the title: what the scores and intervals mean."""
    first = runs.iloc[0]
    metric, better = first.metric, "higher" if first.higher_is_better else "lower"
    pair = arms(runs)
    effect = f"; an effect is {pair[0]} − {pair[1]} paired by seed, [its 95 % interval]" if pair else ""
    return (f"How to read this: {better} {metric} is better; a score is the median of the seeds' final held-out "
            f"{metric} [lowest, highest seed] over the runs that did not diverge (those are counted apart){effect}.")


def answer(runs: pd.DataFrame) -> list[str]:
    """The report's first lines when the sweep compares two arms on shared seeds: how many runs diverged per arm
    (Newcombe interval of the difference) when any did, then each arm's score, then the paired difference of the final
    held-out metric (t-interval: a bootstrap is degenerate at n <= 5), and a warning when n is too small to say much."""
    from scipy import stats as scipy_stats

    from gradclip.stats import rate_difference

    pair = arms(runs)
    if pair is None:
        return []
    a, b = (runs[runs.group == g].set_index("seed") for g in pair)
    seeds = sorted(set(a.index) & set(b.index))
    if not seeds:
        return []
    a, b, n = a.loc[seeds], b.loc[seeds], len(seeds)
    metric, higher = a.metric.iloc[0], bool(a.higher_is_better.iloc[0])
    name_a, name_b = pair
    ka, kb = int(a.diverged.sum()), int(b.diverged.sum())
    iv = rate_difference(ka, n, kb, n)
    fewer = (f"{name_a if ka < kb else name_b} diverged in {abs(ka - kb)} fewer runs of {n}" if ka != kb
             else "the same count")
    diverged = (f"**Diverged: {ka} of {n} runs with {name_a}, {kb} of {n} with {name_b}** — {fewer} (rate "
                f"difference {name_a} − {name_b}: {signed(100 * iv.estimate, 0)} points [{signed(100 * iv.low, 0)}, "
                f"{signed(100 * iv.high, 0)}], Newcombe 95 % interval"
                f"{', which includes 0' if iv.low <= 0 <= iv.high else ''}).")
    lines = [diverged] if ka or kb else []
    scores = "; ".join(f"{name} {spread(x.final_metric[~x.diverged], 4)} ({int((~x.diverged).sum())} run"
                       f"{'s' if (~x.diverged).sum() != 1 else ''})" for name, x in ((name_a, a), (name_b, b)))
    lines.append(f"Final held-out {metric} ({'higher' if higher else 'lower'} is better), median of the seeds' values "
                 f"[lowest, highest] over the runs that did not diverge: {scores}.")
    both = ~a.diverged.to_numpy() & ~b.diverged.to_numpy()
    d = (a.final_metric.to_numpy(float) - b.final_metric.to_numpy(float))[both]
    if len(d) >= 2:
        half = scipy_stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d))
        gain = d if higher else -d  # in name_a's favour: positive = name_a better
        winner, loser, gain = (name_a, name_b, gain) if gain.mean() >= 0 else (name_b, name_a, -gain)
        low, high = gain.mean() - half, gain.mean() + half
        lines.append(f"Effect, paired by seed (same initialisation and batch order) on the {len(d)} seeds where neither "
                     f"diverged: **{winner} better by {num(gain.mean())} {metric}** [{signed(low)}, {signed(high)}] "
                     f"({winner}'s advantage over {loser}, 95 % t-interval"
                     f"{'; it includes 0, so the direction is not established' if low <= 0 else ''}).")
    else:
        lines.append(f"Effect on the final held-out {metric}: fewer than 2 seeds where neither arm diverged, so no "
                     "interval.")
    if not (ka or kb):
        lines.append(f"Diverged: none of the {2 * n} runs.")
    if n < 5:
        lines.append(f"Warning: n = {n} per arm is too few to say how big the difference is or whether it is there; "
                     f"add seeds (seed=0,1,2,...) before quoting it.")
    first_run = runs.iloc[0]
    if all(first_run.get(k) == v for k, v in DEFAULT_JOB.items()):
        lines.append("lr 16 was chosen so that no clipping fails here (README: calibration); with each arm's lr "
                     "tuned and 20 fresh seeds, see results/REPORT.md (make reproduce, make verify) for what holds.")
    return lines
