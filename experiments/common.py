"""What every experiment module provides, and the helpers they share.

An experiment is one module ``experiments/<NAME>.py`` plus one sweep ``conf/experiment/<NAME>.yaml``
(``# @package _global_``, its runs in ``hydra.sweeper.params``), so ``python run.py -m +experiment=<NAME>`` runs it.
The module defines, before any run is looked at:

- ``NAME``, ``TITLE``, ``CLAIMS`` (e.g. ``("C3", "C5")``) and ``RULE``: the verdict rule in plain words, printed
  under the claims table and never changed after seeing the outcome;
- ``tables(runs, steps) -> dict[str, DataFrame]``: the small summary tables everything else is drawn from, computed
  from the sweep's job files (``runs``/``steps`` as returned by ``gradclip.report.load_runs``); saved as CSV under
  ``results/<NAME>/``;
- ``verdicts(tables) -> list[Verdict]``: one row per claim it tests, from the tables alone;
- ``figures(tables, out_dir) -> list[Figure]``: PNGs drawn from the tables alone, each with a caption that says
  what is plotted, over how many seeds, and what a band or bar means.

``experiments/reproduce.py`` runs the sweeps and builds ``results/REPORT.md`` from these pieces; ``--figures``
rebuilds figures and report from the stored CSVs without training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

VERDICTS = ("supported", "partly", "not supported", "not tested")


@dataclass(frozen=True)
class Verdict:
    claim: str  # "C3"
    statement: str  # the claim in one line
    measured: str  # what was measured, in one line
    numbers: str  # the numbers, with intervals and seed counts
    anchor: str  # the published number or setup beside it (../shared/CLAIMS.md), or "–"
    verdict: str  # one of VERDICTS

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Figure:
    name: str  # file name, e.g. "threshold_final.png"
    caption: str


def median_ci(values, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float, float]:
    """Median and a percentile-bootstrap interval of the median (NaN when there is no finite value)."""
    values = np.asarray(pd.to_numeric(pd.Series(values), errors="coerce"), dtype=float)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return (np.nan, np.nan, np.nan)
    if len(values) == 1:
        return (float(values[0]),) * 3
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(values, size=(n_boot, len(values)), replace=True), axis=1)
    tail = (1 - level) / 2 * 100
    return float(np.median(values)), float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))


def fmt_ci(values, digits: int = 3) -> str:
    """'median [lo, hi] (n=k)' with a 95 % bootstrap interval of the median; '–' when nothing is finite."""
    values = pd.to_numeric(pd.Series(values), errors="coerce")
    n = int(np.isfinite(values).sum())
    mid, lo, hi = median_ci(values)
    if not np.isfinite(mid):
        return "–"
    return f"{mid:.{digits}g} [{lo:.{digits}g}, {hi:.{digits}g}] (n={n})"


def rate_ci(successes: int, n: int, z: float = 1.96) -> tuple[float, float, float]:
    """A proportion with its Wilson 95 % interval."""
    if n == 0:
        return (np.nan, np.nan, np.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return p, max(0.0, centre - half), min(1.0, centre + half)


def fmt_rate(successes: int, n: int) -> str:
    p, lo, hi = rate_ci(successes, n)
    return f"{successes}/{n} ({100 * p:.0f} %, 95 % CI {100 * lo:.0f}–{100 * hi:.0f} %)" if n else "–"
