"""The rules, written before the runs: each row's measure and interval, its verdict words, the family over which
Holm's correction applies (every test of one claim), the verdict over setups, and which seed block decides.

Scales are fixed per row before any run: a final metric is always the paired difference of scores (log ratio for
MSE) with a diverged run scoring its untrained model; steps to target are always restricted steps (never reached =
the run's length); spread is always the SD ratio of those scores; divergence is always a difference of rates.
Positive always means "arm a better", and arm a is the one the claim favours."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from gradclip import stats
from experiments.tuned.design import (DIVERGE_FACTORS, LOG_SCALE, PRIMARY_FACTOR, ROWS, SETUPS, SMALLEST,
                                      SPREAD_CONFIDENCE, Row)
from experiments.tuned.stages import late_gain, score

ALPHA = 1 - stats.CONFIDENCE
DECIDED = ("supported", "contradicted", "no detectable effect")


def paired(decided: pd.DataFrame, setup: str, a: str, b: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The two arms' runs on one setup, aligned by block and seed."""
    part = decided[decided.setup == setup]
    one = part[part.arm == a].sort_values(["block", "seed"], ignore_index=True)
    two = part[part.arm == b].sort_values(["block", "seed"], ignore_index=True)
    return one, two


def restricted_steps(frame: pd.DataFrame) -> np.ndarray:
    """Steps to the target, a run that never reached it counted at its length (restricted mean time)."""
    return np.minimum(frame.reached.to_numpy(dtype=float), frame.steps.to_numpy(dtype=float))


def measure(row: Row, one: pd.DataFrame, two: pd.DataFrame) -> dict:
    """The row's per-seed values (positive = a better) or counts, its smallest effect, unit and interval maker."""
    metric = one.metric.iloc[0]
    if row.measure == "diverged":
        counts = {f: (int(one[f"diverged_{f:g}x"].sum()), int(two[f"diverged_{f:g}x"].sum())) for f in DIVERGE_FACTORS}
        ka, kb = counts[PRIMARY_FACTOR]
        return {"smallest": SMALLEST["diverged"], "unit": "rate", "counts": counts,
                "interval": lambda c: stats.rate_difference(kb, len(two), ka, len(one), c)}
    if row.measure == "spread":
        a, b = score(one).to_numpy(), score(two).to_numpy()
        return {"smallest": SMALLEST["spread"], "unit": "log SD ratio", "confidence": SPREAD_CONFIDENCE, "arms": (a, b),
                "interval": lambda c: stats.sd_ratio_interval(a, b, c)}
    if row.measure == "steps":
        d = np.log(restricted_steps(two)) - np.log(restricted_steps(one))
        return {"smallest": SMALLEST["steps"], "unit": "log steps ratio", "values": d,
                "interval": lambda c: stats.paired_interval(d, c)}
    d = score(one).to_numpy() - score(two).to_numpy()
    found = {"smallest": SMALLEST[metric], "unit": "log ratio" if metric in LOG_SCALE else metric, "values": d,
             "interval": lambda c: stats.paired_interval(d, c)}
    if row.measure == "stuck":  # per seed: b's late gain (positive = still improving), a's too
        gains = [np.array([late_gain(r.curve, r.steps, r.metric, r.higher) if not r.diverged else math.nan
                           for r in side.itertuples()]) for side in (two, one)]
        found["gain_b"], found["gain_a"] = gains
    return found


NOT_BRACKETED = "an arm's best lr is not bracketed"


def word(iv: stats.Interval, smallest: float, kind: str) -> str:
    """Superiority: supported / contradicted when the interval excludes 0 on the claimed / other side, no detectable
    effect when it lies within the smallest effect. As good as: supported when its low end is above minus the
    smallest effect, contradicted when its high end is below it."""
    if kind == "superiority":
        return stats.verdict(iv, smallest, +1)
    if iv.low > -smallest:
        return "supported"
    return "contradicted" if iv.high < -smallest else "undecided"


def boundary(verdict: str, smallest: float, kind: str, estimate: float) -> float:
    """The effect whose exclusion earns the verdict (for its p-value and for 'seeds that would decide')."""
    if kind == "noninferiority":
        return -smallest
    if verdict == "no detectable effect":
        return math.copysign(smallest, estimate)
    return 0.0


def judge(row: Row, one: pd.DataFrame, two: pd.DataFrame) -> dict:
    """One row on one setup and block: interval, verdict, the p-value that earned it (for Holm), a note."""
    m = measure(row, one, two)
    found = judge_measure(m, row.kind, row.measure == "stuck")
    if row.measure == "diverged":
        found["note"] = "diverged a/b at " + ", ".join(f"{f:g} x: {ka}/{kb}" for f, (ka, kb) in m["counts"].items())
    return found


def judge_measure(m: dict, kind: str, stuck: bool = False) -> dict:
    """A measure (``measure``'s dict: per-seed ``values`` or the arms or counts, ``smallest``, ``unit``,
    ``interval``) judged: its interval, verdict words, the p-value that earned the verdict (for Holm), a note."""
    confidence = m.get("confidence", stats.CONFIDENCE)
    iv = m["interval"](confidence)
    smallest, note = m["smallest"], ""
    if stuck:
        verdict, p, note = _stuck(m, iv, confidence)
    else:
        verdict = word(iv, smallest, kind)
        edge = boundary(verdict, smallest, kind, iv.estimate)
        p = _p(m, edge, confidence) if verdict in DECIDED else math.nan
        if verdict == "no detectable effect":
            p = max(_p(m, -smallest, confidence), _p(m, smallest, confidence))
    return {"iv": iv, "smallest": smallest, "unit": m["unit"], "verdict": verdict, "p": p, "note": note,
            "confidence": confidence}


def _p(m: dict, value: float, confidence: float) -> float:
    """The p-value of the row's test at ``value``, rescaled to the 5 % family level when the row is read at another
    confidence (the swap test at 97 %)."""
    if "values" in m:
        p = stats.sign_flip_p(m["values"], boundary=value)
    elif "arms" in m:
        p = stats.swap_p(*m["arms"], log_ratio=value)
    else:
        p = stats.p_value(m["interval"], value)
    return min(1.0, p * (1 - stats.CONFIDENCE) / (1 - confidence))


# Why a "gets stuck" verdict is not what its final-metric interval alone would say (printed beside it in figures)
A_IMPROVING = "a still improving: the runs are too short to show a plateau"
A_NOT_BETTER = "a not better by the smallest effect"
B_IMPROVING = "b still improving: its late gain is above the smallest effect"


def _stuck(m: dict, iv: stats.Interval, confidence: float) -> tuple[str, float, str]:
    """Gets stuck: supported when a ends better by more than the smallest effect (interval above it) and b's late
    gain lies below the smallest effect (its interval's high end below it): both at 95 %, an intersection. Contradicted
    when a is not better by that much (interval below it) or b still improves by more (interval above it), each read
    at 97.5 % (Bonferroni over the two). Undecided when a itself still improves by the smallest effect (runs too
    short)."""
    s, gain_b, gain_a = m["smallest"], m["gain_b"], m["gain_a"]
    note = f"late gain over the last 20 % of steps: a {np.nanmedian(gain_a):.3g}, b {np.nanmedian(gain_b):.3g} (median)"
    gb = gain_b[np.isfinite(gain_b)]
    if np.isfinite(gain_a).any() and np.nanmedian(gain_a) >= s:
        return "undecided", math.nan, note + "; " + A_IMPROVING
    if len(gb) < 2:
        return "undecided", math.nan, note + "; b diverged"
    p_final, p_gain = stats.sign_flip_p(m["values"], boundary=s), stats.sign_flip_p(gb, boundary=s)
    if iv.low > s and stats.paired_interval(gb, confidence).high < s:
        return "supported", max(p_final, p_gain), note
    half = 1 - (1 - confidence) / 2
    not_better, improving = m["interval"](half).high < s, stats.paired_interval(gb, half).low > s
    if not_better or improving:
        p = min(1.0, 2 * min(p_final, p_gain))
        return "contradicted", p, note + "; " + (A_NOT_BETTER if not_better else B_IMPROVING)
    return "undecided", math.nan, note


def seeds_needed(iv: stats.Interval, smallest: float, kind: str) -> int:
    """Seeds that would decide an undecided row at its current estimate and spread: the nearer of its boundaries."""
    if kind == "noninferiority":
        return stats.seeds_needed(iv, -smallest)
    options = [n for n in (stats.seeds_needed(iv, 0.0), _within(iv, smallest)) if n > 0]
    return min(options) if options else -1


def _within(iv: stats.Interval, smallest: float) -> int:
    """Seeds that would put the interval within the smallest effect (no detectable effect), if the estimate is."""
    room = smallest - abs(iv.estimate)
    half = (iv.high - iv.low) / 2
    if room <= 0 or not math.isfinite(half):
        return -1
    return max(iv.n + 1, math.ceil(iv.n * (half / room) ** 2))


def power(iv: stats.Interval, smallest: float, n: int) -> float:
    """Chance at ``n`` seeds that the row's test finds its smallest effect (supported): normal noise at the spread
    the interval implies (half-width = t x SD / sqrt(n)) for a sign-flip interval; exact binomials for a rate (0 vs
    the smallest difference); NaN otherwise."""
    from scipy.stats import binom
    from scipy.stats import t as student

    if iv.method == "Newcombe":
        return float(sum(binom.pmf(k, n, smallest) for k in range(n + 1) if stats.rate_difference(k, n, 0, n).low > 0))
    if iv.method != "sign-flip" or not math.isfinite(iv.high - iv.low) or iv.n < 2:
        return math.nan
    spread = (iv.high - iv.low) / 2 * math.sqrt(iv.n) / student.ppf(1 - ALPHA / 2, iv.n - 1)
    if not spread > 0:
        return math.nan
    rng = np.random.default_rng(0)
    draws = rng.normal(smallest, spread, (400, n))
    signs = rng.choice((1.0, -1.0), size=(4096, n))  # random sign patterns: an estimate of a power, not a verdict
    observed = np.abs(draws.sum(axis=1))
    p = (1 + (np.abs(draws @ signs.T) >= observed[:, None] * (1 - 1e-9)).sum(axis=1)) / (1 + len(signs))
    return float(np.mean((p <= ALPHA) & (draws.mean(axis=1) > 0)))


# ---------------------------------------------------------------- families, blocks, setups
def holm(frame: pd.DataFrame) -> pd.DataFrame:
    """Holm's correction over every test of one claim (its rows x setups, in one block): a verdict that its p-value
    does not keep after the correction becomes undecided. Tests that decided nothing count with p = 1."""
    frame = frame.copy()
    for _, family in frame[frame.verdict != "not tested"].groupby(["claim", "block"]):
        p = family.p.where(family.verdict.isin(DECIDED), 1.0).fillna(1.0)
        keep = dict(zip(family.index, stats.holm(p.tolist())))
        for i in family.index[family.verdict.isin(DECIDED)]:
            if not keep[i]:
                frame.loc[i, "note"] = "; ".join(filter(None, [frame.loc[i, "note"], (
                    f"{frame.loc[i, 'verdict']} at 95 %, not after Holm over the claim's {len(family)} tests")]))
                frame.loc[i, "verdict"] = "undecided"
    return frame


def final_rows(rows: pd.DataFrame) -> pd.DataFrame:
    """One verdict per row and setup: the pooled seeds of both blocks when the verify block ran (one pre-registered
    test at n = 20), else the deciding block's; the blocks' own verdicts are shown beside it as a replication."""
    out = []
    for (label, setup), part in rows.groupby(["row", "setup"], sort=False):
        by = part.set_index("block")
        pick = (by.loc["pooled"] if "pooled" in by.index else by.iloc[0]).copy()
        pick["blocks"] = "decide + verify, pooled" if "pooled" in by.index else "decide (verify not run)"
        if {"decide", "verify"} <= set(by.index) and by.loc["decide", "verdict"] != "not tested":
            signs = {np.sign(by.loc[b, "estimate"]) for b in ("decide", "verify")}
            pick["replication"] = (f"decide: {by.loc['decide', 'verdict']}, verify: {by.loc['verify', 'verdict']} ("
                                   + ("same direction" if len(signs) == 1 else "opposite directions") + ")")
        else:
            pick["replication"] = ""
        pick["row"], pick["setup"] = label, setup
        out.append(pick)
    return pd.DataFrame(out).reset_index(drop=True)


def across(words: list[str], quantifier: str = "every") -> str:
    """A row's verdict over its setups. "every" (a universal claim): supported only if supported everywhere,
    contradicted if contradicted somewhere and supported nowhere, setup-dependent if both. "some" (an existential
    claim, "can"): supported if supported somewhere, contradicted only if contradicted everywhere."""
    tested = [w for w in words if w != "not tested"]
    if not tested:
        return "not tested"
    if quantifier == "some":
        if "supported" in tested:
            return "supported"
        return "contradicted" if all(w == "contradicted" for w in tested) else "undecided"
    if all(w == "supported" for w in tested):
        return "supported"
    if "supported" in tested and "contradicted" in tested:
        return "setup-dependent"
    if "contradicted" in tested:
        return "contradicted"
    if all(w == "no detectable effect" for w in tested):
        return "no detectable effect"
    return "undecided"


ROW_COLUMNS = ["claim", "row", "setup", "block", "a", "b", "kind", "quantifier", "unit", "estimate", "low", "high",
               "n", "method", "smallest", "verdict", "p", "note", "power_n10", "power_n20", "seeds_needed",
               "same_as"]


def analyse(decided: pd.DataFrame, choices: pd.DataFrame, rows: list[Row] = ROWS, with_power: bool = True):
    """Every row x setup x block (decide, verify, pooled): interval, verdict, p-value, n, power, seeds needed;
    Holm's correction per claim and block."""
    blocks = list(dict.fromkeys(decided.block))
    out = []
    for row in rows:
        for setup in row.setups:
            chosen = choices[choices.setup == setup].set_index("arm")
            scope_only = setup in SETUPS and not SETUPS[setup].bracket  # the grid is the claim's scope
            bracketed = scope_only or all(bool(chosen.loc[arm, "bracketed"]) for arm in (row.a, row.b)
                                          if arm in chosen.index)
            for block in blocks + (["pooled"] if len(blocks) > 1 else []):
                part = decided if block == "pooled" else decided[decided.block == block]
                one, two = paired(part, setup, row.a, row.b)
                base = {"claim": row.claim, "row": row.label, "setup": setup, "block": block, "a": row.a, "b": row.b,
                        "kind": row.kind, "quantifier": row.quantifier}
                same = {str(x) for x in [*one.same_as, *two.same_as] if isinstance(x, str) and x}
                if one.empty or two.empty:
                    out.append({**base, "verdict": "not tested", "note": "arm not run (no clip's tuned lr is not "
                                "below norm 1's)" if "none_at_clip_lr" in (row.a, row.b) else "arm not run"})
                    continue
                if (one.run.to_numpy() == two.run.to_numpy()).all():
                    out.append({**base, "verdict": "not tested", "same_as": ", ".join(sorted(same)),
                                "note": f"not tested: tuning chose the same configuration for both arms"})
                    continue
                found = judge(row, one, two)
                iv, verdict, note = found["iv"], found["verdict"], found["note"]
                if not bracketed:
                    verdict, note = "undecided", "; ".join(filter(None, [NOT_BRACKETED, note]))
                identical = (score(one).to_numpy() == score(two).to_numpy()).all()
                if identical:
                    note = "; ".join(filter(None, [note, "every seed's result identical to the other arm's"]))
                out.append({**base, "unit": found["unit"], "estimate": iv.estimate, "low": iv.low, "high": iv.high,
                            "n": iv.n, "method": iv.method, "smallest": found["smallest"], "verdict": verdict,
                            "p": found["p"], "note": note,
                            "power_n10": power(iv, found["smallest"], 10) if with_power else math.nan,
                            "power_n20": power(iv, found["smallest"], 20) if with_power else math.nan,
                            "seeds_needed": seeds_needed(iv, found["smallest"], row.kind) if verdict == "undecided"
                            else -1})
    return holm(pd.DataFrame(out, columns=ROW_COLUMNS))


def claim_verdicts(final: pd.DataFrame, rows: list[Row] = ROWS) -> dict[str, str]:
    """Each row's verdict over its setups (by the row's quantifier)."""
    return {row.label: across(final[final.row == row.label].verdict.tolist(), row.quantifier) for row in rows}
