"""The rule, fixed before the runs, and the verdicts on C1 (the wall's steepness), C2 (catapults without clipping)
and C4 (the clipped step's size and direction)."""

from __future__ import annotations

import pandas as pd

from experiments.cliff.model import COLUMN_W
from experiments.common import Verdict, fmt_ci, fmt_rate

# Fixed before the runs.
STEEP_RATIO = 100.0  # C1: max / median gradient norm on the grid
JUMP_RATIO = 100.0  # C2: largest step >= this x the median step before it = a catapult
UNDONE_MUCH = 0.5  # C2: the loss right after the catapult gives back >= this share of the progress made before it
CATAPULT_SHARE = 1 / 3  # C2 supported: catapults that undo much on at least this share of the starts
STEP_TOL = 1e-6  # C4: ||delta theta|| <= lr x threshold x (1 + STEP_TOL)
COSINE_TOL = 1e-6  # C4: cos(applied step, -raw gradient) >= 1 - COSINE_TOL on every step

RULE = (
    f"C1 (a check: the model is built with a wall): along w = {COLUMN_W:g}, the largest |dE/db| (maximised, not "
    f"sampled) over the median |dE/db| of the column must be >= {STEEP_RATIO:g}. "
    f"C2 (no-clip runs, one per start): a catapult is a step whose ||delta(w, b)|| >= {JUMP_RATIO:g} x the median "
    f"step before it; it undoes much if the loss right after it minus the best loss before it is >= "
    f"{UNDONE_MUCH:g} x the progress made before it (E0 - best). Supported if catapults that undo much happen on "
    f">= 1/3 of the starts; partly if catapults happen but on fewer starts or undo less; not supported if no start "
    f"has a catapult. C4 (a check: true by construction of norm clipping; norm-1 runs): passed if clipping fired "
    f"and on every step ||delta(w, b)|| <= lr x threshold x (1 + 1e-6) and cos(delta, -raw gradient recomputed at the "
    f"pre-step point) >= 1 - 1e-6; not tested if clipping never fired."
)


def _statement(claim: str) -> str:
    return {
        "C1": "Strongly non-linear objectives have cliffs: products of many large weights give huge gradients.",
        "C2": "One step at a cliff throws the parameters far and can undo much of the progress made.",
        "C4": "Norm clipping rescales the gradient when its norm exceeds a threshold: direction kept, step limited.",
    }[claim]


def _not_tested(claim: str, why: str) -> Verdict:
    return Verdict(claim, _statement(claim), why, "–", "–", "not tested")


def verdict_c1(steepness: pd.DataFrame) -> Verdict:
    """A check, not evidence: the model is built to have a wall; what is measured is how steep, without a grid."""
    if steepness is None or steepness.empty or not steepness.get("verdict_grid", pd.Series(dtype=bool)).any():
        return _not_tested("C1", "no loss-surface measurement")
    row = steepness[steepness.verdict_grid.astype(bool)].iloc[0]
    ratio = float(row["ratio"])
    others = steepness[~steepness.verdict_grid.astype(bool)]
    grids = "; ".join(f"{r['where']}: max {r['max']:.3g} / median {r['median']:.2g} = {r['ratio']:.3g}"
                      for _, r in others.iterrows())
    numbers = (f"{row['where']}: max |dE/db| {row['max']:.4g} at b = {row['b_at_max']:.6f} vs the column's median "
               f"{row['median']:.3g}: ratio {ratio:.3g} (deterministic, no seeds). On grids the wall's height depends "
               f"on where the points fall (it is thinner than any grid): {grids}")
    return Verdict("C1", _statement("C1"), "a check on Pascanu et al.'s one-unit RNN: the steepest slope of E along "
                   f"w = {COLUMN_W:g}, maximised (not sampled), over the median slope", numbers,
                   "Pascanu et al. Fig. 6 'high curvature walls'; docs/sources.md: at w = 5 max |dE/db| -> 5.75e3 at "
                   "b ~ -2.6123 vs a median of ~0.034, ratio ~1.7e5 as the resolution grows",
                   "check passed" if ratio >= STEEP_RATIO else "check failed",
                   finding=f"cliff model: a wall {ratio:.2g} x steeper than the median slope",
                   figure="cliff_surface.png")


def verdict_c2(jumps: pd.DataFrame) -> Verdict:
    none = jumps[jumps["clip"] == "none"] if jumps is not None and not jumps.empty else pd.DataFrame()
    if none.empty:
        return _not_tested("C2", "no run without clipping")
    catapult = none.jump_ratio >= JUMP_RATIO
    much = catapult & (none.progress_undone >= UNDONE_MUCH)
    n = len(none)
    if much.sum() >= CATAPULT_SHARE * n:
        verdict = "supported"
    elif catapult.any():
        verdict = "partly"
    else:
        verdict = "not supported"
    clipped = jumps[jumps["clip"] != "none"]
    cat = none[catapult]
    numbers = (f"no clip, {n} starts: catapults {fmt_rate(int(catapult.sum()), n)}, of which undoing >= "
               f"{UNDONE_MUCH:.0%} of the progress {fmt_rate(int(much.sum()), n)}; catapult size "
               f"{fmt_ci(cat.jump_norm)} vs typical step {fmt_ci(cat.typical_step)} (x {fmt_ci(cat.jump_ratio)}); "
               f"progress undone right after (share of E0 - best) {fmt_ci(cat.progress_undone)}; final loss "
               f"{fmt_ci(cat.loss_final)} vs start {fmt_ci(cat.loss_start)}")
    if len(clipped):
        numbers += (f". norm-1, same starts: largest step {fmt_ci(clipped.jump_norm)}, final loss "
                    f"{fmt_ci(clipped.loss_final)}")
    return Verdict("C2", _statement("C2"), "largest single GD step vs the median step before it, and the loss right "
                   "after it vs the best before it (no clipping, one run per start; deterministic)", numbers,
                   "Goodfellow et al. §8.2.4: a step 'can catapult the parameters very far, possibly losing most of "
                   "the optimization work'; Fig. 10.17: without clipping GD is propelled off the plot", verdict,
                   finding=f"cliff model, no clipping: {int(much.sum())}/{n} starts catapulted and undid >= "
                           f"{UNDONE_MUCH:.0%} of their progress", figure="cliff_jumps.png")


def verdict_c4(jumps: pd.DataFrame) -> Verdict:
    clipped = jumps[jumps["clip"] != "none"] if jumps is not None and not jumps.empty else pd.DataFrame()
    if clipped.empty or clipped.clipped_steps.sum() == 0:
        return _not_tested("C4", "no clipped run, or clipping never fired")
    n = len(clipped)
    bounded = clipped.max_step_norm <= clipped.step_bound * (1 + STEP_TOL)
    aligned = clipped.min_cosine >= 1 - COSINE_TOL
    verdict = "check passed" if bounded.all() and aligned.all() else "check failed"  # true by construction
    fired = int((clipped.clipped_steps > 0).sum())
    numbers = (f"norm-1 runs: step bound lr x threshold = {clipped.step_bound.iloc[0]:.3g}, held on "
               f"{fmt_rate(int(bounded.sum()), n)} runs (largest step {clipped.max_step_norm.max():.6g}); direction "
               f"kept on {fmt_rate(int(aligned.sum()), n)} runs (min cos(step, -raw grad) "
               f"{clipped.min_cosine.min():.9f}, recomputed; logged cosine on clipped steps min "
               f"{clipped.min_cosine_logged_clipped.min():.3g}); "
               f"clipping fired on {fmt_rate(fired, n)} runs, {int(clipped.clipped_steps.sum())} steps in all; raw "
               f"gradient norm up to {clipped.max_grad_norm.max():.3g}")
    return Verdict("C4", _statement("C4"), "size and direction of every clipped GD step, against the raw gradient "
                   "recomputed at the pre-step point", numbers,
                   "Pascanu et al. Algorithm 1: if ||g|| >= threshold, g <- threshold g / ||g||", verdict)


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    jumps = tables.get("jumps")
    return [verdict_c1(tables.get("steepness")), verdict_c2(jumps), verdict_c4(jumps)]
