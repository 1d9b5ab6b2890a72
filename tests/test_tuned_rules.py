"""Every verdict rule of experiments/tuned.py, simulated where the claim's effect is exactly absent: 2000 tables of
n = 10 seeds each, with divergence at the rates the runs show. It may say "supported" or "contradicted" at most 5 % of
the time (a one-sided "as good as" claim is simulated at its boundary, minus the smallest effect, and "gets stuck" at
plus the smallest effect). The power at the smallest effect is printed (pytest -s)."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments import tuned

TABLES, N = 2000, 10
AT_MOST_5 = 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / TABLES)  # 5 % unless above it by 2.33 standard errors
DECIDED = ("supported", "contradicted")


def arm(final, metric="bpc", diverged=None, curves=None, steps=500):
    """One arm's deciding runs as decide() stores them."""
    final = np.asarray(final, dtype=float)
    diverged = np.zeros(len(final), bool) if diverged is None else np.asarray(diverged, bool)
    curves = curves or [f"0:{4.0 if metric != 'accuracy' else 0.1} {steps}:{f}" for f in final]
    return pd.DataFrame({"seed": range(len(final)), "block": "decide", "metric": metric,
                         "higher": metric == "accuracy", "final": np.where(diverged, np.nan, final),
                         "diverged": diverged, "curve": curves, "steps": steps})


def rate(decide, tables=TABLES, seed=1) -> float:
    rng = np.random.default_rng(seed)
    return float(np.mean([decide(rng) for _ in range(tables)]))


def row(measure, kind="superiority"):
    return tuned.Row("Cx", "test row", "norm1", "none", measure, kind, ("s",))


def verdict_of(r, one, two, target=math.nan):
    return tuned.judge(r, one, two, target)["verdict"]


@pytest.mark.parametrize("diverge", [0.0, 0.3])
def test_final_metric_superiority_without_an_effect(diverge):
    def once(rng):
        a, b = 2.0 + 0.05 * rng.normal(size=(2, N))
        return verdict_of(row("final"), arm(a, diverged=rng.random(N) < diverge),
                          arm(b, diverged=rng.random(N) < diverge)) in DECIDED

    measured = rate(once)
    print(f"\nfinal metric, superiority, divergence {diverge:.0%}: decides in {measured:.1%} without an effect")
    assert measured <= AT_MOST_5


@pytest.mark.parametrize("metric", ["bpc", "accuracy", "mse"])
def test_as_good_as_at_its_boundary_and_its_power(metric):
    """The true effect is exactly minus the smallest effect: "supported" and "contradicted" both wrong."""
    smallest = tuned.SMALLEST[metric]
    centre = {"bpc": 2.0, "accuracy": 0.9, "mse": 10.0}[metric]
    noise = {"bpc": 0.05, "accuracy": 0.015, "mse": 0.15}[metric]

    def draw(rng, effect):
        b = centre + noise * rng.normal(size=N) * (centre if metric == "mse" else 1)
        a = b * math.exp(-effect) if metric == "mse" else (b + effect if metric == "accuracy" else b - effect)
        a = a + noise * rng.normal(size=N) * (centre if metric == "mse" else 1)
        return arm(a, metric), arm(b, metric)

    r = row("final", "noninferiority")
    wrong = rate(lambda rng: verdict_of(r, *draw(rng, -smallest)) in DECIDED)
    power = rate(lambda rng: verdict_of(r, *draw(rng, 0.0)) == "supported", tables=500)
    print(f"\n'as good as' on {metric}: decides in {wrong:.1%} at the boundary; supported in {power:.0%} with no "
          f"difference (noise {noise:g})")
    assert wrong <= AT_MOST_5


def test_as_good_as_with_divergence():
    """With diverged runs the P scale has no smallest effect: supported needs P(a better) above 1/2."""
    def once(rng):
        a, b = rng.normal(size=(2, N))
        return verdict_of(row("final", "noninferiority"), arm(a, diverged=rng.random(N) < 0.3),
                          arm(b, diverged=rng.random(N) < 0.3)) in DECIDED

    measured = rate(once)
    print(f"\n'as good as' with 30 % divergence in both arms: decides in {measured:.1%}")
    assert measured <= AT_MOST_5


def curve_to(steps_to_target, target=2.5):
    """A curve that reaches ``target`` at the given step (inf: never) on a 10-evaluation grid."""
    points = [f"{s}:{target - 0.1 if s >= steps_to_target else target + 0.5}" for s in range(50, 550, 50)]
    return " ".join(["0:4.0", *points])


@pytest.mark.parametrize("censored", [0.0, 0.3])
def test_steps_to_target_without_an_effect(censored):
    def once(rng):
        reach = np.exp(rng.normal(math.log(200), 0.4, (2, N)))
        reach = np.where(rng.random((2, N)) < censored, math.inf, np.ceil(reach / 50) * 50)
        one, two = (arm(np.full(N, 2.0), curves=[curve_to(s) for s in side]) for side in reach)
        return verdict_of(row("steps"), one, two, target=2.5) in DECIDED

    measured = rate(once)
    print(f"\nsteps to target, {censored:.0%} never reach it in both arms: decides in {measured:.1%}")
    assert measured <= AT_MOST_5


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_divergence_rate_without_an_effect(p):
    def once(rng):
        one, two = (arm(np.full(N, 2.0), diverged=rng.random(N) < p) for _ in range(2))
        return verdict_of(row("diverged"), one, two) in DECIDED

    measured = rate(once)
    print(f"\ndivergence rate {p:.0%} in both arms: decides in {measured:.1%}")
    assert measured <= AT_MOST_5


@pytest.mark.parametrize("noise", ["normal", "t(3)"])
def test_spread_without_an_effect_and_its_power(noise):
    draw = {"normal": lambda rng, s: rng.normal(0, s, N), "t(3)": lambda rng, s: s * rng.standard_t(3, N)}[noise]

    def once(rng, ratio=1.0):
        return verdict_of(row("spread"), arm(2 + 0.05 * draw(rng, 1.0)), arm(2 + 0.05 * draw(rng, ratio)))

    measured = rate(lambda rng: once(rng) in DECIDED)
    power = rate(lambda rng: once(rng, math.exp(tuned.SMALLEST["spread"])) == "supported", tables=500)
    print(f"\nspread (swap test), {noise} noise: decides in {measured:.1%} without an effect; power at an SD ratio of "
          f"1.5: {power:.0%}")
    assert measured <= AT_MOST_5


def test_gets_stuck_at_its_boundary():
    """Clipping ends better by exactly the smallest effect and no clip is flat: neither word is earned."""
    smallest = tuned.SMALLEST["bpc"]

    def once(rng):
        b = 2.2 + 0.05 * rng.normal(size=N)
        a = b - smallest + 0.05 * rng.normal(size=N)
        two = arm(b, curves=[f"0:4.0 400:{v:.6f} 500:{v:.6f}" for v in b])
        return verdict_of(row("stuck"), arm(a), two) in DECIDED

    measured = rate(once)
    print(f"\ngets stuck at its boundary: decides in {measured:.1%}")
    assert measured <= AT_MOST_5


def test_across_setups_with_holm_without_an_effect():
    """Three setups, no effect anywhere: the row's verdict over setups (after Holm) decides at most 5 % of the time."""
    r = row("final")

    def once(rng):
        rows = []
        for setup in ("s1", "s2", "s3"):
            found = tuned.judge(r, *(arm(2.0 + 0.05 * rng.normal(size=N)) for _ in range(2)), math.nan)
            rows.append({"row": r.label, "block": "decide", "setup": setup, "verdict": found["verdict"],
                         "p_contra": found["p_contra"], "note": ""})
        return tuned.across(tuned._holm(pd.DataFrame(rows)).verdict.tolist()) in DECIDED + ("setup-dependent",)

    measured = rate(once)
    print(f"\nacross 3 setups with Holm: decides in {measured:.1%} without an effect")
    assert measured <= AT_MOST_5


def test_tuning_row_cannot_decide_on_three_seeds():
    iv = tuned.stats.paired_interval([0.1, 0.2, 0.3])
    assert tuned.word(iv, 0.05, "superiority") == "undecided" and not math.isfinite(iv.low)


@pytest.mark.slow
def test_two_blocks_and_the_pooled_interval_without_an_effect():
    """The verify rule: blocks that disagree are undecided, else the 20 pooled seeds decide."""
    r = row("final")

    def once(rng):
        frames = {}
        for block in ("decide", "verify"):
            one, two = (arm(2.0 + 0.05 * rng.normal(size=N)) for _ in range(2))
            frames[block] = (one.assign(block=block), two.assign(block=block))
        rows = [{"row": r.label, "setup": "s", "block": b, "verdict": verdict_of(r, *frames[b]), "note": ""}
                for b in frames]
        pooled = [pd.concat([frames["decide"][i], frames["verify"][i]], ignore_index=True) for i in (0, 1)]
        rows.append({"row": r.label, "setup": "s", "block": "pooled", "verdict": verdict_of(r, *pooled), "note": ""})
        return tuned.final_rows(pd.DataFrame(rows)).verdict.iloc[0] in DECIDED

    measured = rate(once)
    print(f"\ndecide + verify, pooled: decides in {measured:.1%} without an effect")
    assert measured <= AT_MOST_5
