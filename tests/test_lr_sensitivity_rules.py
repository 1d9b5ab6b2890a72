"""The lr sensitivity experiment's verdict path, simulated where clipping changes nothing, through the functions the
experiment calls: the measures (experiments.lr_sensitivity.rules.sensitivity / width, vectorised over tables, setups,
arms, seeds and lrs), then per table rules.analyse (the per-setup sign-flip interval, Holm over the claim's rows x
setups on each grid) -> final_rows (the shifted grids' check) -> claim_verdicts (over setups) ->
experiments.claims.combined_verdict. At n = 10 a verdict that claims something ("supported", "contradicted") may come
out at most 5 % of the time (+2.33 standard errors); the power at the smallest effect is printed (pytest -s)."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments.claims import combined_verdict
from experiments.common import Verdict
from experiments.lr_sensitivity import design, rules

WRONG = ("supported", "contradicted")
N = 10
LRS = 2 * design.CORE + 1 + 2 * design.SHIFT  # every lr of a setup's runs grid
UNTRAINED, BEST = 6.7, 2.0  # bpc of an untrained model and at the best lr (the reference)


def at_most_5(tables: int) -> float:
    return 0.05 + 2.33 * math.sqrt(0.05 * 0.95 / tables)


def simulated_scores(rng, tables: int, setups: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores (-bpc) and divergences of tables x setups x 2 arms x N seeds x LRS runs, both arms drawn alike: per
    seed a shared best lr and loss, per arm its own jitter of both, a flat optimum of 1 quarter-decade either side,
    a quadratic bowl beyond it, runs diverging from about 3 quarter-decades above the best on (a diverged run
    scores its untrained model)."""
    shape = (tables, setups, 1, N, 1)
    arm = (tables, setups, 2, N, 1)
    best_lr = LRS // 2 + rng.normal(0, 1.0, shape) + rng.normal(0, 0.5, arm)
    best = BEST + rng.normal(0, 0.03, shape) + rng.normal(0, 0.03, arm)
    j = np.arange(LRS)
    losses = best + 0.08 * np.maximum(np.abs(j - best_lr) - 1, 0) ** 2 + rng.normal(0, 0.02, (*arm[:-1], LRS))
    diverged = j > best_lr + 3 + rng.normal(0, 1.0, arm)
    losses = np.where(diverged, UNTRAINED, np.minimum(losses, UNTRAINED))
    return -losses, diverged


def measured(rng, tables: int, setups: int, effect: str = "", times: float = 1.0) -> pd.DataFrame:
    """The ``measured`` frame rules.analyse takes (setup, arm, shift, seed, metric, sensitivity, width), computed by
    rules.sensitivity and rules.width on every grid, for every table at once: setup s of table t is "t<t>s<s>".
    ``effect``: arm a better by ``times`` the smallest effect of that measure on every seed and grid."""
    scores, diverged = simulated_scores(rng, tables, setups)
    start = np.full(scores.shape[:-1], -UNTRAINED)
    index = pd.MultiIndex.from_product([range(tables), range(setups), ["a", "b"], range(N)],
                                       names=["table", "setup", "arm", "seed"]).to_frame(index=False)
    names = "t" + index.table.astype(str) + "s" + index.setup.astype(str)
    frames = []
    for shift in design.SHIFTS:
        columns = slice(design.SHIFT + shift, design.SHIFT + shift + 2 * design.CORE + 1)
        sens = rules.sensitivity(scores[..., columns], start)
        wide = rules.width(scores[..., columns], diverged[..., columns], -BEST, design.SMALLEST["bpc"])
        if effect == "width":
            wide[:, :, 0] += times * design.SMALLEST["width"]
        if effect == "sensitivity":
            sens[:, :, 0] -= times * design.SMALLEST["bpc"]
        frames.append(index.assign(setup=names, shift=rules.shift_label(shift), metric="bpc",
                                   sensitivity=sens.ravel(), width=wide.ravel()))
    return pd.concat(frames, ignore_index=True)


def claim_verdicts(frame: pd.DataFrame, measures: tuple[str, ...], setups: int, kind: str = "superiority"
                   ) -> list[str]:
    """Each table's claim verdict: its rows (one per measure, on its setups) are a claim of their own ("C<t>"), so
    that Holm's correction runs over that table's tests alone, and every table goes through rules.analyse at once."""
    tables = frame.table.max() + 1
    rows = [design.Row(f"C{t}", f"{measure} {t}", "a", "b", measure, kind,
                       only=tuple(f"t{t}s{s}" for s in range(setups)))
            for t in range(tables) for measure in measures]
    final = rules.final_rows(rules.analyse(frame, rows, with_power=False))
    words = rules.claim_verdicts(final, rows)
    return [combined_verdict([("lr_sensitivity", Verdict("C5", r.label, "", "", "", words[r.label]))
                              for r in rows if r.claim == f"C{t}"]) for t in range(tables)]


def rate_of(words: list[str], accepted) -> float:
    return float(np.mean([w in accepted for w in words]))


@pytest.mark.parametrize("measure", ["width", "sensitivity"])
def test_one_row_on_one_setup_without_an_effect(measure):
    tables = 300
    found = claim_verdicts(measured(np.random.default_rng(1), tables, 1), (measure,), 1)
    wrong = rate_of(found, WRONG)
    print(f"\n{measure}, one setup, n = {N}, no effect: decides wrongly in {wrong:.1%} of {tables} tables "
          f"({pd.Series(found).value_counts().to_dict()})")
    assert wrong <= at_most_5(tables)


@pytest.mark.parametrize("measure,times,least", [("width", 1, 0.5), ("sensitivity", 1, 0.0),
                                                 ("sensitivity", 10, 0.5)])
def test_power_at_the_smallest_effect_is_printed(measure, times, least):
    """Arm a better by ``times`` the smallest effect on every seed: how often the row is supported on one setup.
    Sensitivity's per-seed differences spread by about 10 smallest effects here (where each seed's runs start to
    diverge moves them by 0.36 bpc per lr): the smallest effect itself is seldom found at n = 10."""
    tables = 200
    frame = measured(np.random.default_rng(2), tables, 1, effect=measure, times=times)
    zero = frame[(frame["shift"] == "0")].pivot(index=["setup", "seed"], columns="arm", values=measure)
    spread = float((zero.a - zero.b).groupby(level="setup").std().mean() / design.SMALLEST[
        "width" if measure == "width" else "bpc"])
    power = rate_of(claim_verdicts(frame, (measure,), 1), ("supported",))
    print(f"\npower of the {measure} row at {times} x its smallest effect, one setup, n = {N}: {power:.0%} "
          f"(SD of the per-seed differences: {spread:.2g} smallest effects)")
    assert power >= least


@pytest.mark.slow
def test_the_claims_whole_decision_path_without_an_effect():
    """C5's shape here: both rows on four setups, Holm over the 8 tests of each grid, the shifted grids' check, each
    row over its setups, the claim's combined verdict."""
    tables, setups = 400, 4
    found = claim_verdicts(measured(np.random.default_rng(3), tables, setups), ("width", "sensitivity"), setups)
    wrong = 1 - rate_of(found, ("undecided", "not tested", "no detectable effect"))
    print(f"\nC5-like claim, {setups} setups x 2 rows, n = {N}, no effect anywhere: a claim verdict other than "
          f"undecided or no detectable effect in {wrong:.1%} of {tables} tables "
          f"({pd.Series(found).value_counts().to_dict()})")
    assert wrong <= at_most_5(tables)


@pytest.mark.parametrize("measures", [("width",), ("sensitivity",), ("width", "sensitivity")])
def test_as_much_as_rows_where_the_remedy_is_worse_by_the_smallest_effect(measures):
    """B4's rows ("as much as norm 1", non-inferiority) where arm a is worse by exactly the smallest effect on every
    seed and grid, on one setup (B4: the GPT): each row, and both rows through Holm, the shifted grids and the combined
    verdict, say "supported" (or "partly") at most 5 % of the time."""
    tables = 300
    rng = np.random.default_rng(4)
    frames = [measured(rng, tables, 1, effect=m, times=-1) for m in measures]
    frame = frames[0].assign(**{m: f[m] for m, f in zip(measures, frames)})  # each measure at its margin
    found = claim_verdicts(frame, measures, 1, "noninferiority")
    wrong = rate_of(found, ("supported", "partly"))
    print(f"\nB4-like {' + '.join(measures)}, one setup, n = {N}, a worse by the smallest effect: says as good in "
          f"{wrong:.1%} of {tables} tables ({pd.Series(found).value_counts().to_dict()})")
    assert wrong <= at_most_5(tables)


def test_as_much_as_rows_find_an_arm_that_is_as_good():
    """The same rows where the arms are alike (a = b): "as much as" is supported often (it can be found at n = 10)."""
    frame = measured(np.random.default_rng(5), 200, 1)
    found = claim_verdicts(frame, ("width",), 1, "noninferiority")
    power = rate_of(found, ("supported",))
    print(f"\nB4-like width, arms alike, n = {N}: supported in {power:.0%} of 200 tables")
    assert power >= 0.5
