"""The protocol's rules, simulated where the claim's effect is absent, through the functions `make reproduce` calls
(experiments.tuned.rules.analyse -> final_rows -> across -> experiments.claims.combined_verdict).

Each row kind on its own (n = 10 and the pooled n = 20), then the whole decision path of a claim: several rows x
setups, two seed blocks pooled, Holm's correction over the claim's tests, each row's quantifier, and the claim's
combined verdict. "As good as" is simulated at its boundary (minus the smallest effect) and "gets stuck" at plus it.
A verdict that claims something ("supported", "contradicted", "no detectable effect" where it is wrong) may come out
at most 5 % of the time (+2.33 standard errors). Rates and powers are printed (pytest -s)."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.claims import combined_verdict
from experiments.common import Verdict
from experiments.tuned import design, rules

WRONG = ("supported", "contradicted")


def at_most_5(tables: int) -> float:
    return 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / tables)


def arm(rng, n, name, setup="s", block="decide", metric="bpc", centre=2.0, noise=0.05, shift=0.0, diverge=0.0,
        reach=None, gain=None, steps=500):
    """One arm's deciding runs as stages.decide stores them. ``shift``: better by this much (metric scale; log
    for MSE); ``reach``: steps to the target per seed (inf: never); ``gain``: the late held-out gain per seed."""
    higher = metric == "accuracy"
    values = centre + noise * rng.normal(size=n)
    values = values * math.exp(-shift) if metric == "mse" else values + (shift if higher else -shift)
    diverged = rng.random(n) < diverge
    start = {"bpc": 6.0, "accuracy": 0.1, "mse": 1e4}[metric]
    gain = np.zeros(n) if gain is None else gain
    late = values + gain if not higher else values - gain  # the value at 80 % of the steps
    curves = [f"0:{start} {int(0.8 * steps)}:{v0:.6g} {steps}:{v:.6g}" for v0, v in zip(late, values)]
    frame = pd.DataFrame({"setup": setup, "arm": name, "seed": range(n), "block": block, "metric": metric,
                          "higher": higher, "final": np.where(diverged, np.nan, values), "start": start,
                          "diverged": diverged, "steps": steps, "curve": curves, "same_as": "",
                          "reached": np.full(n, 200.0) if reach is None else reach})
    for f in design.DIVERGE_FACTORS:
        frame[f"diverged_{f:g}x"] = diverged
    return frame.assign(run=[f"{setup}-{name}-{block}-{i}" for i in range(n)])


def row(measure, kind="superiority", setups=("s",), quantifier="every", claim="Cx", label="r"):
    return design.Row(claim, label, "a", "b", measure, kind, quantifier, only=setups)


def rate(once, tables, seed=1) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([once(rng) for _ in range(tables)]))


CHOICES = pd.DataFrame(columns=["setup", "arm", "bracketed"])


def verdict(r, frames) -> str:
    rows = rules.analyse(pd.concat(frames, ignore_index=True), CHOICES, [r], with_power=False)
    return rules.final_rows(rows).verdict.iloc[0]


def blocks(n):
    return ["decide"] if n == 10 else ["decide", "verify"]


def null_case(kind, rng, n, setup="s"):
    """Both arms of one row kind with no effect (at the boundary for as-good-as and stuck)."""
    frames = []
    for block in blocks(n):
        m = 10
        if kind == "final":
            frames += [arm(rng, m, x, setup, block) for x in "ab"]
        elif kind == "final, 30 % diverge":
            frames += [arm(rng, m, x, setup, block, diverge=0.3) for x in "ab"]
        elif kind.startswith("as good as"):
            metric = kind.split()[-1]
            centre, noise = {"bpc": (2.0, 0.05), "accuracy": (0.9, 0.015), "mse": (10.0, 0.15 * 10)}[metric]
            s = design.SMALLEST[metric]
            frames += [arm(rng, m, "a", setup, block, metric, centre, noise, shift=-s), arm(rng, m, "b", setup, block,
                                                                                            metric, centre, noise)]
        elif kind.startswith("steps"):
            censored = 0.3 if "censored" in kind else 0.0
            for x in "ab":
                reach = np.exp(rng.normal(math.log(200), 0.4, m))
                frames.append(arm(rng, m, x, setup, block, reach=np.where(rng.random(m) < censored, np.inf, reach)))
        elif kind.startswith("diverged"):
            p = float(kind.split()[-1])
            frames += [arm(rng, m, x, setup, block, diverge=p) for x in "ab"]
        elif kind == "spread":
            frames += [arm(rng, m, x, setup, block) for x in "ab"]
        elif kind == "stuck":
            s = design.SMALLEST["bpc"]
            frames += [arm(rng, m, "a", setup, block, shift=s),
                       arm(rng, m, "b", setup, block, gain=s + 0.02 * rng.normal(size=m))]
    return frames


KINDS = {"final": row("final"), "final, 30 % diverge": row("final"),
         "as good as bpc": row("final", "noninferiority"), "as good as accuracy": row("final", "noninferiority"),
         "as good as mse": row("final", "noninferiority"), "steps": row("steps"), "steps, 30 % censored": row("steps"),
         "diverged 0.1": row("diverged"), "diverged 0.5": row("diverged"), "spread": row("spread"),
         "stuck": row("stuck")}


N_BOTH = [10, pytest.param(20, marks=pytest.mark.slow)]  # n = 20 (two blocks pooled): under `make test-slow`


@pytest.mark.parametrize("n", N_BOTH)
@pytest.mark.parametrize("kind", list(KINDS))
def test_each_row_kind_without_an_effect(kind, n):
    tables = 300
    measured = rate(lambda rng: verdict(KINDS[kind], null_case(kind, rng, n)) in WRONG, tables)
    print(f"\n{kind}, n = {n}: decides wrongly in {measured:.1%} of {tables} tables")
    assert measured <= at_most_5(tables)


@pytest.mark.parametrize("n", N_BOTH)
def test_power_at_the_smallest_effect_is_printed_and_grows_with_n(n):
    """The final-metric row at exactly its smallest effect (noise SD 0.05 bpc): how often it is supported."""
    def once(rng):
        frames = []
        for block in blocks(n):
            frames += [arm(rng, 10, "a", block=block, shift=design.SMALLEST["bpc"]), arm(rng, 10, "b", block=block)]
        return verdict(row("final"), frames) == "supported"

    power = rate(once, 200)
    print(f"\npower of the final-metric row at its smallest effect, n = {n}: {power:.0%}")
    assert power > {10: 0.35, 20: 0.6}[n]  # about 50 % and 80 % for a paired test at one SD


# ---------------------------------------------------------------- the whole decision path of a claim
CLAIMS = {  # claim shapes as the protocol has them: C3 (4 rows x 3 setups, two of them "some"), C7 (5 setups)
    "C3-like": [("diverged 0.1", row("diverged", setups=("s1", "s2", "s3"), claim="C3", label="r1")),
                ("steps, 30 % censored", row("steps", setups=("s1", "s2", "s3"), claim="C3", label="r2")),
                ("stuck", row("stuck", setups=("s1", "s2", "s3"), quantifier="some", claim="C3", label="r3")),
                ("stuck", row("stuck", setups=("s1", "s2", "s3"), quantifier="some", claim="C3", label="r4"))],
    "C5-like": [("steps", row("steps", setups=("s1", "s2", "s3"), claim="C5", label="r1")),
                ("spread", row("spread", setups=("s1", "s2", "s3"), claim="C5", label="r2"))],
    "C7-like": [("as good as bpc", row("final", "noninferiority", setups=tuple(f"s{i}" for i in range(5)),
                                       claim="C7", label="r1"))],
    "B3-like": [("as good as bpc", row("final", "noninferiority", setups=("s1",), claim="B3", label=f"r{i}"))
                for i in range(4)],  # four remedies, each as good as the tuned threshold, on one setup
}


def claim_verdict(shape, rng, n) -> str:
    verdicts = []
    for i, (kind, r) in enumerate(CLAIMS[shape]):
        frames = [f.assign(arm=f.arm.map({"a": f"a{i}", "b": f"b{i}"})) for s in r.setups
                  for f in null_case(kind, rng, n, s)]
        verdicts.append((r, pd.concat(frames, ignore_index=True)))
    rows = [design.Row(r.claim, r.label, f"a{i}", f"b{i}", r.measure, r.kind, r.quantifier, only=r.setups)
            for i, (r, _) in enumerate(verdicts)]
    analysed = rules.analyse(pd.concat([f for _, f in verdicts], ignore_index=True), CHOICES, rows,
                             with_power=False)
    words = rules.claim_verdicts(rules.final_rows(analysed), rows)
    return combined_verdict([("tuned", Verdict("Cx", label, "", "", "", word)) for label, word in words.items()])


@pytest.mark.slow
@pytest.mark.parametrize("n", [10, 20])
@pytest.mark.parametrize("shape", list(CLAIMS))
def test_a_claims_whole_decision_path_without_an_effect(shape, n):
    tables = 120 if shape == "C3-like" else 200
    found = [claim_verdict(shape, np.random.default_rng(1000 * n + i), n) for i in range(tables)]
    wrong = float(np.mean([w not in ("undecided", "not tested") for w in found]))
    print(f"\n{shape} claim, n = {n}, no effect anywhere: a claim verdict other than undecided in {wrong:.1%} of "
          f"{tables} tables ({pd.Series(found).value_counts().to_dict()})")
    assert wrong <= at_most_5(tables)


def test_an_unbracketed_best_lr_leaves_a_row_undecided_unless_the_grid_is_the_claims_scope():
    """B3's setup asks no bracket (its two lrs are the claim's scope): a clear effect is decided there, and the same
    runs on a setup whose rule asks for one stay undecided."""
    rng = np.random.default_rng(3)
    found = {}
    for setup in ("charlm_gpt", "charlm_gpt_spiky"):
        assert design.SETUPS[setup].bracket == (setup == "charlm_gpt")
        frames = [arm(rng, 10, "a", setup, shift=0.2), arm(rng, 10, "b", setup)]
        choices = pd.DataFrame({"setup": setup, "arm": ["a", "b"], "bracketed": [False, True]})
        rows = rules.analyse(pd.concat(frames, ignore_index=True), choices, [row("final", setups=(setup,))],
                             with_power=False)
        found[setup] = rules.final_rows(rows).iloc[0]
    assert found["charlm_gpt_spiky"].verdict == "supported" and rules.NOT_BRACKETED not in str(
        found["charlm_gpt_spiky"].note)
    assert found["charlm_gpt"].verdict == "undecided" and rules.NOT_BRACKETED in found["charlm_gpt"].note
