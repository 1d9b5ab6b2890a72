"""The experiment's figures, drawn from its tables alone: final test metric against lr per arm (as Wortsman et al.
2023, Fig. 1), the share of steps clipped against lr, and where runs spike after warm-up, one panel per setup."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import Figure, save_figure
from experiments.lr_sensitivity.design import ARMS, BLOCK, SETUPS, SMALLEST, STEP, grid
from experiments.tuned.design import LOG_SCALE
from experiments.tuned.plots import ARM_COLOURS, panels

NUDGE = 10 ** (STEP / 8)  # arms drawn a little apart along the lr axis, so that equal values stay visible


def draw(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [loss_figure(tables["runs"], out_dir), clipped_figure(tables["clipped"], out_dir),
            spikes_figure(tables["clipped"], out_dir)]


def log_lr_axis(ax, part: pd.DataFrame, setup: str) -> None:
    """Log lr axis, the declared grid left white and the lrs run only for the shifted grids shaded."""
    lrs = part.drop_duplicates("j").set_index("j").lr.sort_index()
    declared = grid(setup)
    for j, lr in lrs.items():
        if j not in declared:
            ax.axvspan(lr / 10 ** (STEP / 2), lr * 10 ** (STEP / 2), color="0.93", lw=0, zorder=0)
    ax.set_xscale("log")
    ax.set_xlim(lrs.iloc[0] / 10 ** (STEP / 2), lrs.iloc[-1] * 10 ** (STEP / 2))
    ax.set_xlabel("peak learning rate (log axis)" if setup == "charlm_gpt" else "learning rate (log axis)")


def legend(fig, table: pd.DataFrame) -> tuple[float, ...]:
    """One legend for every panel, below them; the panels' room (``save_figure``'s rect) above it."""
    import matplotlib.pyplot as plt

    arms = list(dict.fromkeys(table.arm))
    fig.legend([plt.Line2D([], [], color=ARM_COLOURS[a], marker="o", lw=1.5) for a in arms],
               [ARMS[a].label for a in arms], loc="lower center", ncol=len(arms), frameon=False, fontsize=10)
    return 0, 0.35 / fig.get_figheight(), 1, 1


def loss_figure(runs: pd.DataFrame, out_dir: Path) -> Figure:
    """Per setup: final test metric against lr per arm, median and 25th-75th percentile band over the seeds, a
    diverged run counted at its untrained value (dashed line); x and the count where runs diverged; the reference
    and its smallest effect (dotted line, band)."""
    import matplotlib.pyplot as plt

    fig, grid_ = panels([s for s in SETUPS if s in set(runs.setup)], 4.2, columns=2)
    for ax, setup in grid_:
        part = runs[runs.setup == setup]
        metric, higher = part.metric.iloc[0], bool(part.higher.iloc[0])
        untrained = float(part.start.median())
        for i, (arm, mine) in enumerate(part.groupby("arm", sort=False)):
            value = mine.final.where(~mine.diverged, mine.start)
            value = np.minimum(value, mine.start) if not higher else np.maximum(value, mine.start)
            by = value.groupby(mine.j)
            lr = mine.groupby("j").lr.first() * NUDGE ** (i - 0.5)
            colour = ARM_COLOURS[arm]
            ax.plot(lr, by.median(), color=colour, marker="o", ms=3.5, lw=1.5, label=ARMS[arm].label)
            ax.fill_between(lr, by.quantile(0.25), by.quantile(0.75), color=colour, alpha=0.2, lw=0)
            diverged = mine.groupby("j").diverged.sum()
            for j in diverged.index[diverged > 0]:
                ax.plot(lr[j], untrained, "x", color=colour, ms=7, mew=2)
                ax.annotate(str(int(diverged[j])), (lr[j], untrained), textcoords="offset points",
                            xytext=(0, 6 if i == 0 else -12), ha="center", fontsize=7, color=colour)
        ax.axhline(untrained, color="0.4", ls="--", lw=1)
        reference, smallest = SETUPS[setup].reference, SMALLEST[metric]
        if np.isfinite(reference):
            worst = reference * np.exp(smallest) if metric in LOG_SCALE else (
                reference - smallest if higher else reference + smallest)
            ax.axhline(reference, color="0.2", ls=":", lw=1)
            ax.axhspan(min(reference, worst), max(reference, worst), color="#009e73", alpha=0.12, lw=0)
        log_lr_axis(ax, part, setup)
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        ax.set(title=SETUPS[setup].label, ylabel=f"final test {metric}{' (log axis)' if metric in LOG_SCALE else ''}"
               f", {'higher' if higher else 'lower'} is better")
    save_figure(fig, out_dir / "lr_sensitivity.png", rect=legend(fig, runs))
    return Figure("lr_sensitivity.png", claim="C5", caption=(
        f"Final test metric against the learning rate (log axis), per arm: median (line) and 25th-75th percentile "
        f"band over {len(BLOCK)} seeds, a diverged run counted at its untrained value L0 (dashed line) as LR "
        "sensitivity counts it; x = runs diverged at that lr (how many beside it). Dotted line and green band: the "
        "setup's reference and the smallest effect below it (an lr ending in the band or better counts towards the "
        "width). White: the declared grid; shaded: the lrs run for the grids shifted by ±0.5 decade."))


def per_lr_figure(clipped: pd.DataFrame, out_dir: Path, name: str, ylabel: str, draw_arm) -> None:
    """One panel per setup, lr on a log axis, ``draw_arm(ax, lr, rows)`` for each arm (drawn a little apart), one
    legend below: saved as ``name``."""
    fig, grid_ = panels([s for s in SETUPS if s in set(clipped.setup)], 3.6, columns=4)
    for ax, setup in grid_:
        part = clipped[clipped.setup == setup]
        for i, (arm, mine) in enumerate(part.groupby("arm", sort=False)):
            draw_arm(ax, mine.lr * NUDGE ** (i - 0.5), mine, ARM_COLOURS[arm])
        log_lr_axis(ax, part, setup)
        ax.set(title=SETUPS[setup].label, ylabel=ylabel, ylim=(-3, 103))
    save_figure(fig, out_dir / name, rect=legend(fig, clipped))


def clipped_figure(clipped: pd.DataFrame, out_dir: Path) -> Figure:
    """Per setup: the median share of steps clipped against lr per arm, with its range over the seeds."""
    def draw_arm(ax, lr, mine, colour):
        ax.plot(lr, 100 * mine["median"], color=colour, marker="o", ms=3.5, lw=1.5)
        ax.fill_between(lr, 100 * mine.low, 100 * mine.high, color=colour, alpha=0.2, lw=0)

    per_lr_figure(clipped, out_dir, "lr_sensitivity_clipped.png", "steps clipped (%)", draw_arm)
    return Figure("lr_sensitivity_clipped.png", claim="C5", caption=(
        f"Share of steps whose gradient was clipped against the learning rate (log axis), per arm: median (line) and "
        f"range (band) over {len(BLOCK)} seeds; a diverged run's share of the steps it ran. No clip never clips "
        "(0 %). White: the declared grid; shaded: the lrs run for the shifted grids."))


def spikes_figure(clipped: pd.DataFrame, out_dir: Path) -> Figure:
    """Per setup: of the seeds that did not diverge at an lr, the share with a loss spike after warm-up (solid) and
    with a gradient-norm spike (dashed), per arm."""
    from experiments.lr_sensitivity.rules import NORM_WINDOW, NORM_Z, SPIKE_FACTOR, SPIKE_WINDOW, WARMUP_SHARE

    def draw_arm(ax, lr, mine, colour):
        alive = (mine.seeds - mine.diverged).where(lambda n: n > 0)
        ax.plot(lr, 100 * mine.seeds_loss_spiked / alive, color=colour, marker="o", ms=3.5, lw=1.5)
        ax.plot(lr, 100 * mine.seeds_norm_spiked / alive, color=colour, marker="^", ms=3.5, lw=1, ls="--")

    per_lr_figure(clipped, out_dir, "lr_sensitivity_spikes.png",
                  "seeds spiking after warm-up (%)\nsolid: loss, dashed: gradient norm", draw_arm)
    return Figure("lr_sensitivity_spikes.png", claim="C5", caption=(
        f"Where training spikes after warm-up (its first {WARMUP_SHARE:.0%} of steps), against the learning rate (log "
        f"axis), per arm: of the seeds that did not diverge at that lr, the share with at least one loss spike (solid, "
        f"circles: loss above the median of the {SPIKE_WINDOW} before it by {SPIKE_FACTOR:g} robust SDs) and with at "
        f"least one gradient-norm spike (dashed, triangles: pre-clip norm more than {NORM_Z:g} SDs from the mean of "
        f"up to {NORM_WINDOW} before it, OLMo-core's skip-step rule). No point where every seed diverged."))
