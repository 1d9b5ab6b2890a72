"""The protocol's figures, drawn from its tables alone: every row's interval per setup with its verdict mark, the
tuning curves per setup, and each arm's test curves on the deciding seeds."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from experiments.common import VERDICT_COLOURS, Figure, save_figure
from experiments.tuned.design import ARMS, LOG_SCALE, REMEDIES, SETUPS, TUNING_SEEDS
from experiments.tuned.rules import A_IMPROVING, A_NOT_BETTER, B_IMPROVING, NOT_BRACKETED, final_rows
from experiments.tuned.stages import SHARES, curve_points
from gradclip.report.figures import EVENTS

BLOCK_STYLE = {"decide": ("o", 0.28), "verify": ("s", 0.0), "pooled": ("D", -0.28)}  # marker, offset
ARM_COLOURS = {"none": "#d55e00", "norm1": "#0072b2", "norm_tuned": "#009e73", "autoclip": "#cc79a7",
               "agc": "#e69f00", "zclip": "#56b4e9", "zclip_nocap": "#000000", "norm1_long": "#0072b2",
               "none_small": "#f0a070", "none_smaller": "#f5c8a8", "none_at_clip_lr": "#8b3a00",
               "qk_norm": "#7b3294", "z_loss": "#999933", "skip_step": "#882255", "spam": "#44aa99",
               "adagc": "#ddaa33", "stableadamw": "#332288"}
SCALE_MAX = 6


def draw(rows: pd.DataFrame, tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    import matplotlib

    matplotlib.use("Agg")
    out_dir.mkdir(parents=True, exist_ok=True)
    shown = rows[(rows.verdict != "not tested") & rows.estimate.notna()].copy()
    final = final_rows(rows).set_index(["row", "setup"])
    caption = ("every row's 95 % interval per setup, in units of its smallest effect (shaded: within it); right of 0 "
               "= in the claim's favour (arm a better); one line per seed block (circle: deciding block, square: "
               "verify block, diamond: both pooled, which decides); the verdict that stands is the coloured box on the "
               "right, with the reason beside it when it also rests on more than the interval (a 'gets stuck' "
               "verdict on the late gains, an arm's best lr not bracketed); arrows: an estimate beyond ±6, drawn at "
               "the edge with its value.")
    made = []
    for claim in dict.fromkeys(shown.claim):
        made.append(Figure(f"tuned_{claim}.png", f"{claim}: {caption}"))
        interval_figure(shown[shown.claim == claim], final, out_dir / made[-1].name)
    made.append(tuning_figure(tables["tuning"], tables["choices"], out_dir))
    made.append(curves_figure(tables["decided"], out_dir))
    if "train_curve" in tables["decided"] and tables["decided"].arm.isin(REMEDIES).any():
        made.append(remedies_figure(tables["decided"], out_dir))
    return made


def reason(row) -> str:
    """The part of a row's note that decided its verdict besides the interval, short and with the arm's label
    ("no clip at 0.03 x its lr still improving")."""
    if NOT_BRACKETED in str(row.note):
        return NOT_BRACKETED
    found = [text for text in (A_IMPROVING, A_NOT_BETTER, B_IMPROVING) if text in str(row.note)]
    if not found:
        return ""
    side, words = found[0].split(":")[0].split(" ", 1)
    return f"{ARMS[row.a if side == 'a' else row.b].label} {words}"


def interval_figure(shown: pd.DataFrame, final: pd.DataFrame, path: Path) -> None:
    import textwrap

    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(zip(shown.row, shown.setup)))
    labels = [textwrap.fill(f"{row} | {SETUPS[s].label}", 52) for row, s in keys]
    fig, ax = plt.subplots(figsize=(11, sum(0.42 + 0.17 * label.count("\n") for label in labels) + 1.8))
    edge = SCALE_MAX - 0.15
    for r in shown.itertuples():
        y = keys.index((r.row, r.setup))
        marker, offset = BLOCK_STYLE.get(r.block, ("o", 0.0))
        low, high, mid = (np.clip(v / r.smallest, -edge, edge) for v in (r.low, r.high, r.estimate))
        colour = "#000000" if r.block == "pooled" else "#777777"
        ax.plot([low, high], [y + offset] * 2, color=colour, lw=2.5 if r.block == "pooled" else 1.5)
        off = abs(r.estimate / r.smallest) > SCALE_MAX
        ax.plot(mid, y + offset, ("<" if mid < 0 else ">") if off else marker, color=colour, ms=7 if off else 5)
        if off:  # the estimate itself, beside its arrow
            ax.annotate(f"{r.estimate / r.smallest:.0f}", (mid, y + offset), xytext=(-8 if mid > 0 else 8, 0),
                        textcoords="offset points", ha="right" if mid > 0 else "left", va="center", fontsize=7,
                        color=colour, bbox={"boxstyle": "square,pad=0.1", "fc": "#ffffff", "ec": "none"})
    for y, key in enumerate(keys):
        word = final.verdict.get(key, "undecided")
        badge = ax.annotate(word, (1, y), xycoords=("axes fraction", "data"), xytext=(8, 0),
                            textcoords="offset points", va="center", fontsize=9, annotation_clip=False,
                            bbox={"boxstyle": "round,pad=0.25", "fc": VERDICT_COLOURS[word][0], "ec": "none"},
                            color="#ffffff" if VERDICT_COLOURS[word][1] else "#000000")
        if key in final.index and (why := reason(final.loc[key])):
            ax.annotate(why, (1, 0.5), xycoords=badge, xytext=(6, 0), textcoords="offset points", va="center",
                        fontsize=8.5, color="0.3", annotation_clip=False)
    ax.axvspan(-1, 1, color="0.9", zorder=0)
    ax.axvline(0, color="0.3", lw=1)
    ax.set_yticks(range(len(keys)), labels, fontsize=9.5)
    ax.set_ylim(len(keys) - 0.5, -0.5)
    ax.set_xlim(-SCALE_MAX, SCALE_MAX)
    ax.set_xlabel("effect in the claim's favour (arm a better), in smallest effects", fontsize=10)
    save_figure(fig, path, grow=True)


def panels(setups: list[str], height: float, columns: int = 3):
    """A figure with one panel per setup, ``columns`` to a row (the grid follows the number of setups)."""
    import matplotlib.pyplot as plt

    cols = min(columns, len(setups))
    fig, axes = plt.subplots(math.ceil(len(setups) / cols), cols, figsize=(5.2 * cols, height * math.ceil(
        len(setups) / cols)), squeeze=False)
    for ax in axes.flat[len(setups):]:
        ax.set_visible(False)
    return fig, list(zip(axes.flat, setups))


def tuning_figure(tuning: pd.DataFrame, choices: pd.DataFrame, out_dir: Path) -> Figure:
    """Median validation metric against lr per arm, one panel per setup (as many panels as setups)."""
    import matplotlib.pyplot as plt
    import matplotlib.ticker as ticker

    fig, grid = panels([s for s in SETUPS if s in set(tuning.setup)], 4.4)
    for ax, setup in grid:
        part = tuning[tuning.setup == setup]
        metric, higher = part.metric.iloc[0], bool(part.higher.iloc[0])
        bad = []
        chosen = choices[choices.setup == setup]
        for i, c in enumerate(chosen.itertuples()):
            line = part[part.config == c.config].groupby("k").agg(
                value=("final", "median"), diverged=("diverged", "sum"), lr=("lr", "first")).reset_index()
            ok = line[line.diverged == 0]
            colour = ARM_COLOURS[c.arm]
            ax.plot(ok.lr * (1 + 0.03 * i), ok.value, marker="o", ms=4, lw=1.3, color=colour, label=ARMS[c.arm].label)
            bad += [(lr * (1 + 0.03 * i), colour) for lr in line[line.diverged > 0].lr]
            pick = line[line.k == c.k]
            ax.plot(pick.lr * (1 + 0.03 * i), pick.value, "o", ms=11, mfc="none", color=colour)
        edge = ax.get_ylim()[0 if higher else 1]
        for lr, colour in bad:
            ax.plot(lr, edge, "x", color=colour, ms=7, mew=2, clip_on=False)
        ax.set_xscale("log")
        ax.set_xticks(sorted(part.lr.unique()))
        ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.tick_params(labelsize=9)
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        ax.set(title=SETUPS[setup].label, xlabel="learning rate (log)",
               ylabel=f"median validation {metric} ({'higher' if higher else 'lower'} is better)")
    handles = {ARMS[a].label: plt.Line2D([], [], color=ARM_COLOURS[a], marker="o", lw=1.3)
               for a in dict.fromkeys(choices.arm)}
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=min(7, len(handles)), fontsize=10,
               frameon=False, bbox_to_anchor=(0.5, -0.01))
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    path = out_dir / "tuned_tuning.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Figure(path.name, claim="C5", caption=f"Tuning: median final validation metric over {len(TUNING_SEEDS)} "
                  "seeds per lr, for each arm's chosen configuration (arms drawn a little apart so that equal values stay visible); x = "
                  "at least one seed diverged at that lr (drawn at the worse edge); ring = the chosen lr.")


def curves_figure(decided: pd.DataFrame, out_dir: Path) -> Figure:
    """Each tuned arm's test curve per setup: median and the range between the 25th and 75th percentiles over the
    deciding seeds; x where a run diverged (its last evaluation)."""
    main = decided[decided.arm.isin(["none", "norm1", "norm_tuned"]) & (decided.same_as.fillna("") == "")]
    fig, grid = panels([s for s in SETUPS if s in set(main.setup)], 4.0)
    for ax, setup in grid:
        part = main[main.setup == setup]
        metric, higher = part.metric.iloc[0], bool(part.higher.iloc[0])
        for arm, runs in part.groupby("arm", sort=False):
            curves = pd.DataFrame([dict(curve_points(c)) for c in runs.curve]).T.sort_index()
            ok = curves.loc[:, ~runs.diverged.to_numpy()]
            if ok.shape[1]:
                ax.plot(ok.index, ok.median(axis=1), color=ARM_COLOURS[arm], lw=1.6,
                        label=f"{ARMS[arm].label} ({ok.shape[1]} runs)")
                ax.fill_between(ok.index, ok.quantile(0.25, axis=1), ok.quantile(0.75, axis=1),
                                color=ARM_COLOURS[arm], alpha=0.2, lw=0)
            for column in curves.columns[runs.diverged.to_numpy()]:
                last = curves[column].dropna()
                ax.plot(last.index[-1], last.iloc[-1], "x", color=ARM_COLOURS[arm], ms=7, mew=2)
        if metric in LOG_SCALE:
            ax.set_yscale("log")
        ax.set(title=SETUPS[setup].label, xlabel="step",
               ylabel=f"test {metric}{' (log axis)' if metric in LOG_SCALE else ''}, "
                      f"{'higher' if higher else 'lower'} is better")
        ax.legend(fontsize=9)
    save_figure(fig, out_dir / "tuned_curves.png")
    return Figure("tuned_curves.png", claim="C7", caption="Training curves of the tuned arms on the deciding seeds: "
                  "held-out test metric per evaluation, median (line) and 25th-75th percentile band over the runs that did not diverge; x = "
                  "a diverged run's last evaluation. Arms that share their runs with another are drawn once. The "
                  "runs' own files (metrics.csv per step, summary.json) are under results/runs/tuned/<stage>/ after make "
                  "reproduce; a single run with its W&B page: python run.py setup=<setup> clip=<clip> (logger=wandb, "
                  "offline).")


SHARE_WORDS = {"tensor_clip_share": "tensors clipped", "spike_clipped_share": "entries spike-clipped",
               "update_rms": "largest update RMS", "update_clipped_share": "tensors with lowered lr"}


def remedies_figure(decided: pd.DataFrame, out_dir: Path) -> Figure:
    """B3's setups: per arm, each deciding run's training loss (binned) with a mark at every step its remedy skipped
    or reset the moments, the median over runs, and the remedy's own diagnostics (median over runs) in the title."""
    import matplotlib.pyplot as plt

    runs = decided[decided.setup.isin(decided[decided.arm.isin(REMEDIES)].setup)]
    keys = list(dict.fromkeys(zip(runs.setup, runs.arm)))
    fig, axes = plt.subplots(len(keys), 1, figsize=(10, 2.6 * len(keys)), squeeze=False, sharex=True, sharey=True)
    seen: set[str] = set()
    for ax, (setup, arm) in zip(axes.flat, keys):
        mine = runs[(runs.setup == setup) & (runs.arm == arm)]
        curves = pd.DataFrame([dict(curve_points(c)) for c in mine.train_curve.fillna("")]).T.sort_index()
        colour = ARM_COLOURS[arm]
        ax.plot(curves.index, curves.to_numpy(), color=colour, lw=0.6, alpha=0.35)
        ax.plot(curves.index, curves.median(axis=1), color=colour, lw=2, label="median over runs")
        counts = {}
        for column, r in zip(curves.columns, mine.itertuples()):
            line = curves[column].dropna()
            for word in str(r.events if isinstance(r.events, str) else "").split():
                step, event = word.split(":")
                near = line.index[np.abs(line.index - int(step)).argmin()]
                marker = EVENTS[event][0]
                ax.plot(int(step), line[near], marker, color="k", ms=6, mfc="none", mew=1)
                counts[event] = counts.get(event, 0) + 1
                seen.add(event)
        notes = [f"{EVENTS[e][2]}: {n} times in {len(mine)} runs" for e, n in counts.items()]
        notes += [f"{SHARE_WORDS[s]} {mine[s].median():.3g}" for s in SHARES if s in mine and mine[s].notna().any()]
        ax.set_title(f"{SETUPS[setup].label} · {ARMS[arm].label} (lr {mine.lr.iloc[0]:.3g}, "
                     f"{int(mine.diverged.sum())}/{len(mine)} diverged)" + (f"\n{'; '.join(notes)}" if notes else ""),
                     fontsize=9, loc="left")
        ax.set_ylabel("training loss")
    axes.flat[-1].set_xlabel("step")
    handles = [plt.Line2D([], [], ls="", marker=m, color="k", mfc="none", label=words)
               for event, (m, _, words) in EVENTS.items() if event in seen]
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, fontsize=9)
    save_figure(fig, out_dir / "tuned_B3_curves.png", rect=(0, 0.35 / fig.get_figheight(), 1, 1))
    return Figure("tuned_B3_curves.png", claim="B3", caption=(
        "B3: each arm's training loss on the deciding seeds of both blocks (thin: one run, averaged over 50 bins of "
        "steps; thick: the median; one y axis for all), at its tuned lr; a mark wherever the remedy skipped a step or "
        "reset the optimizer's moments; the "
        "remedy's own per-step diagnostics (median over runs of each run's mean) above each panel."))
