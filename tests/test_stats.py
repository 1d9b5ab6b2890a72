"""The comparison statistics, simulated where the true effect is zero (2000 tables of n = 10 seeds each): how often
does each say there is an effect? At most 5 % is the requirement; the measured rates are printed (pytest -s)."""

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from gradclip.stats import (Interval, holm, paired_interval, rate_difference, seeds_needed, superiority, verdict,
                            wins)

TABLES, SEEDS = 2000, 10
# A rate measured on 2000 tables is "at most 5 %" unless it is above 5 % by more than 2.33 standard errors (1 %).
AT_MOST_5 = 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / TABLES)
NOISE = {  # per-seed outcomes of two exchangeable arms: no true effect
    "normal": lambda rng: rng.normal(0, 1, (2, SEEDS)),
    "t(3)": lambda rng: rng.standard_t(3, (2, SEEDS)),
    "lognormal": lambda rng: rng.lognormal(0, 1, (2, SEEDS)),
}


def effect_rate(draw, decide, tables=TABLES) -> float:
    rng = np.random.default_rng(1)
    return float(np.mean([decide(*draw(rng)) for _ in range(tables)]))


@pytest.mark.parametrize("noise", NOISE)
def test_paired_interval_says_effect_at_most_5_percent_of_the_time_without_one(noise):
    rate = effect_rate(NOISE[noise], lambda a, b: paired_interval(a - b).excludes(0.0))
    print(f"\nsign-flip interval, {noise} noise, no effect: excludes 0 in {100 * rate:.1f} % of {TABLES} tables")
    assert rate <= AT_MOST_5


def test_bca_bootstrap_would_not_hold_at_ten_seeds():
    """Why not scipy's paired BCa bootstrap: at n = 10 it finds an effect about twice as often as it should."""
    def bca(a, b):
        low, high = scipy_stats.bootstrap((a - b,), np.mean, method="BCa", n_resamples=2000,
                                          random_state=0).confidence_interval
        return not low <= 0 <= high

    rate = effect_rate(NOISE["normal"], bca, tables=500)
    print(f"\nBCa bootstrap, normal noise, no effect: excludes 0 in {100 * rate:.1f} % of 500 tables")
    assert rate > 0.08


@pytest.mark.parametrize("diverge", [0.0, 0.3, 0.7])
def test_superiority_with_divergence_says_effect_at_most_5_percent_of_the_time(diverge):
    """Both arms diverge at the same rate (diverged = worst, so two diverged seeds tie)."""
    def draw(rng):
        outcome = rng.normal(0, 1, (2, SEEDS))
        return np.where(rng.random((2, SEEDS)) < diverge, math.inf, outcome)

    rate = effect_rate(draw, lambda a, b: superiority(a, b, higher_is_better=False).excludes(0.5))
    print(f"\nP(a better), divergence {diverge:.0%} in both arms: excludes 1/2 in {100 * rate:.1f} % of tables")
    assert rate <= AT_MOST_5


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_newcombe_says_effect_at_most_5_percent_of_the_time_without_one(p):
    rng = np.random.default_rng(2)
    rate = np.mean([rate_difference(rng.binomial(SEEDS, p), SEEDS, rng.binomial(SEEDS, p), SEEDS).excludes(0.0)
                    for _ in range(TABLES)])
    print(f"\nNewcombe, divergence rate {p} in both arms: excludes 0 in {100 * rate:.1f} % of tables")
    assert rate <= AT_MOST_5


def test_power_at_the_smallest_effects_is_printed():
    """Power at n = 10 where the true effect is the smallest worth caring about, in units of the seed-to-seed SD of
    the paired differences (the protocol prints it with the measured SD), and for divergence 0 % vs 20 %."""
    for effect in (0.5, 1.0, 1.5):
        rate = effect_rate(lambda rng: (rng.normal(effect, 1, SEEDS), np.zeros(SEEDS)),
                           lambda a, b: paired_interval(a - b).excludes(0.0), tables=500)
        print(f"\npower, paired difference of {effect} SD at n = {SEEDS}: {100 * rate:.0f} %")
        assert (rate > 0.9) == (effect >= 1.5)
    rng = np.random.default_rng(3)
    power = np.mean([rate_difference(rng.binomial(SEEDS, 0.2), SEEDS, 0, SEEDS).excludes(0.0) for _ in range(500)])
    print(f"power, divergence 20 % vs 0 % at n = {SEEDS}: {100 * power:.0f} %")
    assert power < 0.5


def test_paired_interval_matches_the_t_interval_on_symmetric_data_and_is_exact():
    d = np.array([0.3, -0.1, 0.5, 0.2, 0.4, 0.1, 0.6, -0.2, 0.3, 0.2])
    found = paired_interval(d)
    t = scipy_stats.t.ppf(0.975, 9) * d.std(ddof=1) / math.sqrt(10)
    assert found.estimate == pytest.approx(d.mean()) and found.low > 0
    assert found.low == pytest.approx(d.mean() - t, abs=0.05) and found.high == pytest.approx(d.mean() + t, abs=0.05)
    # no spread (two arms that ran the same configuration): every other shift is rejected at p = 2 / 2^n
    assert (paired_interval(np.full(10, 0.2)).low, paired_interval(np.full(10, 0.2)).high) == (0.2, 0.2)
    assert paired_interval(np.full(5, 0.2)).low == -math.inf  # 2 / 2^5 > 5 %: five seeds cannot say it


def test_wins_count_ties_and_divergence():
    a = np.array([1.0, 2.0, math.inf, math.inf, 3.0])
    b = np.array([2.0, 2.0, math.inf, 1.0, math.inf])
    assert list(wins(a, b, higher_is_better=False)) == [1.0, 0.5, 0.5, 0.0, 1.0]
    assert list(wins(-a, -b, higher_is_better=True)) == [1.0, 0.5, 0.5, 0.0, 1.0]  # the same order, negated


def test_newcombe_reference_values():
    """Newcombe (1998), Table II, example (a): 56/70 vs 48/80 gives 0.0524 to 0.3339."""
    found = rate_difference(56, 70, 48, 80)
    assert (round(found.low, 4), round(found.high, 4)) == (0.0524, 0.3339)


def test_no_divergence_on_either_side_cannot_show_no_effect_at_20_points():
    """0/10 vs 0/10: the interval is about +-0.28, wider than the smallest effect of 20 points: undecided, and it
    would take more seeds, which the protocol reports instead of adding them after looking."""
    found = rate_difference(0, 10, 0, 10)
    assert found.low < -0.2 and found.high > 0.2
    assert verdict(found, smallest=0.2, claimed_sign=-1) == "undecided" and seeds_needed(found, 0.2) > 10


@pytest.mark.parametrize("low, high, word", [(0.1, 0.3, "supported"), (-0.3, -0.1, "contradicted"),
                                             (-0.04, 0.03, "no detectable effect"), (-0.04, 0.2, "undecided")])
def test_verdict_words(low, high, word):
    assert verdict(Interval((low + high) / 2, low, high, 10, "test"), smallest=0.05, claimed_sign=1) == word


def test_holm():
    assert holm([0.01, 0.04, 0.03, 0.005]) == [True, False, False, True]  # 0.005 < .0125, 0.01 < .0167, .03 > .025
    assert holm([0.2, 0.01]) == [False, True]
