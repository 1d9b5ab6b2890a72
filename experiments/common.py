"""What every experiment module provides, and the helpers they share.

An experiment is one module ``experiments/<NAME>.py`` plus one sweep ``conf/experiment/<NAME>.yaml``
(``# @package _global_``, its runs in ``hydra.sweeper.params``), so ``python run.py -m +experiment=<NAME>`` runs it;
``experiments/reproduce.py`` finds it on disk (docs/extending.md). The module defines, before any run is looked at:

- ``NAME``, ``TITLE``, ``CLAIMS`` (e.g. ``("C3", "C5")``) and ``RULE``: the verdict rule in plain words, printed
  under the claims table and never changed after seeing the outcome;
- ``tables(runs, steps) -> dict[str, DataFrame]``: the small summary tables everything else is drawn from, computed
  from the sweep's job files (``runs``: one row per typed ``RunSummary``, ``steps``: the metric rows, as
  ``gradclip.report.load_runs`` returns them); saved as CSV under
  ``results/<NAME>/``;
- ``verdicts(tables) -> list[Verdict]``: one row per claim it tests, from the tables alone;
- ``figures(tables, out_dir) -> list[Figure]``: PNGs drawn from the tables alone, each with a caption that says
  what is plotted, over how many seeds, and what a band or bar means.

``experiments/reproduce.py`` runs the sweeps and builds ``results/REPORT.md`` from these pieces; ``--figures``
rebuilds figures and report from the stored CSVs without training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import pandas as pd

# The protocol's words (experiments/tuned.py, gradclip.stats), the descriptive experiments' words, and checks.
VERDICTS = ("supported", "contradicted", "no detectable effect", "undecided", "setup-dependent", "partly", "mixed",
            "not supported", "not tested", "check passed", "check failed")
# One colour per verdict word, for badges and figure marks alike: (background, text is white).
VERDICT_COLOURS = {"supported": ("#1a7f37", True), "contradicted": ("#b42318", True),
                   "no detectable effect": ("#6e7781", True), "undecided": ("#d0d7de", False),
                   "setup-dependent": ("#8250df", True), "partly": ("#9be9a8", False), "mixed": ("#bf8700", False),
                   "not supported": ("#ff8182", False), "not tested": ("#eeeeee", False),
                   "check passed": ("#ddf4ff", False), "check failed": ("#ff8182", False)}


@dataclass(frozen=True)
class Verdict:
    claim: str  # "C3"
    statement: str  # the claim in one line
    measured: str  # what was measured, in one line
    numbers: str  # the numbers, with intervals and seed counts
    anchor: str  # the published number or setup beside it (docs/sources.md), or "–"
    verdict: str  # one of VERDICTS
    finding: str = ""  # the result in one line, for the report's summary (default: what was measured)
    figure: str = ""  # the figure that shows it best (a file name of the experiment's figures), if any
    table: Optional[pd.DataFrame] = field(default=None, compare=False)  # a compact table for the claim's card

    def __post_init__(self):
        if self.verdict not in VERDICTS:
            raise ValueError(f"verdict {self.verdict!r} is not one of {VERDICTS}")


@dataclass(frozen=True)
class Figure:
    name: str  # file name, e.g. "threshold_final.png"
    caption: str
    claim: str = ""  # the claim card it belongs in (default: the card of a verdict naming it, else the experiment's
    # first claim)


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


# ---- comparing outcomes: one definition of "as good as" for every experiment
# "As good as the best": per metric, a relative band for lower-is-better metrics, absolute points for accuracy.
# bpc has a floor (the text's entropy), so relative gaps are compressed: 5 % (~0.11 bpc at 2.2, about the seed
# spread of norm-1 runs in the calibration); MSE is unbounded and noisy across seeds: 10 %; accuracy: 2 points.
TOLERANCE = {"bpc": ("relative", 0.05), "mse": ("relative", 0.10), "accuracy": ("absolute", 0.02)}
DEFAULT_TOLERANCE = ("relative", 0.10)
TOLERANCE_WORDS = ("A is as good as B when A <= 1.05 x B for bpc, A <= 1.10 x B for MSE, A >= B - 0.02 for "
                   "accuracy (other metrics: 10 % relative)")

def worst(higher_is_better: bool) -> float:
    return -math.inf if higher_is_better else math.inf


def scores(runs: pd.DataFrame) -> pd.Series:
    """Final metric of a run, or the worst possible value when it diverged or ended non-finite."""
    final = pd.to_numeric(runs.final_metric, errors="coerce").astype(float)
    higher = runs.higher_is_better.astype(bool)
    bad = runs.diverged.astype(bool) | ~np.isfinite(final)
    return final.where(~bad, higher.map(worst))


def near_best(value: float, best: float, metric: str, higher_is_better: bool) -> bool:
    """Whether ``value`` is as good as ``best`` within the metric's tolerance (TOLERANCE)."""
    if not (np.isfinite(value) and np.isfinite(best)):  # a diverged (worst) score: plain comparison
        return bool(value >= best) if higher_is_better else bool(value <= best)
    kind, amount = TOLERANCE.get(metric, DEFAULT_TOLERANCE)
    if higher_is_better:
        limit = best - amount if kind == "absolute" else best - amount * abs(best)
        return bool(value >= limit - 1e-12)
    limit = best + amount if kind == "absolute" else best + amount * abs(best)
    return bool(value <= limit + 1e-12)


def gap_text(value: float, best: float, metric: str, higher_is_better: bool) -> str:
    if not (np.isfinite(value) and np.isfinite(best)):
        return "diverged" if not np.isfinite(value) else "–"
    kind, _ = TOLERANCE.get(metric, DEFAULT_TOLERANCE)
    if kind == "absolute":
        return f"{100 * (value - best):+.1f} points"
    return f"{100 * (value - best) / abs(best):+.1f} %" if best else "–"


def log_y(ax) -> None:
    """Log y axis with plain tick labels (2, 5, 10 ... not 2x10^0)."""
    import matplotlib.ticker as ticker

    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(ticker.FuncFormatter(
        lambda v, _: f"{v:g}" if v > 0 and f"{v:.0e}"[0] in "25" else ""))


def metric_axis_label(metric: str, higher: bool) -> str:
    unit = {"bpc": "bits/char", "mse": "squared target units", "accuracy": "fraction correct"}.get(metric, "")
    return f"final held-out {metric}{f' ({unit})' if unit else ''}\n{'higher' if higher else 'lower'} is better"


def save_figure(fig, path, rect=(0, 0, 1, 1), grow: bool = False) -> None:
    """Every experiment figure is written the same way: tight layout (within ``rect``, leaving room for a legend
    outside it), 110 dpi, then closed. ``grow``: the image grows to hold text drawn outside the axes."""
    import matplotlib.pyplot as plt

    fig.tight_layout(rect=rect)
    fig.savefig(path, dpi=110, bbox_inches="tight" if grow else None)
    plt.close(fig)


def setup_label(run: pd.Series) -> str:
    """A run's setup name (conf/setup/), or its task when it ran without one."""
    name = run.get("setup_name")
    return str(name) if isinstance(name, str) and name != "custom" else str(run.get("task"))
