"""C3, C5, C6, C7 and B2 under one protocol: every arm tuned with the same budget on the validation split, then
decided on seeds tuning never saw and on the test split, by an interval (issue "Verdicts that hold").

    python experiments/tuned.py            # tuning (with its bracketing extensions), then the deciding block
    python experiments/tuned.py --verify   # the deciding stage again on a second fresh block of seeds

1. Arms (``SETUPS``): no clipping; norm clipping at 1; norm clipping with its threshold tuned over 1 and 0.5x / 10x
   the setup's median gradient norm; on the two MLP setups that explode, AutoClip, AGC, ZClip and ZClip without its
   cap at their reference defaults. Every arm is tuned over the same half-decade lr grid (``GRID`` x the setup's lr)
   with the same seeds (``TUNING_SEEDS``) and steps; budget = (configuration, seed) trials, printed per arm.
2. Bracketing: an arm's best lr L is bracketed when L / sqrt(10) and L x sqrt(10) were run and each is worse (median
   score) or diverged on a tuning seed; otherwise the grid grows by one half-decade on that side, at most twice;
   then "not bracketed" and the arm's rows are undecided.
3. Selection: best median final *validation* metric over the tuning seeds (diverged = worst; ties: fewer divergences,
   then the smaller lr). One choice per arm serves every row.
4. Deciding: each choice rerun on ``BLOCKS["decide"]`` (and ``--verify``: ``BLOCKS["verify"]``), scored on the *test*
   split. Steps to target use a target fixed from the tuning block (``target``), with evaluations at least every 1/10
   of the tuning block's steps to it.
5.-7. The statistics and verdict words of every row are in ``ROWS`` and ``RULE``, written before the runs.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments import caffe  # noqa: E402
from experiments.common import Figure, Verdict, save_figure  # noqa: E402
from gradclip import stats  # noqa: E402

NAME = "tuned"
TITLE = "C3, C5, C6, C7, B2: every arm tuned alike, decided on fresh seeds and the test split, by intervals"
CLAIMS = ("C3", "C5", "C6", "C7", "B2")
COMMAND = "python experiments/tuned.py [--verify]  (make reproduce / make verify)"

TUNING_SEEDS = (0, 1, 2)
BLOCKS = {"decide": tuple(range(1000, 1010)), "verify": tuple(range(2000, 2010))}
GRID = (-2, -1, 0, 1)  # lr = setup lr x 10^(k/2): 0.1, 0.316, 1, 3.16 x; extended by one k at most twice per side
MAX_EXTENSIONS = 2
K_TRIALS = 2  # "less trial and error": expected best validation score after this many random lrs of the grid
# Smallest effects worth caring about, on each comparison's scale (fixed before the runs).
SMALLEST = {"bpc": 0.05, "accuracy": 0.02, "mse": math.log(1.25), "steps": math.log(1.25), "diverged": 0.20,
            "spread": math.log(1.5)}
LOG_SCALE = {"mse"}  # compared as log ratios
SPREAD_ALPHA_SHARE = 0.6  # the swap test's interval at 1 - 0.6 x 5 % = 97 %: centred arms are only nearly exchangeable
STUCK_SHARE = 0.2  # "gets stuck": improves by less than the smallest effect over this last share of steps
EXTRA = ["+experiment=tuned"]  # conf/experiment/tuned.yaml: settings every stage shares
ADAPTIVE = ("autoclip", "agc", "zclip", "zclip_nocap")
CLIP = {"none": ["clip=none"], "norm1": ["clip=norm1"], "autoclip": ["clip=autoclip"], "agc": ["clip=agc"],
        "zclip": ["clip=zclip"], "zclip_nocap": ["clip=zclip/nocap"]}
ARM_NAMES = {"none": "no clip", "norm1": "norm 1", "norm_tuned": "norm, tuned threshold", "autoclip": "AutoClip",
             "agc": "AGC", "zclip": "ZClip", "zclip_nocap": "ZClip, no cap",
             "none_at_clip_lr": "no clip at norm 1's lr"}


@dataclass(frozen=True)
class Setup:
    arms: tuple[str, ...]
    grad_norm: float = math.nan  # median pre-clip gradient norm of norm-1 runs at the setup's lr, seeds 0-2
    fails: str = ""  # what makes no clipping fail here (scope)


EXPLODING = ("none", "norm1", "norm_tuned")
SETUPS = {  # grad_norm: results/threshold of commit 56dc44c (norm_median at threshold 1), read before these runs
    "charlm_lstm": Setup(EXPLODING, 0.17, "plain SGD at lr 16 on an LSTM, no gradient noise scaling"),
    "regression_mlp": Setup(EXPLODING + ADAPTIVE, 165.0, "unscaled regression targets (std ~100), SGD momentum 0.9"),
    "digits_deep_mlp": Setup(EXPLODING + ADAPTIVE, 4.7,
                             "a 20-layer tanh MLP (width 128) at init gain 2, plain SGD at lr 1"),
    "digits_mlp": Setup(("none", "norm1")),
    "digits_mlp_adam": Setup(("none", "norm1")),
}
CLIFF_SETUPS = tuple(name for name, s in SETUPS.items() if "norm_tuned" in s.arms)


@dataclass(frozen=True)
class Row:
    claim: str
    label: str
    a: str  # the claim says arm a does better than (or as well as) arm b
    b: str
    measure: str  # final | steps | diverged | spread | stuck | tuning
    kind: str  # superiority | noninferiority
    setups: tuple[str, ...]


ROWS = [Row("C3", "a small lr avoids divergence", "none", "none_at_clip_lr", "diverged", "superiority", CLIFF_SETUPS),
        Row("C3", "a small lr trains slower than clipping", "norm1", "none", "steps", "superiority", CLIFF_SETUPS),
        Row("C3", "a small lr gets stuck", "norm1", "none", "stuck", "superiority", CLIFF_SETUPS),
        Row("C5", "clipping trains faster", "norm1", "none", "steps", "superiority", CLIFF_SETUPS),
        Row("C5", "clipping is more predictable", "norm1", "none", "spread", "superiority", CLIFF_SETUPS),
        Row("C5", "clipping needs less lr trial and error", "norm1", "none", "tuning", "superiority", CLIFF_SETUPS),
        Row("C6", "threshold 1 is as good as a tuned one", "norm1", "norm_tuned", "final", "noninferiority",
            CLIFF_SETUPS),
        Row("C7", "norm-1 clipping is harmless on every network", "norm1", "none", "final", "noninferiority",
            tuple(SETUPS))]
ROWS += [Row("B2", f"{ARM_NAMES[m]} at its defaults matches the tuned threshold", m, "norm_tuned", "final",
             "noninferiority", tuple(s for s in SETUPS if m in SETUPS[s].arms)) for m in ADAPTIVE]

RULE = f"""Arms: no clip, norm 1, norm with a tuned threshold (1, 0.5x and 10x the setup's median gradient norm), and
on the two exploding MLPs AutoClip / AGC / ZClip / ZClip without cap at their reference defaults; each tuned over the
lr grid {', '.join(f'{10 ** (k / 2):.3g}' for k in GRID)} x the setup's lr (extended by a half-decade, at most twice,
until its best lr is bracketed; else its rows are undecided), {len(TUNING_SEEDS)} tuning seeds, selected by the median
final validation metric (diverged = worst). Decided on {len(BLOCKS['decide'])} fresh seeds
({BLOCKS['decide'][0]}-{BLOCKS['decide'][-1]}) on the test split, verified on {BLOCKS['verify'][0]}-
{BLOCKS['verify'][-1]}. Final metric: the paired difference of the two arms (log ratio for MSE) with the exact
sign-flip 95 % interval when no run of either arm diverged, else P(a ends better than b) (diverged = worst, ties 1/2)
with its sign-flip interval. Divergence: Newcombe's interval of the difference of rates. Steps to target (the worse
tuned arm's median validation metric): paired log ratio when every run reached it, else P(a reaches it first).
Predictable: divergence rates when any run diverged, else log SD ratio with a swap-test interval. Less trial and
error: the expected best validation score after {K_TRIALS} random lrs of the grid (Dodge et al. 2019), per tuning seed,
sign-flip interval. Gets stuck: clipping better by more than the smallest effect (interval above it; P(a better) above
1/2 when runs diverged) while no clip improves by less than the smallest effect over the last {STUCK_SHARE:.0%} of
steps. Smallest effects: bpc 0.05, accuracy 0.02, MSE and steps a ratio of 1.25, divergence 20 points, SD a ratio of
1.5. Superiority rows: supported when the interval excludes no effect in the claimed direction, contradicted when in
the other, no detectable effect when it lies within the smallest effect, else undecided. As-good-as rows: supported
when the interval's low end is above minus the smallest effect (above 1/2 on the P scale), contradicted when its high
end is below it, else undecided. Contradicted on a setup needs Holm's correction across the row's setups. A row is
supported only if supported on every setup, contradicted if contradicted on one and supported on none,
setup-dependent if both. The verify block: when its verdict and the first block's point in opposite directions (or
one finds no detectable effect where the other finds one), the row is undecided; otherwise the pooled seeds decide.
Why sign-flip and not a paired BCa bootstrap: at n = 10 with no effect, BCa excludes zero in 9-11 % of simulated
tables (15 % with t(3) noise), the sign-flip interval in at most 5 % (tests/test_stats.py); the swap test is read at
97 % because at 95 % it decides in 5.6-6.1 % (tests/test_tuned_rules.py)."""

SCOPE = ("What makes no clipping fail here, and so what these verdicts cover: "
         + "; ".join(f"{name}: {spec.fails}" for name, spec in SETUPS.items() if spec.fails)
         + "; the two shallow digits MLPs (SGD lr 0.1, Adam lr 1e-3) do not explode. Every run diverges when its "
         "training loss exceeds 5 x its first loss (diverge_factor), a rule of this suite. The intervals cover "
         "training randomness (initialisation and batch order, one seed each) on one fixed data split per task, not "
         "a new sample of data, and one architecture per setup; the lr grids are x10^(k/2) of each setup's lr.")


# ---------------------------------------------------------------- the grid and its jobs
def lr_scale(k: int) -> str:
    return f"{10 ** (k / 2):.4g}"


def thresholds(setup: str) -> list[float]:
    g = SETUPS[setup].grad_norm
    return [1.0] + [float(f"{x:.2g}") for x in (0.5 * g, 10 * g)]


def cells(setup: str, arm: str) -> list[tuple[float | None, tuple[str, ...]]]:
    """(threshold, clip overrides) of each configuration an arm tunes besides the lr."""
    if arm == "norm_tuned":
        return [(t, tuple(CLIP["norm1"] if t == 1 else ["clip=norm", f"clip.threshold={t:g}"]))
                for t in thresholds(setup)]
    return [(1.0 if arm == "norm1" else None, tuple(CLIP[arm]))]


def job(setup: str, clip: tuple[str, ...], k: int, seed: int, split: str, *extra: str) -> list[str]:
    return [f"setup={setup}", *clip, f"optim.lr_scale={lr_scale(k)}", f"seed={seed}", f"task.split={split}", *extra]


def parse(overrides) -> dict:
    """setup, clip overrides, k and seed of a job, from its override list."""
    items = [o for o in overrides if not o.startswith(("task.split=", "eval_every="))]
    clip = tuple(o for o in items if o.startswith("clip"))
    values = dict(o.split("=", 1) for o in items)
    return {"setup": values["setup"], "config": " ".join(clip),
            "k": int(round(2 * math.log10(float(values["optim.lr_scale"])))), "seed": int(values["seed"])}


# ---------------------------------------------------------------- tables from the runs
def evals(steps: pd.DataFrame, metric: str) -> pd.DataFrame:
    column = f"val_{metric}"
    return steps[steps[column].notna()][["run", "step", column]].rename(columns={column: "value"})


def outcomes(runs: pd.DataFrame, steps: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its job, final held-out metric (NaN if diverged), the untrained score, its eval curve."""
    rows = []
    for r in runs.itertuples():
        curve = evals(steps[steps.run == r.run], r.metric)
        final = float(r.final_metric) if r.final_metric is not None else math.nan
        rows.append({**parse(r.overrides), "run": r.run, "lr": r.lr, "metric": r.metric,
                     "higher": bool(r.higher_is_better), "diverged": bool(r.diverged) or not math.isfinite(final),
                     "final": final if not r.diverged else math.nan, "start": float(curve.value.iloc[0]),
                     "steps": int(r.steps), "grad_norm_median": r.grad_norm_median,
                     "curve": " ".join(f"{s}:{v:.6g}" for s, v in zip(curve.step, curve.value))})
    return pd.DataFrame(rows)


def score(frame: pd.DataFrame) -> pd.Series:
    """Higher is better for every metric: accuracy as it is, bpc and MSE negated (MSE on a log scale); diverged is
    -inf."""
    values = frame.final.where(~frame.diverged)
    values = np.log(values) if frame.metric.iloc[0] in LOG_SCALE else values
    values = values if frame.higher.iloc[0] else -values
    return values.fillna(-math.inf)


def configs(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per setup, clip and k: median score over the tuning seeds and the diverged seeds."""
    frame = tuning.assign(score=pd.concat([score(part) for _, part in tuning.groupby("setup")]))
    return frame.groupby(["setup", "config", "k"], as_index=False).agg(
        score=("score", "median"), diverged=("diverged", "sum"), seeds=("seed", "nunique"))


def choose(tuning: pd.DataFrame) -> pd.DataFrame:
    """Per setup and arm: the chosen (clip, k), whether it is bracketed, and what to run to bracket it."""
    grid, rows = configs(tuning), []
    for setup, spec in SETUPS.items():
        mine = grid[grid.setup == setup]
        for arm in spec.arms:
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
            extensions = sum(1 for k in line.index if k < min(GRID)) + sum(1 for k in line.index if k > max(GRID))
            rows.append({"setup": setup, "arm": arm, "config": best.config, "threshold": threshold, "k": int(best.k),
                         "lr_scale": float(lr_scale(int(best.k))), "score": best.score, "diverged": int(best.diverged),
                         "bracketed": all(v == "worse" for v in sides.values()),
                         "extend": [{-1: low - 1, 1: high + 1}[s] for s, v in sides.items() if v == "missing"],
                         "extensions": extensions,
                         "trials": int(tuning[(tuning.setup == setup) & tuning.config.isin(options.config)].shape[0])})
    return pd.DataFrame(rows)


def reached(curve: str, target: float, higher: bool) -> float:
    """First evaluation step at which a run reaches ``target`` (inf if never)."""
    for item in str(curve).split():
        step, value = item.split(":")
        if math.isfinite(float(value)) and (float(value) >= target if higher else float(value) <= target):
            return float(step)
    return math.inf


def improvement(curve: str, steps: int, metric: str, higher: bool) -> float:
    """How much the held-out metric improved over the last STUCK_SHARE of steps, on the comparison scale."""
    points = [(int(s), float(v)) for s, v in (item.split(":") for item in str(curve).split())]
    before = [v for s, v in points if s <= (1 - STUCK_SHARE) * steps]
    start, end = before[-1], points[-1][1]
    if metric in LOG_SCALE:
        return math.log(start / end) if start > 0 and end > 0 else math.nan
    return end - start if higher else start - end


def targets(tuning: pd.DataFrame, choices: pd.DataFrame) -> pd.DataFrame:
    """Per setup: the steps-to-target target (the worse of tuned no clip / norm 1's median final validation metric)
    and the deciding runs' evaluation interval (at most 1/10 of the tuning block's median steps to it)."""
    rows = []
    for setup in SETUPS:
        chosen = choices[(choices.setup == setup) & choices.arm.isin(["none", "norm1"])]
        runs = tuning[(tuning.setup == setup)]
        finals = []
        for c in chosen.itertuples():
            mine = runs[(runs.config == c.config) & (runs.k == c.k)]
            finals.append((float(score(mine).median()), mine))
        worst, mine = min(finals, key=lambda f: f[0])
        higher, metric = bool(mine.higher.iloc[0]), mine.metric.iloc[0]
        if not math.isfinite(worst):
            rows.append({"setup": setup, "target": math.nan, "eval_every": 0})
            continue
        value = math.exp(-worst) if metric in LOG_SCALE else (worst if higher else -worst)
        first = min(float(np.median([reached(r.curve, value, higher) for r in m.itertuples()])) for _, m in finals)
        spacing = int(np.diff([int(i.split(":")[0]) for i in mine.curve.iloc[0].split()][:2])[0])
        every = spacing if not math.isfinite(first) else max(1, min(spacing, int(first // 10)))
        rows.append({"setup": setup, "target": value, "eval_every": every})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- the stages
def tune(sweep) -> pd.DataFrame:
    """The tuning stage: the grid, then up to MAX_EXTENSIONS rounds that bracket every arm's best lr."""
    todo = {(setup, clip, k) for setup, spec in SETUPS.items() for arm in spec.arms
            for _, clip in cells(setup, arm) for k in GRID}
    done, tuning = set(), pd.DataFrame()
    for round_ in range(1 + MAX_EXTENSIONS):
        jobs = [job(s, c, k, seed, "validation") for s, c, k in sorted(todo - done) for seed in TUNING_SEEDS]
        runs, steps = sweep(f"tune-{round_ + 1}", jobs)
        done |= todo
        tuning = pd.concat([tuning, outcomes(runs, steps)], ignore_index=True)
        choices = choose(tuning)
        todo = {(c.setup, tuple(c.config.split()), k) for c in choices.itertuples() for k in c.extend
                if c.extensions < MAX_EXTENSIONS and min(GRID) - MAX_EXTENSIONS <= k <= max(GRID) + MAX_EXTENSIONS}
        if not todo - done:
            break
    return tuning.sort_values(["setup", "config", "k", "seed"], ignore_index=True)


def decide(sweep, tuning: pd.DataFrame, choices: pd.DataFrame, plan: pd.DataFrame, block: str) -> pd.DataFrame:
    """Every arm's choice (and no clip at norm 1's lr) on the block's seeds, scored on the test split; an arm that
    chose the same configuration as another (norm 1 and a tuned threshold of 1) shares its runs."""
    arms: dict[tuple, list[str]] = {}
    for setup in SETUPS:
        mine = choices[choices.setup == setup].set_index("arm")
        chosen = [(arm, c.config, int(c.k)) for arm, c in mine.iterrows()]
        if setup in CLIFF_SETUPS and mine.loc["none", "k"] < mine.loc["norm1", "k"]:
            chosen.append(("none_at_clip_lr", mine.loc["none", "config"], int(mine.loc["norm1", "k"])))
        for arm, config, k in chosen:
            arms.setdefault((setup, config, k), []).append(arm)
    every = plan.set_index("setup").eval_every
    jobs = [job(setup, tuple(config.split()), k, seed, "test",
                *([f"eval_every={every[setup]}"] if every[setup] else []))
            for setup, config, k in arms for seed in BLOCKS[block]]
    found = outcomes(*sweep(block, jobs))
    found = pd.concat([found[(found.setup == s) & (found.config == c) & (found.k == k)].assign(arm=arm)
                       for (s, c, k), names in arms.items() for arm in names], ignore_index=True)
    return found.assign(block=block)


# ---------------------------------------------------------------- the rows
def paired(decided: pd.DataFrame, setup: str, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two arms' runs on one setup, aligned by seed (and block)."""
    part = decided[decided.setup == setup]
    one = part[part.arm == a].sort_values(["block", "seed"], ignore_index=True)
    two = part[part.arm == b].sort_values(["block", "seed"], ignore_index=True)
    return one, two


def compare(one: pd.DataFrame, two: pd.DataFrame, measure: str, target: float,
            confidence: float = stats.CONFIDENCE) -> tuple[stats.Interval, float, str]:
    """(interval on the row's scale with 0 = no effect and positive = a better, smallest effect, scale name)."""
    if measure == "diverged" or (measure == "spread" and (one.diverged.any() or two.diverged.any())):
        iv = stats.rate_difference(int(two.diverged.sum()), len(two), int(one.diverged.sum()), len(one), confidence)
        return iv, SMALLEST["diverged"], "divergence rate of b minus a"
    if measure == "spread":  # at 97 %: at 95 % the swap test decides 5.6-6.1 % of the time with no effect (tests)
        iv = stats.sd_ratio_interval(score(one), score(two), 1 - SPREAD_ALPHA_SHARE * (1 - confidence))
        return iv, SMALLEST["spread"], "log SD ratio b / a"
    if measure == "steps":
        higher = bool(one.higher.iloc[0])
        first = np.array([reached(c, target, higher) for c in one.curve])
        second = np.array([reached(c, target, higher) for c in two.curve])
        if np.isfinite(first).all() and np.isfinite(second).all():
            ratio = np.log(np.maximum(second, 1)) - np.log(np.maximum(first, 1))
            return stats.paired_interval(ratio, confidence), SMALLEST["steps"], "log steps ratio b / a"
        return _centred(stats.superiority(first, second, False, confidence)), 0.0, "P(a reaches it first) - 1/2"
    a, b = score(one).to_numpy(), score(two).to_numpy()
    metric = one.metric.iloc[0]
    if np.isfinite(a).all() and np.isfinite(b).all():
        scale = "log ratio b / a" if metric in LOG_SCALE else "difference a - b"
        return stats.paired_interval(a - b, confidence), SMALLEST[metric], f"{metric} {scale}"
    return _centred(stats.superiority(a, b, True, confidence)), 0.0, "P(a ends better) - 1/2"


def _centred(iv: stats.Interval) -> stats.Interval:
    return stats.Interval(iv.estimate - 0.5, iv.low - 0.5, iv.high - 0.5, iv.n, iv.method)


def word(iv: stats.Interval, smallest: float, kind: str) -> str:
    if kind == "superiority":
        return stats.verdict(iv, smallest, +1) if smallest > 0 or iv.excludes(0.0) else "undecided"
    if iv.low > -smallest:
        return "supported"
    return "contradicted" if iv.high < -smallest else "undecided"


def boundary(smallest: float, kind: str) -> float:
    """The effect whose exclusion makes a row contradicted (its p-value goes into Holm's correction)."""
    return 0.0 if kind == "superiority" else -smallest


def tuning_interval(tuning: pd.DataFrame, choices: pd.DataFrame, setup: str, a: str, b: str,
                    confidence: float = stats.CONFIDENCE) -> tuple[stats.Interval, float, str]:
    """Per tuning seed, the expected best validation score after K_TRIALS random lrs of the grid, a minus b; a
    diverged run counts as the untrained model's score."""
    part = tuning[(tuning.setup == setup) & tuning.k.isin(GRID)]
    per_arm = []
    for arm in (a, b):
        clip = choices[(choices.setup == setup) & (choices.arm == arm)].config.iloc[0]
        mine = part[part.config == clip]
        untrained = mine.assign(final=mine.start, diverged=False)
        values = score(mine).where(~mine.diverged, score(untrained))
        per_arm.append(mine.assign(v=values).groupby("seed").v.apply(lambda v: stats.expected_best(v, K_TRIALS)))
    d = (per_arm[0] - per_arm[1]).to_numpy()
    metric = part.metric.iloc[0]
    return stats.paired_interval(d, confidence), SMALLEST[metric], f"expected best {metric} after {K_TRIALS} lrs"


def stuck_word(iv: stats.Interval, smallest: float, gain: float, metric: str) -> str:
    """Supported when clipping ends better by more than the smallest effect (above 1/2 on the P scale) while no clip
    gained less than the metric's smallest effect over the last STUCK_SHARE of steps; contradicted when clipping is
    not better by that much, or no clip is still improving."""
    still = math.isfinite(gain) and gain >= SMALLEST[metric]
    if iv.low > smallest and not still:
        return "supported"
    return "contradicted" if iv.high < smallest or still else "undecided"


def power(iv: stats.Interval, smallest: float) -> float:
    """Chance at n = 10 that the row's test finds its smallest effect: exact binomials for a rate (0 % vs the
    smallest difference); normal noise at the spread the interval implies (half-width = 2.26 SD / sqrt(n)) for a
    sign-flip interval; normal arms with that SD ratio for the swap test; NaN on the P scale and for tuning rows."""
    n = 10
    if smallest <= 0:
        return math.nan
    if iv.method == "Newcombe":
        from scipy.stats import binom

        return float(sum(binom.pmf(k, n, smallest) for k in range(n + 1) if stats.rate_difference(k, n, 0, n).low > 0))
    if iv.method == "swap test":
        return _swap_power(n, smallest)
    spread = (iv.high - iv.low) / 2 * math.sqrt(iv.n) / 2.26
    if not (math.isfinite(spread) and spread > 0):
        return math.nan
    signs, rng = stats._signs(n), np.random.default_rng(0)
    return float(np.mean([stats.sign_flip_p(d, signs) <= 0.05 and d.mean() > 0
                          for d in rng.normal(smallest, spread, (500, n))]))


def _swap_power(n: int, smallest: float) -> float:
    rng = np.random.default_rng(0)
    level = 1 - SPREAD_ALPHA_SHARE * (1 - stats.CONFIDENCE)
    pairs = [(rng.normal(0, 1, n), rng.normal(0, math.exp(smallest), n)) for _ in range(500)]
    return float(np.mean([stats.sd_ratio_interval(a, b, level).low > 0 for a, b in pairs]))


def analyse(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Every row x setup x block (decide, verify, pooled): interval, verdict words, n, power, seeds needed."""
    tuning, choices, decided = tables["tuning"], tables["choices"], tables["decided"]
    plan = tables["plan"].set_index("setup")
    out = []
    for row in ROWS:
        for setup in row.setups:
            chosen = choices[choices.setup == setup].set_index("arm")
            missing = [arm for arm in (row.a, row.b) if arm not in chosen.index and arm != "none_at_clip_lr"]
            bracketed = all(bool(chosen.loc[arm, "bracketed"]) for arm in (row.a, row.b) if arm in chosen.index)
            blocks = sorted(set(decided.block), key=list(BLOCKS).index)
            for block in blocks + (["pooled"] if len(blocks) > 1 else []):
                part = decided if block == "pooled" else decided[decided.block == block]
                one, two = paired(part, setup, row.a, row.b)
                base = {"claim": row.claim, "row": row.label, "setup": setup, "block": block, "a": row.a, "b": row.b,
                        "kind": row.kind, "bracketed": bracketed}
                if missing or one.empty or two.empty:
                    reason = ("no clip's tuned lr is not below norm 1's: no small lr to test"
                              if row.b == "none_at_clip_lr" else "arm not run")
                    out.append({**base, "verdict": "not tested", "note": reason})
                    continue
                if row.measure == "tuning":
                    if block != blocks[0]:
                        continue
                    base["block"] = "tuning"
                    found = judge_tuning(row, tuning, choices, setup)
                else:
                    found = judge(row, one, two, float(plan.loc[setup, "target"]))
                iv, smallest, verdict, note = found["iv"], found["smallest"], found["verdict"], found["note"]
                if not bracketed:
                    verdict, note = "undecided", "; ".join(["an arm's best lr is not bracketed", note]).strip("; ")
                needed = abs(iv.estimate) if abs(iv.estimate) >= smallest / 2 else smallest - abs(iv.estimate)
                out.append({**base, "scale": found["scale"], "estimate": iv.estimate, "low": iv.low, "high": iv.high,
                            "n": iv.n, "method": iv.method, "smallest": smallest, "verdict": verdict, "note": note,
                            "p_contra": found["p_contra"] if verdict == "contradicted" else math.nan,
                            "power_n10": power(iv, smallest) if row.measure != "tuning" else math.nan,
                            "seeds_needed": (stats.seeds_needed(iv, needed)
                                             if verdict == "undecided" and needed > 0 else -1)})
    return _holm(pd.DataFrame(out, columns=ROW_COLUMNS))


ROW_COLUMNS = ["claim", "row", "setup", "block", "a", "b", "kind", "bracketed", "scale", "estimate", "low", "high", "n",
               "method", "smallest", "verdict", "note", "p_contra", "power_n10", "seeds_needed"]


def judge(row: Row, one: pd.DataFrame, two: pd.DataFrame, target: float) -> dict:
    """One row on one setup and block: interval, smallest effect, scale, verdict words, a note, and the p-value of
    the effect that makes it contradicted (computed only when it is, for Holm's correction)."""
    if row.measure == "stuck":
        def interval(confidence):
            return compare(one, two, "final", math.nan, confidence)[0]

        iv, smallest, scale = compare(one, two, "final", math.nan)
        ok = two[~two.diverged]
        gain = float(np.median([improvement(r.curve, r.steps, r.metric, r.higher) for r in ok.itertuples()])) \
            if len(ok) else math.nan
        verdict = stuck_word(iv, smallest, gain, one.metric.iloc[0])
        note = f"no clip's gain over the last {STUCK_SHARE:.0%} of steps: {gain:.3g}"
        by_interval = iv.high < smallest  # contradicted by the interval (else: because no clip still improves)
        value = smallest
    else:
        def interval(confidence):
            return compare(one, two, row.measure, target, confidence)[0]

        iv, smallest, scale = compare(one, two, row.measure, target)
        verdict, note, by_interval, value = word(iv, smallest, row.kind), "", True, boundary(smallest, row.kind)
    p = stats.p_value(interval, value) if verdict == "contradicted" and by_interval else math.nan
    return {"iv": iv, "smallest": smallest, "scale": scale, "verdict": verdict, "note": note, "p_contra": p}


def judge_tuning(row: Row, tuning: pd.DataFrame, choices: pd.DataFrame, setup: str) -> dict:
    iv, smallest, scale = tuning_interval(tuning, choices, setup, row.a, row.b)
    verdict = word(iv, smallest, row.kind)
    note = "" if math.isfinite(iv.low) else \
        f"{iv.n} tuning seeds: no sign-flip interval can exclude an effect below 6 seeds"
    p = (stats.p_value(lambda c: tuning_interval(tuning, choices, setup, row.a, row.b, c)[0],
                       boundary(smallest, row.kind)) if verdict == "contradicted" else math.nan)
    return {"iv": iv, "smallest": smallest, "scale": scale, "verdict": verdict, "note": note, "p_contra": p}


def _holm(frame: pd.DataFrame) -> pd.DataFrame:
    """'contradicted' on a setup stands only when Holm's correction across the row's setups rejects it too (the
    other setups count with p = 1: conservative; a stuck row contradicted because no clip is still improving has no
    p-value and stands)."""
    frame = frame.copy()
    for (label, block), part in frame[frame.verdict == "contradicted"].groupby(["row", "block"]):
        family = frame[(frame.row == label) & (frame.block == block) & (frame.verdict != "not tested")]
        p = family.p_contra.where(family.verdict == "contradicted", 1.0).fillna(0.0)
        keep = dict(zip(family.index, stats.holm(p.tolist())))
        for i in part.index:
            if not keep.get(i, False):
                frame.loc[i, ["verdict", "note"]] = ["undecided", "contradicted at 95 %, not after Holm across setups"]
    return frame


# ---------------------------------------------------------------- verdicts
CONFLICT = [{"supported", "contradicted"}, {"supported", "no detectable effect"},
            {"contradicted", "no detectable effect"}]


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One verdict per row and setup: the tuning block's, the deciding block's (verify not run), or the pooled
    blocks' unless the two blocks disagree (then undecided)."""
    out = []
    for (label, setup), part in rows.groupby(["row", "setup"], sort=False):
        by = part.set_index("block")
        if "tuning" in by.index or "verify" not in by.index:
            pick = by.iloc[0].copy()
            pick["blocks"] = pick.name if "tuning" in by.index else "decide (verify not run)"
        elif {by.loc["decide", "verdict"], by.loc["verify", "verdict"]} in CONFLICT:
            pick = by.loc["pooled"].copy()
            pick["verdict"], pick["note"] = "undecided", "the two blocks disagree"
            pick["blocks"] = "decide + verify"
        else:
            pick = by.loc["pooled"].copy()
            pick["blocks"] = "decide + verify, pooled"
        pick["row"], pick["setup"] = label, setup
        out.append(pick)
    return pd.DataFrame(out).reset_index(drop=True)


def across(words: list[str]) -> str:
    """A row's verdict over its setups."""
    tested = [w for w in words if w != "not tested"]
    if not tested:
        return "not tested"
    if all(w == "supported" for w in tested):
        return "supported"
    if "supported" in tested and "contradicted" in tested:
        return "setup-dependent"
    if "contradicted" in tested:
        return "contradicted"
    if all(w == "no detectable effect" for w in tested):
        return "no detectable effect"
    return "undecided"


def fmt(value: float, scale: str) -> str:
    if not math.isfinite(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:+.3g}" if "P(" not in scale else f"{value + 0.5:.2f}"


SHORT = {"charlm_lstm": "char LSTM", "regression_mlp": "regression MLP", "digits_deep_mlp": "deep MLP",
         "digits_mlp": "digits MLP", "digits_mlp_adam": "digits MLP, Adam"}
MEASURED = {"final": "final test metric", "steps": "steps to the target", "diverged": "divergence rate",
            "spread": "seed-to-seed spread", "stuck": "final test metric and no clip's late progress",
            "tuning": "expected best validation score after 2 random lrs"}


def words_by_setup(part: pd.DataFrame) -> str:
    """'supported on the char LSTM; undecided on the regression MLP and the deep MLP'."""
    grouped = part.groupby("verdict", sort=False).setup.apply(lambda s: ", ".join(SHORT[x] for x in s))
    return "; ".join(f"{word} on {where}" for word, where in grouped.items())


def card_table(part: pd.DataFrame, row: Row, trials: pd.Series) -> pd.DataFrame:
    """The claim card's rows: per setup, the two arms, n, the effect with its interval, the verdict."""
    return pd.DataFrame([{
        "row": row.label, "setup": SHORT[r.setup], "a vs b": f"{ARM_NAMES[row.a]} vs {ARM_NAMES[row.b]}",
        "n": int(r.n) if r.verdict != "not tested" else "–",
        "effect [95 % interval]": (f"{fmt(r.estimate, r.scale)} [{fmt(r.low, r.scale)}, {fmt(r.high, r.scale)}] "
                                   f"{r.scale}" if r.verdict != "not tested" else r.note),
        "tuning trials a/b": "/".join(str(trials.get((r.setup, arm), 0)) for arm in (row.a, row.b)),
        "verdict": r.verdict} for r in part.itertuples()])


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    final, out = final_rows(tables["rows"] if "rows" in tables else analyse(tables)), []
    trials = tables["choices"].set_index(["setup", "arm"]).trials
    for row in ROWS:
        part = final[final.row == row.label]
        numbers = []
        for r in part.itertuples():
            if r.verdict == "not tested":
                numbers.append(f"{r.setup}: not tested ({r.note})")
                continue
            budget = "/".join(str(trials.get((r.setup, arm), 0)) for arm in (row.a, row.b))
            numbers.append(f"{r.setup}: {fmt(r.estimate, r.scale)} [{fmt(r.low, r.scale)}, {fmt(r.high, r.scale)}] "
                           f"({r.scale}; n={int(r.n)}, {r.blocks}; tuning trials a/b {budget}) -> {r.verdict}"
                           + (f"; {r.note}" if isinstance(r.note, str) and r.note else "")
                           + (f"; power at n=10 {r.power_n10:.0%}" if math.isfinite(r.power_n10) else "")
                           + (f"; ~{int(r.seeds_needed)} seeds would decide" if r.seeds_needed > 0 else ""))
        out.append(Verdict(row.claim, f"{row.label} (a = {ARM_NAMES[row.a]}, b = {ARM_NAMES[row.b]})",
                           f"{MEASURED[row.measure]}, {ARM_NAMES[row.a]} vs {ARM_NAMES[row.b]}, each at its tuned lr "
                           f"({'better than' if row.kind == 'superiority' else 'as good as'})",
                           "; ".join(numbers) + ".", "docs/sources.md", across(part.verdict.tolist()),
                           finding=f"{row.label}: {words_by_setup(part)}", figure=f"tuned_{row.claim}.png",
                           table=card_table(part, row, trials)))
    if "caffe" in tables:
        numbers, passed = caffe.check(tables["caffe"])
        out.append(Verdict("C7", "our norm clip + SGD compute Caffe's clip_gradients (global L2, before decay)",
                           "independent numpy Caffe solver vs ours on random gradients", numbers, caffe.ANCHOR, passed,
                           finding=f"Caffe's clipping semantics: {passed}"))
    return out


# ---------------------------------------------------------------- figures
def figures(tables: dict[str, pd.DataFrame], out_dir) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = tables["rows"] if "rows" in tables else analyse(tables)
    shown = rows[(rows.verdict != "not tested") & rows.estimate.notna()].copy()
    made = [Figure(f"tuned_{claim}.png", f"{claim}: every row's 95 % interval per setup, in units of its smallest "
                   "effect (shaded: within it; right of 0: in the claim's favour); blue = deciding block (10 seeds), "
                   "orange = verify block, black = both pooled, grey = tuning block (3 seeds; an infinite interval "
                   "runs to the edge); squares: P(a better) - 1/2 in units of 1/2 (runs diverged); arrows: an "
                   "estimate beyond ±6, drawn at the edge.")
            for claim in dict.fromkeys(shown.claim)]
    for figure in made:
        interval_figure(shown[shown.claim == figure.name[6:-4]], out_dir / figure.name)
    interval_figure(shown, out_dir / "tuned_intervals.png")

    import matplotlib.ticker as ticker

    tuning, choices = tables["tuning"], tables["choices"]
    setups = list(SETUPS)
    fig, axes = plt.subplots(2, 3, figsize=(15, 8.4))
    axes[-1, -1].set_visible(False)
    for ax, setup in zip(axes.flat, setups):
        part = tuning[tuning.setup == setup]
        metric, higher = part.metric.iloc[0], bool(part.higher.iloc[0])
        bad = []
        for c, style in zip(choices[choices.setup == setup].itertuples(), ("-", "--", "-.", ":") * 2):
            line = part[part.config == c.config].groupby("k").agg(
                value=("final", "median"), diverged=("diverged", "sum"), lr=("lr", "first")).reset_index()
            ok = line[line.diverged == 0]
            drawn = ax.plot(ok.lr, ok.value, marker="o", ms=4, lw=1.2, ls=style, label=ARM_NAMES[c.arm])[0]
            bad += [(lr, drawn.get_color()) for lr in line[line.diverged > 0].lr]
            pick = line[line.k == c.k]
            ax.plot(pick.lr, pick.value, "o", ms=10, mfc="none", color=drawn.get_color())
        edge = ax.get_ylim()[0 if higher else 1]
        for lr, colour in bad:
            ax.plot(lr, edge, "x", color=colour, ms=7, mew=2, clip_on=False)
        ax.legend(fontsize=7)
        ax.set_xscale("log")
        ax.set_xticks(sorted(part.lr.unique()))  # the lrs run, labelled as numbers
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        ax.set(title=setup, xlabel="learning rate",
               ylabel=f"median validation {metric}\n({'higher' if higher else 'lower'} is better)")
        ax.title.set_size(10)
    save_figure(fig, out_dir / "tuned_tuning.png")
    return made + [
        Figure("tuned_intervals.png", "All rows at once: " + made[0].caption.split(": ", 1)[1] if made else ""),
        Figure("tuned_tuning.png",
               f"Tuning: median final validation metric over {len(TUNING_SEEDS)} seeds per lr, for each arm's "
               "chosen configuration; x = at least one seed diverged at that lr (drawn at the worse edge); ring = "
               "the chosen lr. Arms that chose the same runs draw over each other (a tuned threshold of 1 is norm 1; "
               "ZClip with its cap of 1 ends as norm 1).")]


def interval_figure(shown: pd.DataFrame, path: Path) -> None:
    """One line per row and setup: its intervals (tuning, decide, verify, pooled) in units of the smallest effect."""
    import matplotlib.pyplot as plt

    shown = shown.assign(label=shown.row.str.slice(0, 62) + " | " + shown.setup.map(SHORT))
    labels = list(dict.fromkeys(shown.label))
    colours = {"tuning": "#7f7f7f", "decide": "#0072b2", "verify": "#e69f00", "pooled": "#000000"}
    offsets = {"tuning": 0.0, "decide": -0.22, "verify": 0.0, "pooled": 0.22}
    fig, ax = plt.subplots(figsize=(10, 0.36 * len(labels) + 1.5))
    for r in shown.itertuples():
        y = labels.index(r.label) + offsets[r.block]
        unit = r.smallest if r.smallest > 0 else 0.5
        low, high, mid = (np.clip(v / unit, -6, 6) for v in (r.low, r.high, r.estimate))
        ax.plot([low, high], [y, y], color=colours[r.block], lw=2)
        off = abs(r.estimate / unit) > 6  # off the scale: an arrow at the edge, pointing where it is
        marker = ("<" if mid < 0 else ">") if off else "o" if r.smallest > 0 else "s"
        ax.plot(mid, y, marker, color=colours[r.block], ms=7 if off else 5)
    ax.axvspan(-1, 1, color="0.9", zorder=0)
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.set_ylim(len(labels) - 0.5, -0.5)
    ax.set_xlim(-6.2, 6.2)
    ax.set_xlabel("effect in the claim's favour, in smallest effects (drawn up to ±6)")
    handles = [plt.Line2D([], [], color=c, lw=2, label=b) for b, c in colours.items() if b in set(shown.block)]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, title="seed block",
              title_fontsize=8)
    save_figure(fig, path)


# ---------------------------------------------------------------- running it
def sweeper(results: Path, jobs: int, extra: list[str]):
    """sweep(stage, jobs) -> (runs, steps): one resumable sweep per stage under results/runs/tuned/<stage>."""
    import yaml

    from experiments.reproduce import run_sweep
    from gradclip.files import write_atomic
    from gradclip.report import load_runs

    def sweep(stage: str, job_list: list[list[str]]):
        folder = results / "runs" / NAME / stage
        jobs_file = results / "runs" / NAME / f"{stage}.jobs.yaml"
        text = yaml.safe_dump([EXTRA + extra + j for j in job_list])  # every override of every job: the whole stage
        if folder.exists() and (not jobs_file.is_file() or jobs_file.read_text() != text):
            stale = folder.with_name(f"{stage}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
            folder.rename(stale)
            print(f"{folder}: runs of another job list, moved to {stale}; starting fresh", flush=True)
        write_atomic(jobs_file, text)
        print(f"{NAME}: stage {stage}, {len(job_list)} runs", flush=True)
        run_sweep(f"{NAME}/{stage}", results, jobs, [], folder=folder, jobs_file=jobs_file)
        return load_runs(folder)

    return sweep


def reproduce(sweep) -> dict[str, pd.DataFrame]:
    """Tuning, then the deciding block: the tables results/tuned/*.csv hold."""
    tuning = tune(sweep)
    choices = choose(tuning)
    plan = targets(tuning, choices)
    decided = decide(sweep, tuning, choices, plan, "decide")
    tables = {"tuning": tuning.drop(columns="curve"), "choices": choices, "plan": plan, "decided": decided,
              "caffe": caffe.semantics()}
    return {**tables, "rows": analyse(tables)}


def verify(sweep, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The deciding stage again on the verify block, with the stored choices."""
    decided = tables["decided"][tables["decided"].block != "verify"]
    again = decide(sweep, tables["tuning"], tables["choices"], tables["plan"], "verify")
    tables = {**tables, "decided": pd.concat([decided, again], ignore_index=True)}
    return {**tables, "rows": analyse(tables)}


def main(argv: list[str] | None = None) -> int:
    from experiments.reproduce import RESULTS, build_report, claim_experiments, cpu, load_tables, store

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="rerun the deciding stage on the verify block")
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs (default 2)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    sweep = sweeper(args.results, args.jobs, args.override)
    if args.verify:
        stored = load_tables(args.results, NAME)
        if "choices" not in stored:
            parser.error(f"no stored choices in {args.results / NAME}: run `make reproduce` first")
        tables = verify(sweep, stored)
    else:
        tables = reproduce(sweep)
    seconds = time.perf_counter() - started
    store(NAME, tables, args.results, seconds, "verify" if args.verify else "reproduce")
    build_report(claim_experiments(), args.results)
    print(f"{NAME}: {'verify' if args.verify else 'tuning + deciding'} took {seconds / 60:.1f} min on {cpu()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
