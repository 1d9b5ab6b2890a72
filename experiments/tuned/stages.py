"""The protocol's stages: tuning (with bracketing), the C3 length, the targets, and the deciding blocks. Each stage
is a list of jobs handed to ``sweep(stage, jobs) -> (runs, steps)``; each run is read back from its RunSummary fields
and its step rows (``outcomes``)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.tuned.design import (ARMS, DIVERGE_FACTORS, LATE_SHARE, LENGTHS, LOG_SCALE,
                                      MAX_EXTENSIONS, PRIMARY_FACTOR, SETUPS, SMALLEST, SMOOTH_SHARE, TUNING_SEEDS,
                                      cells, job)
from gradclip.report.figures import EVENTS

CURVE_POINTS = 50  # bins of a run's training loss curve in the tables (the B3 card's figure)
# the per-step diagnostics of the spike remedies (their ``diagnostics()``): AdaGC's share of tensors clipped, SPAM's
# share of gradient entries clipped, StableAdamW's largest update RMS and share of tensors whose lr it lowered
SHARES = ("tensor_clip_share", "spike_clipped_share", "update_rms", "update_clipped_share")


# ---------------------------------------------------------------- runs as rows
def smoothed_loss(train: pd.DataFrame, steps: int) -> pd.Series:
    """The training loss averaged over the last SMOOTH_SHARE of the planned steps, indexed by step."""
    window = max(1, round(SMOOTH_SHARE * steps))
    return train.set_index("step").loss.rolling(window).mean().dropna()


def remedy_diagnostics(mine: pd.DataFrame) -> dict:
    """A run's spike-remedy diagnostics, where it logged them: the steps of each event (skipped, moments reset) as
    "step:event" words, and the mean of each per-step share or RMS over the steps that logged it."""
    events = [f"{int(s)}:{name}" for name in EVENTS if name in mine for s in mine.step[mine[name] > 0]]
    found = {name: float(mine[name].mean()) for name in SHARES if name in mine and mine[name].notna().any()}
    return {"events": " ".join(events), **found}


def train_curve(train: pd.DataFrame, points: int = CURVE_POINTS) -> str:
    """The training loss averaged over ``points`` equal bins of steps, as "step:loss" words (step: the bin's last)."""
    if train.empty:
        return ""
    bins = np.array_split(train.to_numpy(dtype=float), min(points, len(train)))
    return " ".join(f"{int(b[-1, 0])}:{b[:, 1].mean():.5g}" for b in bins)


def outcomes(runs: pd.DataFrame, steps: pd.DataFrame, planned: dict[tuple, dict], target: dict | None = None):
    """One row per run: what it was (looked up by its job in ``planned``), its final held-out metric at the suite's
    divergence rule (NaN when its batch loss went above PRIMARY_FACTOR x the first), the untrained score, the largest
    loss ratio, the best smoothed training loss, the step it reached ``target[setup]`` (inf: never), its eval curve,
    its training loss curve (binned) and its spike remedy's diagnostics."""
    rows = []
    for r in runs.itertuples():
        mine = steps[steps.run == r.run]
        column = f"val_{r.metric}"
        curve = mine[mine[column].notna()][["step", column]]
        train = mine[mine.loss.notna()][["step", "loss"]]
        losses = train.loss.to_numpy(dtype=float)
        ratio = float(np.max(losses) / losses[0]) if len(losses) and np.isfinite(losses).all() else math.inf
        over = train.step[losses > PRIMARY_FACTOR * losses[0]] if len(losses) else pd.Series(dtype=float)
        stop = float(over.iloc[0]) if len(over) else math.inf  # where the suite's rule ends it
        diverged = ratio > PRIMARY_FACTOR or bool(r.diverged)  # (also: non-finite gradients, at any factor)
        final = float(r.final_metric) if r.final_metric is not None and not diverged else math.nan
        smooth = smoothed_loss(train[np.isfinite(losses)], int(r.steps)) if len(train) else pd.Series(dtype=float)
        smooth = smooth[smooth.index < stop]
        item = {**planned[tuple(r.overrides)], "run": r.run, "lr": r.lr, "metric": r.metric,
                "higher": bool(r.higher_is_better), "diverged": diverged, "loss_ratio": ratio,
                **{f"diverged_{f:g}x": ratio > f or bool(r.diverged) for f in DIVERGE_FACTORS}, "final": final,
                "start": float(curve[column].iloc[0]), "steps": int(r.steps),
                "grad_norm_median": r.grad_norm_median, "train_best": float(smooth.min()) if len(smooth) else math.nan,
                "curve": " ".join(f"{s}:{v:.6g}" for s, v in zip(curve.step, curve[column])),
                "train_curve": train_curve(train), **remedy_diagnostics(mine)}
        if target is not None:
            t = target.get(item["setup"], math.nan)
            hit = smooth.index[smooth <= t] if math.isfinite(t) else []
            item["reached"] = float(hit[0]) if len(hit) else math.inf
        rows.append(item)
    return pd.DataFrame(rows)


def score(frame: pd.DataFrame) -> pd.Series:
    """Higher is better for every metric: accuracy as it is, bpc and MSE negated (MSE on a log scale); a diverged run
    scores what its untrained model scored (the first evaluation), so every comparison stays on the metric's scale."""
    values = frame.final.where(~frame.diverged, frame.start)
    values = np.log(values) if frame.metric.iloc[0] in LOG_SCALE else values
    return values if frame.higher.iloc[0] else -values


def curve_points(curve: str) -> list[tuple[int, float]]:
    return [(int(s), float(v)) for s, v in (item.split(":") for item in str(curve).split())]


def late_gain(curve: str, until: int, metric: str, higher: bool) -> float:
    """How much the held-out metric improved over the last LATE_SHARE of the steps up to ``until`` (comparison
    scale: positive = better)."""
    points = [(s, v) for s, v in curve_points(curve) if s <= until]
    before = [v for s, v in points if s <= (1 - LATE_SHARE) * until]
    if not before or not points:
        return math.nan
    start, end = before[-1], points[-1][1]
    if metric in LOG_SCALE:
        return math.log(start / end) if start > 0 and end > 0 else math.nan
    return end - start if higher else start - end


# ---------------------------------------------------------------- tuning
def configs(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per setup, clip and k: median score over the tuning seeds and the diverged seeds (a diverged run is the worst
    here: selection never prefers an lr that diverged)."""
    scored = pd.concat([score(part).where(~part.diverged, -math.inf) for _, part in tuning.groupby("setup")])
    return tuning.assign(score=scored).groupby(["setup", "config", "k"], as_index=False).agg(
        score=("score", "median"), diverged=("diverged", "sum"), seeds=("seed", "nunique"))


def choose(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per setup and tuned arm: the chosen (clip, k), whether it is bracketed, and what to run to bracket it."""
    grid, rows = configs(tuning), []
    for setup, spec in SETUPS.items():
        mine = grid[grid.setup == setup]
        for arm in (a for a in spec.arms if ARMS[a].tuned):
            options = mine[mine.config.isin([" ".join(c) for _, c in cells(setup, arm)])]
            if options.empty:
                continue
            order = options.assign(neg=-options.score).sort_values(["neg", "diverged", "k"], kind="stable")
            best = order.iloc[0]
            line = options[options.config == best.config].set_index("k")
            plateau = line.index[(line.score == best.score) & (line.diverged <= best.diverged)]
            low, high = int(best.k), int(best.k)  # the run of lrs next to the best that score as well
            while low - 1 in plateau:
                low -= 1
            while high + 1 in plateau:
                high += 1
            sides = {}
            for side, k in ((-1, low - 1), (1, high + 1)):
                if k not in line.index:
                    sides[side] = "missing"
                else:
                    worse = line.loc[k, "score"] < best.score or line.loc[k, "diverged"] > 0
                    sides[side] = "worse" if worse else "not worse"
            threshold = next(t for t, c in cells(setup, arm) if " ".join(c) == best.config)
            extensions = sum(1 for k in line.index if k < min(spec.grid)) + sum(1 for k in line.index
                                                                                 if k > max(spec.grid))
            rows.append({"setup": setup, "arm": arm, "config": best.config, "threshold": threshold, "k": int(best.k),
                         "score": best.score, "diverged": int(best.diverged),
                         "bracketed": all(v == "worse" for v in sides.values()),
                         "extend": [{-1: low - 1, 1: high + 1}[s] for s, v in sides.items() if v == "missing"],
                         "extensions": extensions,
                         "trials": int(tuning[(tuning.setup == setup) & tuning.config.isin(options.config)].shape[0])})
    return pd.DataFrame(rows)


def _stage(sweep, stage: str, jobs: list[tuple[dict, list[str]]], target=None) -> pd.DataFrame:
    planned = {tuple(overrides): meta for meta, overrides in jobs}
    runs, steps = sweep(stage, [overrides for _, overrides in jobs])
    return outcomes(runs, steps, planned, target)


def tune(sweep) -> pd.DataFrame:
    """The tuning stage: the grid, then up to MAX_EXTENSIONS rounds that bracket every arm's best lr."""
    todo = {(setup, clip, k) for setup, spec in SETUPS.items() for arm in spec.arms if ARMS[arm].tuned
            for _, clip in cells(setup, arm) for k in spec.grid}
    done, tuning = set(), pd.DataFrame()
    for round_ in range(1 + MAX_EXTENSIONS):
        jobs = [({"setup": s, "config": " ".join(c), "k": k, "seed": seed}, job(s, c, k, seed, "validation"))
                for s, c, k in sorted(todo - done) for seed in TUNING_SEEDS]
        tuning = pd.concat([tuning, _stage(sweep, f"tune-{round_ + 1}", jobs)], ignore_index=True)
        done |= todo
        todo = {(c.setup, tuple(c.config.split()), k) for c in choose(tuning).itertuples() for k in c.extend
                if c.extensions < (limit := SETUPS[c.setup].max_extensions)
                and min(SETUPS[c.setup].grid) - limit <= k <= max(SETUPS[c.setup].grid) + limit}
        if not todo - done:
            break
    return tuning.sort_values(["setup", "config", "k", "seed"], ignore_index=True)


# ---------------------------------------------------------------- the C3 length and the targets
def base_steps(tuning: pd.DataFrame, setup: str) -> int:
    return int(tuning[tuning.setup == setup].steps.iloc[0])


def lengths(sweep, tuning: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """Per setup with C3 arms: norm 1 at its tuned lr on the tuning seeds (validation split) for the longest length;
    the C3 length is the first of LENGTHS at which its median late gain is below the metric's smallest effect."""
    c3 = [s for s, spec in SETUPS.items() if "norm1_long" in spec.arms]
    jobs = []
    for setup in c3:
        chosen = choices.set_index(["setup", "arm"]).loc[(setup, "norm1")]
        base = base_steps(tuning, setup)
        for seed in TUNING_SEEDS:
            jobs.append(({"setup": setup, "config": chosen.config, "k": int(chosen.k), "seed": seed},
                         job(setup, tuple(chosen.config.split()), int(chosen.k), seed, "validation",
                             f"steps={max(LENGTHS) * base}", f"eval_every={max(1, base // 10)}")))
    runs = _stage(sweep, "length", jobs)
    rows = []
    for setup in c3:
        mine, base = runs[runs.setup == setup], base_steps(tuning, setup)
        metric = mine.metric.iloc[0]
        gains = {m: float(np.median([late_gain(r.curve, m * base, metric, r.higher) for r in mine.itertuples()]))
                 for m in LENGTHS}
        pick = next((m for m in LENGTHS if gains[m] < SMALLEST[metric]), max(LENGTHS))
        rows.append({"setup": setup, "base_steps": base, "multiple": pick, "steps": pick * base,
                     **{f"gain_{m}x": g for m, g in gains.items()}})
    return pd.DataFrame(rows)


def targets(tuning: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """Per setup: the steps-to-target target, a smoothed training loss that every tuning run of tuned no clip and
    norm 1 that did not diverge reached (the highest of their best smoothed losses): the same split as the deciding
    runs' training loss, so at least 90 % of tuned runs reach it by construction."""
    rows = []
    for setup in SETUPS:
        chosen = choices[(choices.setup == setup) & choices.arm.isin(["none", "norm1"])]
        if chosen.empty:  # no steps-to-target row runs here
            rows.append({"setup": setup, "target": math.nan, "reached_by": "–"})
            continue
        runs = pd.concat([tuning[(tuning.setup == setup) & (tuning.config == c.config) & (tuning.k == c.k)]
                          for c in chosen.itertuples()])
        ok = runs[~runs.diverged]
        rows.append({"setup": setup, "target": float(ok.train_best.max()) if len(ok) else math.nan,
                     "reached_by": f"{len(ok)}/{len(runs)}"})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- deciding
def deciding_arms(setup: str, choices: pd.DataFrame, plan: pd.DataFrame) -> dict[tuple, list[str]]:
    """(config, k, steps) -> the arms that run it: arms that chose the same configuration share its runs."""
    mine = choices[choices.setup == setup].set_index("arm")
    arms: dict[tuple, list[str]] = {}
    plan = plan.set_index("setup")
    for arm in SETUPS[setup].arms:
        spec = ARMS[arm]
        source = spec.lr_of or arm
        if source not in mine.index:
            continue
        if arm == "none_at_clip_lr" and not mine.loc["none", "k"] < mine.loc["norm1", "k"]:
            continue  # no clip's tuned lr is not below norm 1's: nothing smaller to compare with
        config = mine.loc["none", "config"] if arm.startswith("none") else mine.loc[source, "config"]
        k = int(mine.loc[source, "k"]) + spec.lr_shift
        steps = int(plan.loc[setup, "c3_steps"]) if spec.long else int(plan.loc[setup, "base_steps"])
        arms.setdefault((config, k, steps), []).append(arm)
    return arms


def decide(sweep, choices: pd.DataFrame, plan: pd.DataFrame, block: str) -> pd.DataFrame:
    """Every arm on the block's seeds, scored on the test split, with divergence read up to the largest factor."""
    jobs, shared, by_setup = [], {}, plan.set_index("setup")
    for setup, spec in SETUPS.items():
        for (config, k, steps), names in deciding_arms(setup, choices, plan).items():
            shared[(setup, config, k, steps)] = names
            base = int(by_setup.loc[setup, "base_steps"])
            every = max(1, int(by_setup.loc[setup, "eval_every"]) * steps // base)
            for seed in spec.blocks[block]:
                jobs.append(({"setup": setup, "config": config, "k": k, "seed": seed},
                             job(setup, tuple(config.split()), k, seed, "test", f"steps={steps}",
                                 f"eval_every={every}", f"diverge_factor={max(DIVERGE_FACTORS):g}")))
    target = by_setup.target.to_dict()
    found = _stage(sweep, block, jobs, target)
    return pd.concat([found[(found.setup == s) & (found.config == c) & (found.k == k) & (found.steps == n)]
                      .assign(arm=arm, same_as=names[0] if arm != names[0] else "")
                      for (s, c, k, n), names in shared.items() for arm in names], ignore_index=True
                     ).assign(block=block)
