"""Verdicts in words: every effect with its direction ("norm 1 better by 0.055 bpc [0.044, 0.067]") beside each
arm's own score, the claim cards' tables, the rule and the scope."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from experiments.common import median_ci
from experiments.tuned.design import (ARMS, BLOCKS, DIVERGE_FACTORS, GRID, LATE_SHARE, LENGTHS, PRIMARY_FACTOR,
                                      SETUPS, SMOOTH_SHARE, SPREAD_CONFIDENCE, TUNING_SEEDS, Row)
from experiments.tuned.rules import NOT_BRACKETED, paired, restricted_steps
from experiments.tuned.stages import score

UNITS = {"bpc": "bpc", "accuracy": "accuracy points", "mse": "MSE"}


def _num(x: float, digits: int = 3) -> str:
    return "∞" if x == math.inf else "-∞" if x == -math.inf else f"{x:.{digits}g}"


def effect_words(unit: str, estimate: float, low: float, high: float, a: str, b: str, verb: str = "better") -> str:
    """The effect as a sentence with its direction: positive estimates favour arm a ("a better by 0.05 bpc [..]";
    ``verb`` says what favours means on a plain scale: "wider", "less sensitive")."""
    if not math.isfinite(estimate):
        return "–"
    winner, (est, lo, hi) = (a, (estimate, low, high)) if estimate >= 0 else (b, (-estimate, -high, -low))
    tiny = 1e-6 * max(abs(v) for v in (est, lo, hi) if math.isfinite(v))  # a bound found by search, at zero
    lo, hi = (0.0 if abs(v) < tiny else v for v in (lo, hi))
    if unit == "rate":
        return f"{winner} diverged less often by {100 * est:.0f} points [{100 * lo:.0f}, {100 * hi:.0f}]"
    if unit.startswith("log"):
        ratio = f"{math.exp(est):.3g} x [{_num(math.exp(lo) if lo > -math.inf else 0)}, {_num(math.exp(hi))}]"
        what = {"log SD ratio": "spreads less: SD", "log steps ratio": "reaches the target sooner: steps",
                "log ratio": "better: MSE"}[unit]
        return f"{winner} {what} ratio {ratio}"
    scale = 100 if unit == "accuracy" else 1
    return f"{winner} {verb} by {_num(scale * est)} {UNITS.get(unit, unit)} [{_num(scale * lo)}, {_num(scale * hi)}]"


def arm_score(row: Row, frame: pd.DataFrame) -> str:
    """One arm's own result on the row's measure: median [95 % interval of the median] over its seeds."""
    if frame.empty:
        return "–"
    if row.measure == "diverged":
        return f"diverged {int(frame[f'diverged_{PRIMARY_FACTOR:g}x'].sum())}/{len(frame)}"
    if row.measure == "steps":
        values = restricted_steps(frame)
        reached = int(np.isfinite(frame.reached).sum())
        mid, lo, hi = median_ci(values)
        return f"{mid:.0f} steps [{lo:.0f}, {hi:.0f}], reached {reached}/{len(frame)}"
    metric, sign = frame.metric.iloc[0], 1 if frame.higher.iloc[0] else -1
    values = score(frame) * sign
    values = np.exp(values) if metric == "mse" else values
    if row.measure == "spread":
        return f"SD {np.std(score(frame), ddof=1):.3g}" + (" (log MSE)" if metric == "mse" else f" {metric}")
    mid, lo, hi = median_ci(values)
    diverged = int(frame.diverged.sum())
    return f"{metric} {mid:.4g} [{lo:.4g}, {hi:.4g}]" + (f", {diverged} diverged" if diverged else "")


def card_table(row: Row, part: pd.DataFrame, decided: pd.DataFrame, trials: pd.Series) -> pd.DataFrame:
    """The claim card's rows: per setup, each arm's own score, the effect in words, n, the verdict."""
    rows = []
    a, b = ARMS[row.a].label, ARMS[row.b].label
    for r in part.itertuples():
        one, two = paired(_block(decided, r.blocks), r.setup, row.a, row.b)
        tested = r.verdict != "not tested" and math.isfinite(r.estimate)
        rows.append({"row": row.label, "setup": SETUPS[r.setup].label, f"a": f"{a}: {arm_score(row, one)}",
                     "b": f"{b}: {arm_score(row, two)}",
                     "effect [95 % interval]": effect_words(r.unit, r.estimate, r.low, r.high, a, b) if tested
                     else r.note, "n": int(r.n) if tested else "–",
                     "tuning trials a/b": "/".join(str(trials.get((r.setup, arm), "–")) for arm in (row.a, row.b)),
                     "verdict": verdict_words(r)})
    return pd.DataFrame(rows)


def verdict_words(r) -> str:
    """A row's verdict, with the reason when it is undecided because an arm's best lr is not bracketed."""
    return f"{r.verdict} ({NOT_BRACKETED})" if NOT_BRACKETED in str(r.note) else r.verdict


def _block(decided: pd.DataFrame, blocks: str) -> pd.DataFrame:
    return decided if "pooled" in str(blocks) else decided[decided.block == "decide"]


def words_by_setup(part: pd.DataFrame, setups: dict = SETUPS) -> str:
    """'supported on the char LSTM; undecided on the regression MLP and the deep MLP' (``setups``: name -> a
    declaration with a ``label``)."""
    grouped = part.groupby("verdict", sort=False).setup.apply(lambda s: " and ".join(setups[x].label for x in s))
    return "; ".join(f"{word} on the {where}" for word, where in grouped.items())


def numbers_line(row: Row, r) -> str:
    """Every number of one row and setup, for the card's collapsed evidence."""
    if r.verdict == "not tested":
        return f"{SETUPS[r.setup].label}: {r.note}"
    a, b = ARMS[row.a].label, ARMS[row.b].label
    parts = [f"{SETUPS[r.setup].label}: {effect_words(r.unit, r.estimate, r.low, r.high, a, b)} (n={int(r.n)}, "
             f"{r.blocks}) -> {r.verdict}"]
    parts += [str(x) for x in (r.note, r.replication) if isinstance(x, str) and x]
    if isinstance(r.p, float) and math.isfinite(r.p):
        parts.append(f"p = {r.p:.2g}")
    for n in (10, 20):
        value = getattr(r, f"power_n{n}")
        if math.isfinite(value):
            parts.append(f"power at n={n} {value:.0%}")
    if r.seeds_needed > 0:
        parts.append(f"~{int(r.seeds_needed)} seeds would decide at this estimate and spread")
    return "; ".join(parts)


def _seeds(setup) -> str:
    return " and ".join(f"{seeds[0]}-{seeds[-1]}" for seeds in setup.blocks.values())


RULE = f"""Arms: no clip, norm 1, norm with a tuned threshold (1, 0.5 x and 10 x the setup's median gradient norm), and
on the two exploding MLPs AutoClip / AGC / ZClip / ZClip without cap at their reference defaults; on the GPT at
spiking lrs (B3) the tuned threshold and the spike remedies skip-step, SPAM, AdaGC and StableAdamW at their
references' defaults, tuned over its peak lrs 0.095 and 0.3 only (B3's scope: the better of the two is an arm's
tuned lr, no bracket asked for), decided on seeds {_seeds(SETUPS['charlm_gpt_spiky'])}. Each other arm tuned over the
lr grid {', '.join(f'{10 ** (k / 2):.3g}' for k in GRID)} x the setup's lr (extended by a half-decade, at most twice,
until its best lr is bracketed; else its rows are undecided), {len(TUNING_SEEDS)} tuning seeds, selected by the median
final validation metric (diverged = worst). C3 adds no clip at 0.1 x and 0.03 x its tuned lr and at norm 1's lr, and
norm 1 at its tuned lr, all trained for the first of {', '.join(f'{m} x' for m in LENGTHS)} the setup's steps at which
norm 1's median held-out gain over the last {LATE_SHARE:.0%} of steps (tuning seeds) is below the smallest effect.
Decided on {len(BLOCKS['decide'])} fresh seeds ({BLOCKS['decide'][0]}-{BLOCKS['decide'][-1]}) and, with `make
verify`, {len(BLOCKS['verify'])} more ({BLOCKS['verify'][0]}-{BLOCKS['verify'][-1]}), on the test split; the verdict is
the pooled {len(BLOCKS['decide']) + len(BLOCKS['verify'])} seeds' (one pre-registered test), each block's own verdict
shown beside it as a replication. Every scale is fixed before the runs: final metric = paired difference of scores
(log ratio for MSE), a run that diverged (batch loss above {PRIMARY_FACTOR:g} x its first) scoring its untrained
model, exact sign-flip 95 % interval; divergence = difference of rates, Newcombe's interval, read at
{', '.join(f'{f:g}' for f in DIVERGE_FACTORS)} x (the verdict at {PRIMARY_FACTOR:g} x); steps to target = paired log
ratio of the steps at which the training loss averaged over {SMOOTH_SHARE:.0%} of the steps first reaches a target
that every tuning run of tuned no clip and norm 1 reached, a run that never reaches it counting its length
(restricted mean time), sign-flip interval; spread = log SD ratio of the scores, swap-test interval at
{SPREAD_CONFIDENCE:.0%}; gets stuck = the clipped arm ends better by more than the smallest effect and the small-lr
arm's late gain is below it (both at 95 %; contradicted when either fails at 97.5 %; undecided when the clipped arm is
itself still improving). Smallest effects: bpc 0.05, accuracy 2 points, MSE and steps a ratio of 1.25, divergence 20
points, SD a ratio of 1.5. Superiority: supported / contradicted when the interval excludes no effect on the claimed
/ other side, no detectable effect when it lies within the smallest effect. As good as: supported when the low end
is above minus the smallest effect, contradicted when the high end is below it. Holm's correction over every test of
a claim (its rows x setups). A row over its setups: "every" (universal) rows are supported only if supported on
every setup, contradicted if contradicted on one and supported on none, setup-dependent if both; "some"
(existential: "can get stuck") rows are supported if supported on one setup, contradicted only if contradicted on
all. Arms that chose the same configuration are not compared ("not tested")."""

SCOPE = ("What makes no clipping fail here, and so what these verdicts cover: "
         + "; ".join(f"{spec.label}: {spec.fails}" for spec in SETUPS.values() if spec.fails)
         + "; the two shallow digits MLPs (SGD lr 0.1, Adam lr 1e-3) do not explode; "
         + "; ".join(f"{spec.label}: {spec.clipped_today}" for spec in SETUPS.values() if spec.clipped_today)
         + " (C5 is tested there too). The intervals cover training "
         "randomness (initialisation and batch order, one seed each) on one fixed data split per task, not a new "
         "sample of data, and one architecture per setup; the lr grids are x10^(k/2) of each setup's lr.")
