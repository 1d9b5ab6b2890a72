"""The learning-rate sensitivity experiment's declarations, all fixed before its runs: seeds, the lr grid and where
it comes from, the setups and their arms, the rows (what C5's "less trial and error" compares) and the smallest
effects. A setup is one ``Setup`` line (and its conf/setup/NAME.yaml), an arm one ``Arm`` line (named in the setups
that run it), a row one ``Row`` line.

Where the grids come from. Every grid is lr = the setup's lr (conf/setup/NAME.yaml) x 10^(j/4), quarter-decade steps
j. The declared grid is the CORE quarter-decades either side of the setup's centre, 13 lrs spanning 3 decades; the
centre is the middle of the arms' tuned lrs (``Setup.optima``), so that each lies at least MIN_INSIDE (0.75 decade)
inside it. The runs cover SHIFT more on each side (17 lrs, 4 decades), so that every verdict is computed again on the
grid shifted by -0.5 and +0.5 decade. The tuned lrs are the tuned protocol's choices, results/tuned/choices.csv of
commit 424d258, k half-decades from the setup's lr (j = 2k):

- charlm_lstm: no clip k = -1 (lr 5.06), norm 1 k = 0 (lr 16): j = -2, 0; centre -1, grid 0.28 to 285, runs 0.09 to 900.
- regression_mlp: no clip k = -2 (0.001), norm 1 k = 1 (0.0316): j = -4, 2; centre -1, grid 1.8e-4 to 0.18, runs
  5.6e-5 to 0.56.
- digits_deep_mlp: no clip k = -2 (0.1), norm 1 k = -1 (0.316): j = -4, -2; centre -3, grid 0.0056 to 5.6, runs
  0.0018 to 18.
- charlm_gpt (its tuned protocol rows of this commit, chosen on seeds 0-2 before any run here): no clip k = 0 (lr
  3e-3), norm 1 k = 1 (9.5e-3), the tuned threshold 0.41 also at k = 1: j = 0, 2; centre 1, grid 1.7e-4 to 0.17, runs
  5.3e-5 to 0.53 (peak lrs of the schedule).
"""

from __future__ import annotations

from dataclasses import dataclass

from experiments.tuned.design import SMALLEST as METRIC_SMALLEST

BLOCK = tuple(range(3000, 3010))  # fresh seeds: tuning used 0-2, the tuned protocol's blocks 1000-1009, 2000-2009
EXTRA = ("+experiment=lr_sensitivity",)  # conf/experiment/lr_sensitivity.yaml: settings every run shares
STEP = 0.25  # decades between neighbouring lrs
CORE = 6  # the declared grid: centre +- 6 quarter-decades (13 lrs, 3 decades)
SHIFT = 2  # quarter-decades: the grid is also read shifted by -0.5 and +0.5 decade
SHIFTS = (-SHIFT, 0, SHIFT)
MIN_INSIDE = 3  # quarter-decades: every arm's tuned lr lies at least 0.75 decade inside the declared grid
# Smallest effects worth caring about, fixed before the runs: width in decades; LR sensitivity on its metric's scale
# (the tuned protocol's: bpc 0.05, accuracy 2 points, MSE a ratio of 1.25, i.e. log(1.25) on the ln-MSE scale).
SMALLEST = {"width": 0.5, **{metric: METRIC_SMALLEST[metric] for metric in ("bpc", "accuracy", "mse")}}


@dataclass(frozen=True)
class Arm:
    """What an arm runs besides the setup, the lr and the seed; ``{threshold}`` stands for the setup's tuned
    threshold (an arm that needs it runs only where the setup declares one)."""

    label: str
    overrides: tuple[str, ...]


ARMS = {
    "none": Arm("no clip", ("clip=none",)),
    "norm1": Arm("norm 1", ("clip=norm1",)),
    "norm_tuned": Arm("norm, tuned threshold", ("clip=norm", "clip.threshold={threshold:g}")),
    # B4's model-side remedies (Wortsman et al. 2023), without clipping: on the GPT only (model=gpt's options)
    "qk_norm": Arm("qk-layernorm", ("clip=none", "model.qk_norm=true")),
    "z_loss": Arm("z-loss 1e-4", ("clip=none", "model.z_loss=1e-4")),
}


@dataclass(frozen=True)
class Setup:
    """A setup: its label, its arms, the arms' tuned lrs (quarter-decades from its lr: the grid's source), the
    reference a good lr must end within the smallest effect of (final test metric, fixed before the runs: where it
    comes from is said beside it), and the tuned threshold of arm ``norm_tuned`` (None: not chosen yet, the arm does
    not run)."""

    label: str
    arms: tuple[str, ...]
    optima: tuple[int, ...]
    reference: float
    threshold: float | None = None

    @property
    def centre(self) -> int:
        return (min(self.optima) + max(self.optima)) // 2


# reference: the better median final test metric of tuned no clip and norm 1 on the tuned protocol's deciding seeds
# (results/tuned/decided.csv, block decide; of commit 424d258, the GPT's of this commit, read before any of its runs
# here: no clip 2.626, norm 1 2.503 bpc).
SETUPS = {
    "regression_mlp": Setup("regression MLP", ("none", "norm1"), (-4, 2), 5.135),  # no clip (5.79 norm 1), MSE
    "digits_deep_mlp": Setup("deep MLP", ("none", "norm1"), (-4, -2), 0.908),  # norm 1 (0.901 no clip), accuracy
    "charlm_gpt": Setup("GPT", ("none", "norm1", "norm_tuned", "qk_norm", "z_loss"), (0, 2), 2.503, 0.41),  # norm 1 (2.626 no clip)
    "charlm_lstm": Setup("char LSTM", ("none", "norm1"), (-2, 0), 1.954),  # norm 1 (2.014 no clip), bpc
}


@dataclass(frozen=True)
class Row:
    """One test: arm ``a`` does better than (``superiority``) or as well as (``noninferiority``, within the smallest
    effect) arm ``b`` on ``measure`` (width: the lrs that end good span more decades; sensitivity: Wortsman et al.'s
    LR sensitivity is lower), on ``every`` setup that declares both arms and runs them."""

    claim: str
    label: str
    a: str
    b: str
    measure: str  # width | sensitivity
    kind: str = "superiority"
    quantifier: str = "every"
    only: tuple[str, ...] = ()  # these setups instead (for simulations)

    @property
    def setups(self) -> tuple[str, ...]:
        return self.only or tuple(name for name, s in SETUPS.items() if {self.a, self.b} <= set(s.arms))


ROWS = [
    Row("C5", "clipping widens the range of good lrs", "norm1", "none", "width"),
    Row("C5", "clipping makes the final loss less sensitive to the lr", "norm1", "none", "sensitivity"),
    Row("C5", "a tuned threshold widens the range of good lrs", "norm_tuned", "none", "width"),
    Row("C5", "a tuned threshold makes the final loss less sensitive to the lr", "norm_tuned", "none",
        "sensitivity"),
] + [Row("B4", f"{ARMS[remedy].label} {what} as much as norm 1", remedy, "norm1", measure, "noninferiority")
     for remedy in ("qk_norm", "z_loss") for measure, what in (("width", "widens the range of good lrs"),
                                                             ("sensitivity", "lowers the LR sensitivity"))]


def grid(setup: str, shift: int = 0) -> range:
    """The declared grid of ``setup`` (quarter-decades j from its lr), moved by ``shift`` quarter-decades."""
    centre = SETUPS[setup].centre + shift
    return range(centre - CORE, centre + CORE + 1)


def runs_grid(setup: str) -> range:
    """Every lr the runs cover: the declared grid and SHIFT more on each side."""
    return range(grid(setup, -SHIFT).start, grid(setup, SHIFT).stop)


def overrides(setup: str, arm: str) -> tuple[str, ...] | None:
    """The arm's overrides on ``setup``; None where it needs a tuned threshold the setup does not declare."""
    threshold = SETUPS[setup].threshold
    needs = any("{threshold" in o for o in ARMS[arm].overrides)
    if needs and threshold is None:
        return None
    return tuple(o.format(threshold=threshold) for o in ARMS[arm].overrides)


def lr_scale(j: int) -> str:
    return f"{10 ** (j * STEP):.4g}"


def job(setup: str, arm: str, j: int, seed: int) -> list[str]:
    """One run's overrides (without EXTRA): scored on the test split, at the setup's steps."""
    return [f"setup={setup}", *overrides(setup, arm), f"optim.lr_scale={lr_scale(j)}", f"seed={seed}",
            "task.split=test"]
