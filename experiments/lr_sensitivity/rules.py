"""The rules, written before the runs: each seed's LR sensitivity and width of good lrs per arm (vectorised over seeds,
lrs and grid shifts), the paired sign-flip interval of the arms' difference per setup, its verdict words, Holm's
correction over the claim's rows x setups, the check on the shifted grids, and the verdict over setups.

Both measures are read on the score scale of the tuned protocol (``experiments.tuned.stages.score``: higher is
better; bpc negated, MSE as -ln MSE; a diverged run scores its untrained model, L0). Positive differences always mean
"arm a better": wider, or less sensitive."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradclip import stats
from gradclip.summary import MIN_HISTORY, spike_steps
from experiments.lr_sensitivity.design import SETUPS, SHIFTS, SMALLEST, STEP, ROWS, Row, grid, overrides, runs_grid
from experiments.tuned import rules as tuned_rules
from experiments.tuned.design import LOG_SCALE, PRIMARY_FACTOR
from experiments.tuned.stages import score

# Spikes after warm-up (issue "spike remedies": where do spikes happen?), counted in every run that did not diverge,
# after its first WARMUP_SHARE of steps (the GPT's warm-up is its first 10 %): loss spikes by the suite's rule (loss
# above the median of the 50 before it by 6 robust SDs, gradclip.summary.spike_steps) and gradient-norm spikes as
# OLMo-core's SkipStepOptimizer flags them (pre-clip norm more than 6 SDs from the mean of up to 128 before it, at
# least 64 stored).
WARMUP_SHARE = 0.1
SPIKE_FACTOR, SPIKE_WINDOW = 6.0, 50
NORM_Z, NORM_WINDOW, NORM_MIN = 6.0, 128, 64

UNITS = {"width": "decade", "bpc": "bpc", "accuracy": "accuracy", "mse": "ln MSE"}
VERBS = {"width": "wider", "sensitivity": "less sensitive"}


def read_runs(runs: pd.DataFrame, steps: pd.DataFrame, planned: dict[tuple, dict]) -> pd.DataFrame:
    """One row per run (what it was looked up by its job in ``planned``): its final test metric, NaN when it diverged
    (its batch loss above PRIMARY_FACTOR x its first, as the tuned protocol reads it, or non-finite gradients), its
    untrained model's (the first evaluation), the largest loss ratio and the share of steps clipped."""
    losses = steps.dropna(subset=["loss"]).groupby("run").loss
    ratio = (losses.max() / losses.first()).reindex(runs.run).to_numpy()
    columns = [c for c in steps.columns if c.startswith("val_")]
    first = steps.groupby("run")[columns].first().reindex(runs.run)
    start = [first.loc[r.run, f"val_{r.metric}"] for r in runs.itertuples()]
    diverged = ~(ratio <= PRIMARY_FACTOR) | runs.diverged.to_numpy(dtype=bool)
    final = pd.to_numeric(runs.final_metric, errors="coerce").where(~diverged)
    meta = pd.DataFrame([planned[tuple(o)] for o in runs.overrides])
    late = spikes(steps).reindex(runs.run).astype(float)
    late.loc[diverged] = np.nan  # a diverged run's spikes are not counted
    return meta.assign(loss_spikes=late.loss_spikes.to_numpy(), norm_spikes=late.norm_spikes.to_numpy(),
                       lr=runs.lr.to_numpy(), run=runs.run.to_numpy(), metric=runs.metric.to_numpy(),
                       higher=runs.higher_is_better.to_numpy(dtype=bool), diverged=diverged,
                       final=final.to_numpy(), start=start, loss_ratio=ratio,
                       clipped_fraction=runs.clipped_fraction.to_numpy(), steps=runs.steps.to_numpy())


def spikes(steps: pd.DataFrame) -> pd.DataFrame:
    """Per run: loss spikes and gradient-norm spikes after warm-up (``WARMUP_SHARE`` of its steps)."""
    rows = {}
    for run, part in steps[steps.step > 0].dropna(subset=["loss"]).groupby("run", sort=False):
        if len(part) <= MIN_HISTORY:  # too short for either rule to test a step
            rows[run] = {"loss_spikes": 0, "norm_spikes": 0}
            continue
        part = part.sort_values("step")
        late = (part.step > WARMUP_SHARE * part.step.max()).to_numpy()
        loss = spike_steps(part.loss.reset_index(drop=True), SPIKE_FACTOR, SPIKE_WINDOW).to_numpy()
        norms = part.grad_norm.reset_index(drop=True)
        history = norms.rolling(NORM_WINDOW, min_periods=NORM_MIN)
        z = ((norms - history.mean().shift(1)) / history.std().shift(1)).abs()
        rows[run] = {"loss_spikes": int((loss & late).sum()),
                     "norm_spikes": int(((z > NORM_Z).to_numpy() & late).sum())}
    return pd.DataFrame.from_dict(rows, orient="index", columns=["loss_spikes", "norm_spikes"])


def sensitivity(scores: np.ndarray, start: np.ndarray) -> np.ndarray:
    """Wortsman et al. 2023's LR sensitivity over the last axis (the lrs): the mean of min(L(lr), L0) - L*, L0 the
    untrained loss (``start``, one per leading index), L* the best of the clamped losses on the grid (0 when no lr
    beats L0). On the score scale (higher better): mean of S* - max(S, S0)."""
    clamped = np.maximum(scores, start[..., None])
    return (clamped.max(axis=-1, keepdims=True) - clamped).mean(axis=-1)


def width(scores: np.ndarray, diverged: np.ndarray, reference: float, smallest: float) -> np.ndarray:
    """The decades of good lrs over the last axis: each lr that did not diverge and ends no worse than ``reference``
    by more than ``smallest`` (score scale) counts for its STEP of a decade."""
    return STEP * ((scores >= reference - smallest) & ~diverged).sum(axis=-1)


def on_score_scale(value: float, metric: str, higher: bool) -> float:
    """A metric value on the score scale of ``score`` (higher better, MSE as a log)."""
    value = math.log(value) if metric in LOG_SCALE else value
    return value if higher else -value


def shift_label(shift: int) -> str:
    return "0" if shift == 0 else f"{shift * STEP:+g}"


def arrays(part: pd.DataFrame, setup: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One arm's runs on one setup as seeds x lrs (every lr of ``runs_grid``): seeds, scores, diverged, and each
    seed's untrained score. A run that is missing (failed) leaves NaN: its seed drops out of the comparison."""
    part = part.assign(score=score(part), untrained=score(part.assign(diverged=True)))
    lrs = list(runs_grid(setup))
    scores = part.pivot(index="seed", columns="j", values="score").reindex(columns=lrs)
    diverged = part.pivot(index="seed", columns="j", values="diverged").reindex(columns=lrs).fillna(True)
    start = part.groupby("seed").untrained.first().reindex(scores.index)
    return (scores.index.to_numpy(), scores.to_numpy(dtype=float), diverged.to_numpy(dtype=bool),
            start.to_numpy(dtype=float))


def measures(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setup, arm, grid shift and seed: the LR sensitivity and the width of good lrs on that grid."""
    out = []
    for (setup, arm), part in runs.groupby(["setup", "arm"], sort=False):
        seeds, scores, diverged, start = arrays(part, setup)
        metric, higher = part.metric.iloc[0], bool(part.higher.iloc[0])
        reference = on_score_scale(SETUPS[setup].reference, metric, higher)
        lrs = list(runs_grid(setup))
        for shift in SHIFTS:
            columns = [lrs.index(j) for j in grid(setup, shift)]
            out.append(pd.DataFrame({
                "setup": setup, "arm": arm, "shift": shift_label(shift), "seed": seeds, "metric": metric,
                "sensitivity": sensitivity(scores[:, columns], start),
                "width": width(scores[:, columns], diverged[:, columns], reference, SMALLEST[metric])}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(
        columns=["setup", "arm", "shift", "seed", "metric", "sensitivity", "width"])


def judge(row: Row, one: pd.DataFrame, two: pd.DataFrame) -> dict:
    """One row on one setup and grid (each arm's measures indexed by seed): the paired per-seed differences (positive
    = a better; seeds missing in either arm dropped), their exact sign-flip interval, verdict words and the p-value
    that earned them (``experiments.tuned.rules.judge_measure``)."""
    a, b = one[row.measure], two[row.measure]
    d = (a - b if row.measure == "width" else b - a).dropna().to_numpy()
    key = "width" if row.measure == "width" else one.metric.iloc[0]
    m = {"smallest": SMALLEST[key], "unit": UNITS[key], "values": d,
         "interval": lambda c: stats.paired_interval(d, c)}
    return tuned_rules.judge_measure(m, row.kind)


ROW_COLUMNS = ["claim", "row", "setup", "block", "a", "b", "measure", "unit", "estimate", "low", "high", "n",
               "smallest", "verdict", "p", "note", "power_n10", "power_n20", "seeds_needed"]


def analyse(measured: pd.DataFrame, rows: list[Row] = ROWS, with_power: bool = True) -> pd.DataFrame:
    """Every row x setup x grid shift (the shift is the ``block``): interval, verdict, p-value; Holm's correction over
    the claim's rows x setups on each grid (``experiments.tuned.rules.holm``); power and seeds needed on the declared
    grid."""
    by_seed = measured.set_index("seed")
    out, empty = [], by_seed.iloc[:0]
    arms = dict(tuple(by_seed.groupby(["setup", "shift", "arm"], sort=False)))
    for row in rows:
        for setup in row.setups:
            for shift in SHIFTS:
                block = shift_label(shift)
                base = {"claim": row.claim, "row": row.label, "setup": setup, "block": block, "a": row.a, "b": row.b,
                        "measure": row.measure}
                one, two = (arms.get((setup, block, arm), empty) for arm in (row.a, row.b))
                if one.empty or two.empty:
                    missing = row.a if one.empty else row.b
                    why = ("no tuned threshold declared for this setup (design.SETUPS)"
                           if setup in SETUPS and overrides(setup, missing) is None
                           else "no runs yet (`python -m experiments.lr_sensitivity` runs them, resumable)")
                    out.append({**base, "verdict": "not tested", "note": f"arm {missing} not run: {why}"})
                    continue
                found = judge(row, one, two)
                iv = found["iv"]
                declared = with_power and shift == 0
                out.append({**base, "unit": found["unit"], "estimate": iv.estimate, "low": iv.low, "high": iv.high,
                            "n": iv.n, "smallest": found["smallest"], "verdict": found["verdict"], "p": found["p"],
                            "note": found["note"],
                            "power_n10": tuned_rules.power(iv, found["smallest"], 10) if declared else math.nan,
                            "power_n20": tuned_rules.power(iv, found["smallest"], 20) if declared else math.nan,
                            "seeds_needed": tuned_rules.seeds_needed(iv, found["smallest"], row.kind)
                            if found["verdict"] == "undecided" else -1})
    return tuned_rules.holm(pd.DataFrame(out, columns=ROW_COLUMNS))


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One verdict per row and setup: the declared grid's, shown beside the shifted grids' ("-0.5: ... · 0: ... ·
    +0.5: ..."); a decided verdict that a shifted grid decides otherwise (another of supported, contradicted, no
    detectable effect) flips, and becomes undecided."""
    rows = rows.assign(block=[b if isinstance(b, str) else shift_label(round(float(b) / STEP)) for b in rows.block])
    words = dict(zip(zip(rows.row, rows.setup, rows.block), rows.verdict))
    final = rows[rows.block == "0"].reset_index(drop=True)
    shifts, verdicts, notes = [], [], []
    for r in final.itertuples():
        shifted = {shift_label(s): words.get((r.row, r.setup, shift_label(s)), "–") for s in SHIFTS}
        shifts.append(" · ".join(f"{block}: {word}" for block, word in shifted.items()))
        flips = [b for b, word in shifted.items() if word in tuned_rules.DECIDED and r.verdict in tuned_rules.DECIDED
                 and word != r.verdict]
        note = r.note if isinstance(r.note, str) else ""
        if flips:
            note = "; ".join(filter(None, [note, f"{r.verdict} on the declared grid but {shifted[flips[0]]} on the "
                                           f"grid shifted by {flips[0]} decade"]))
        verdicts.append("undecided" if flips else r.verdict)
        notes.append(note)
    return final.assign(verdict=verdicts, note=notes, shifts=shifts)


def claim_verdicts(final: pd.DataFrame, rows: list[Row] = ROWS) -> dict[str, str]:
    """Each row's verdict over its setups (by its quantifier; rows with no setup are not tested)."""
    words = final.groupby("row", sort=False).verdict.agg(list)
    return {row.label: tuned_rules.across(words.get(row.label, []), row.quantifier) for row in rows}


def clipped(runs: pd.DataFrame) -> pd.DataFrame:
    """Per setup, arm and lr: the share of steps clipped, median and range over the seeds (diverged runs too: the
    share of the steps they ran); and of the seeds that did not diverge, how many spiked after warm-up (``spikes``)
    and the spikes of all of them."""
    runs = runs.assign(spiked=runs.loss_spikes > 0, norm_spiked=runs.norm_spikes > 0)
    return runs.groupby(["setup", "arm", "j"], as_index=False, sort=False).agg(
        lr=("lr", "first"), median=("clipped_fraction", "median"), low=("clipped_fraction", "min"),
        high=("clipped_fraction", "max"), diverged=("diverged", "sum"), seeds=("seed", "nunique"),
        seeds_loss_spiked=("spiked", "sum"), loss_spikes=("loss_spikes", "sum"),
        seeds_norm_spiked=("norm_spiked", "sum"), norm_spikes=("norm_spikes", "sum"))
