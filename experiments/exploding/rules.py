"""The rule, fixed before the runs, and the verdicts on C1 (sudden gradient spikes per setup) and C2 (the held-out
progress a spike episode undid)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.common import Verdict, fmt_ci, fmt_rate
from experiments.exploding.runs import SUDDEN, TAIL, WINDOW

# Fixed before the runs.
UNDONE_MUCH = 0.5  # an episode undoes much: it gives back >= half of the progress made before it

RULE = (
    f"A sudden spike is a step whose pre-clip gradient norm is >= {SUDDEN:g} x the smallest of the up to {WINDOW} "
    f"steps before it and >= {SUDDEN:g} x the run's median (or non-finite). C1: a setup shows cliffs if more than "
    f"half of its seeds have a sudden spike; supported if every setup tested shows cliffs, partly if some do, not "
    f"supported if none. C2: spike steps (sudden spike, norm > {TAIL:g} x the run's median, or loss spike) "
    f"between two evaluations form an episode; it undoes "
    f"much if the held-out metric at the first evaluation after it is worse than the best before it by >= "
    f"{UNDONE_MUCH:g} x the progress made so far (progress counts once >= 5 % of the initial metric; divergence "
    f"there = all of it); only episodes with a gradient spike count. Supported if in at least one setup "
    f"more than half of the seeds have such an episode; partly if some run has one but no setup on most seeds; "
    f"not supported if episodes after progress exist but none undoes that much; not tested if none exist."
)

STATEMENTS = {
    "C1": "Strongly non-linear objectives (RNNs, deep nets) have cliffs: products of many large weights give huge "
          "gradients.",
    "C2": "One step at a cliff throws the parameters far and can undo much of the progress made.",
}


def verdict_c1(runs: pd.DataFrame | None) -> Verdict:
    if runs is None or runs.empty:
        return Verdict("C1", STATEMENTS["C1"], "no runs", "–", "–", "not tested")
    parts, shows = [], []
    for setup, r in runs.groupby("setup", sort=False):
        has = int((r.sudden_spikes > 0).sum())
        cliff = has > len(r) / 2
        shows.append(cliff)
        parts.append(f"{setup}: sudden spikes on {fmt_rate(has, len(r))} seeds (after the first 10 % of steps: "
                     f"{int((r.sudden_spikes_after_10pct > 0).sum())}/{len(r)}), max/median {fmt_ci(r.max_over_median)}"
                     f" (max at step {', '.join(str(int(v)) for v in r.max_at_step.dropna())}), share of steps > "
                     f"{TAIL:g}x median {fmt_ci(100 * r.share_above_tail)} %, diverged "
                     f"{int(r.diverged.sum())}/{len(r)} -> {'cliffs' if cliff else 'no cliffs'}")
    verdict = "supported" if all(shows) else "partly" if any(shows) else "not supported"
    return Verdict("C1", STATEMENTS["C1"], "sudden spikes of the pre-clip gradient norm (a tenfold rise within 5 "
                   "steps to >= 10 x the run's median) and its tail, per setup, no clipping, each setup's own lr",
                   "; ".join(parts),
                   "Pascanu et al. 2013 Fig. 6, Goodfellow et al. §8.2.4 (mechanism, no rate given); docs/sources.md: "
                   "a "
                   "1x128 char-LSTM with plain SGD has a median gradient norm of ~0.2-0.3 and diverges within a few "
                   "steps at lr 32 without clipping; a transformer log: the norm stayed < 1 (clipping never fired)",
                   verdict, figure="exploding_traces.png",
                   finding="real networks without clipping: sudden gradient spikes on most seeds of "
                           + ", ".join(s for s, shown in zip(runs.setup.unique(), shows) if shown) + "; not on "
                           + (", ".join(s for s, shown in zip(runs.setup.unique(), shows) if not shown) or "none"))


def verdict_c2(episodes: pd.DataFrame | None, runs: pd.DataFrame | None) -> Verdict:
    if episodes is None or runs is None or runs.empty:
        return Verdict("C2", STATEMENTS["C2"], "no runs", "–", "–", "not tested")
    after_progress = episodes[counts_for_c2(episodes)] if len(episodes) else episodes
    if len(after_progress) == 0:
        return Verdict("C2", STATEMENTS["C2"], "held-out metric after spike episodes", "no gradient-spike episode "
                       f"after any progress ({len(episodes)} episodes in all); divergences "
                       f"{int(runs.diverged.sum())}/{len(runs)} runs", "–", "not tested")
    share = pd.to_numeric(after_progress.undone_share, errors="coerce")
    much = after_progress[share >= UNDONE_MUCH]
    parts, majority = [], []
    for setup, r in runs.groupby("setup", sort=False):
        e = after_progress[after_progress.setup == setup]
        m = much[much.setup == setup]
        seeds = m.seed.nunique()
        majority.append(seeds > len(r) / 2)
        finite = pd.to_numeric(e.undone_share, errors="coerce")
        parts.append(f"{setup}: {len(e)} gradient-spike episodes after progress on {e.seed.nunique()}/{len(r)} seeds "
                     f"({int((episodes.setup == setup).sum())} episodes in all), undoing "
                     f">= {UNDONE_MUCH:.0%} on {fmt_rate(seeds, len(r))} seeds ({len(m)} episodes, "
                     f"{int(m.diverged_here.astype(bool).sum())} of them divergences); share undone "
                     f"{fmt_ci(finite[np.isfinite(finite)])}; training-loss share undone "
                     f"{fmt_ci(pd.to_numeric(e.train_undone_share, errors='coerce').replace(np.inf, np.nan))}; "
                     f"diverged runs {int(r.diverged.sum())}/{len(r)}")
    verdict = "supported" if any(majority) else "partly" if len(much) else "not supported"
    return Verdict("C2", STATEMENTS["C2"], "held-out metric at the first evaluation after a spike episode vs the "
                   "best before it, as a share of the progress made so far (no clipping, per setup over seeds)",
                   "; ".join(parts), "Goodfellow et al. §8.2.4: 'possibly losing most of the optimization work' "
                   "(no rate given); README calibration: charlm at lr 16 no-clip diverged 2/5 within 6 steps", verdict,
                   finding=f"real networks without clipping: a spike that undid >= {UNDONE_MUCH:.0%} of the progress "
                           f"on {much.seed.nunique()} of {len(runs)} runs; divergences {int(runs.diverged.sum())}/"
                           f"{len(runs)}")


def counts_for_c2(episodes: pd.DataFrame) -> pd.Series:
    """Episodes that count for C2: a gradient spike in them, and real progress before them."""
    grad = episodes.grad_spike.astype(str).str.lower().isin(["true", "1", "1.0"])
    return grad & (pd.to_numeric(episodes.progress, errors="coerce") > 0)


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    runs = tables.get("runs")
    return [verdict_c1(runs), verdict_c2(tables.get("episodes"), runs)]
