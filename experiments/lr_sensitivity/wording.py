"""The experiment's verdicts in words: each effect with its direction ("norm 1 wider by 0.75 decades [0.5, 1]")
beside each arm's own value (``experiments.tuned.wording``'s helpers), the claim card's table and the rule."""

from __future__ import annotations

import math

import pandas as pd

from experiments.common import median_ci
from experiments.lr_sensitivity.design import (ARMS, BLOCK, CORE, MIN_INSIDE, SETUPS, SHIFT, SMALLEST, STEP, Row)
from experiments.lr_sensitivity.rules import UNITS, VERBS
from experiments.tuned.design import PRIMARY_FACTOR
from experiments.tuned.wording import UNITS as UNIT_WORDS, effect_words


def arm_value(row: Row, measured: pd.DataFrame, setup: str, arm: str) -> str:
    """One arm's own value on the row's measure, declared grid: median [95 % interval of the median] over seeds."""
    part = measured[(measured.setup == setup) & (measured.arm == arm) & (measured["shift"] == "0")]
    if part.empty:
        return f"{ARMS[arm].label}: not run"
    unit = UNITS["width"] if row.measure == "width" else UNITS[part.metric.iloc[0]]
    scale = 100 if unit == "accuracy" else 1
    mid, lo, hi = (scale * v for v in median_ci(part[row.measure]))
    what = "width" if row.measure == "width" else "sensitivity"
    return f"{ARMS[arm].label}: {what} {mid:.3g} [{lo:.3g}, {hi:.3g}] {UNIT_WORDS.get(unit, unit)}"


def effect(row: Row, r) -> str:
    return effect_words(r.unit, r.estimate, r.low, r.high, ARMS[row.a].label, ARMS[row.b].label, VERBS[row.measure])


def card_table(row: Row, part: pd.DataFrame, measured: pd.DataFrame) -> pd.DataFrame:
    """The claim card's rows: per setup, each arm's own value, the effect in words, n, the verdict on the declared
    grid and on the shifted ones."""
    return pd.DataFrame([{
        "row": row.label, "setup": SETUPS[r.setup].label, "a": arm_value(row, measured, r.setup, row.a),
        "b": arm_value(row, measured, r.setup, row.b),
        "effect [95 % interval]": effect(row, r) if tested(r) else r.note, "n": int(r.n) if tested(r) else "–",
        "grid -0.5 / 0 / +0.5 decade": r.shifts if tested(r) else "–", "verdict": r.verdict}
        for r in part.itertuples()])


def tested(r) -> bool:
    return r.verdict != "not tested" and math.isfinite(r.estimate)


def numbers_line(row: Row, r) -> str:
    """Every number of one row and setup, for the card's collapsed evidence."""
    if not tested(r):
        return f"{SETUPS[r.setup].label}: {r.note}"
    parts = [f"{SETUPS[r.setup].label}: {effect(row, r)} (n={int(r.n)}) -> {r.verdict}",
             f"grid shifted by -0.5 / 0 / +0.5 decade: {r.shifts}"]
    parts += [r.note] if isinstance(r.note, str) and r.note else []
    if isinstance(r.p, float) and math.isfinite(r.p):
        parts.append(f"p = {r.p:.2g}")
    parts += [f"power at n={n} {getattr(r, f'power_n{n}'):.0%}" for n in (10, 20)
              if math.isfinite(getattr(r, f"power_n{n}"))]
    if r.seeds_needed > 0:
        parts.append(f"~{int(r.seeds_needed)} seeds would decide at this estimate and spread")
    return "; ".join(parts)


RULE = f"""Arms: no clip and norm 1 on every setup (and, on the GPT, norm at its tuned threshold, and without clipping
qk-layernorm and z-loss 1e-4 for B4),
each run at every lr of a grid of quarter-decade steps (lr = the setup's lr x 10^(j/4)) spanning
{2 * CORE * STEP:g} decades, centred between the arms' tuned lrs (results/tuned/choices.csv) so that each lies at
least {MIN_INSIDE * STEP:g} decade inside, on {len(BLOCK)} fresh seeds
({BLOCK[0]}-{BLOCK[-1]}), the setup's steps, scored on the test split. Per seed and arm, on the tuned protocol's
score scale (MSE on a log scale; a run whose batch loss passed {PRIMARY_FACTOR:g} x its first counts as its untrained
model, L0): LR sensitivity (Wortsman et al. 2023) = mean over the grid of min(L(lr), L0) - L*, L* the best on the
grid; width = {STEP:g} decade for each lr that did not diverge and ends no worse than the setup's reference (fixed
before the runs: the better median final test metric of tuned no clip and norm 1 in results/tuned) by more than the
metric's smallest effect. Per setup, the paired (same seed)
differences a - b (width) and b - a (sensitivity), positive = the clipped arm better, with an exact sign-flip 95 %
interval: supported / contradicted when it excludes 0 on the claimed / other side, no detectable effect when it lies
within the smallest effect ({SMALLEST['width']:g} decade for width; for sensitivity bpc {SMALLEST['bpc']:g}, accuracy
{100 * SMALLEST['accuracy']:g} points, MSE a ratio of {math.exp(SMALLEST['mse']):g}), else undecided; an "as much as"
row (B4) is supported when the interval's low end lies above minus the smallest effect, contradicted when its high
end lies below it; Holm's
correction over the claim's rows x setups. The same is computed on the grid shifted by -{SHIFT * STEP:g} and
+{SHIFT * STEP:g} decade (the runs cover both): a decided verdict that a shifted grid decides otherwise becomes
undecided. A row over its setups: supported only if supported on every setup, contradicted if contradicted on one and
supported on none, setup-dependent if both. Also shown: the share of steps clipped at every lr."""
