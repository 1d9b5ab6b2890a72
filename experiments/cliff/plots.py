"""The figures: the loss surface with the illustrated start's trajectories, and per start the largest step and where
each run ended."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402

from experiments.cliff.runs import show_start  # noqa: E402
from experiments.common import Figure, save_figure  # noqa: E402

STYLE = {"none": dict(color="black", ls="-", marker="o"), "norm 1": dict(color="#e69f00", ls="--", marker="^")}


def _style(clip: str) -> dict:
    return STYLE.get(clip, dict(color="#56b4e9", ls=":", marker="s"))


def figures(tables: dict[str, pd.DataFrame], out_dir: Path) -> list[Figure]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    surface, trajectory, jumps = tables.get("surface"), tables.get("trajectory"), tables.get("jumps")
    result = []
    if surface is not None and not surface.empty:
        result.append(_surface_figure(surface, tables.get("surface_zoom"), trajectory, jumps,
                                      out_dir / "cliff_surface.png"))
    if jumps is not None and not jumps.empty:
        result.append(_jumps_figure(jumps, out_dir / "cliff_jumps.png"))
    return result


def _draw_surface(ax, surface: pd.DataFrame):
    pivot = surface.pivot(index="b", columns="w", values="loss")
    loss = np.clip(pivot.to_numpy(), 1e-6, None)
    mesh = ax.pcolormesh(pivot.columns, pivot.index, loss, norm=LogNorm(vmin=1e-6, vmax=0.5), cmap="viridis",
                         shading="auto")
    ax.contour(pivot.columns, pivot.index, np.log10(loss), levels=[-4, -3, -2, -1], colors="white", linewidths=0.5)
    return mesh


def _draw_paths(ax, trajectory: pd.DataFrame, start: str, surface: pd.DataFrame, annotate: bool):
    w_lim, b_lim = (surface.w.min(), surface.w.max()), (surface.b.min(), surface.b.max())
    notes = 0
    part = trajectory[trajectory.start == start]
    for clip, t in part.groupby("clip", sort=False):
        st = _style(clip)
        t = t.sort_values("step")
        ax.plot(t.w, t.b, color=st["color"], ls=st["ls"], lw=1.2, marker=st["marker"], ms=2.5,
                label=f"GD, clip={clip}")
        last = t.iloc[-1]
        if annotate and not (w_lim[0] <= last.w <= w_lim[1] and b_lim[0] <= last.b <= b_lim[1]):
            ax.text(0.02, 0.97 - 0.06 * notes, f"clip={clip}: thrown off the plot to ({last.w:.3g}, {last.b:.3g}), "
                    f"E {last.loss:.2g}", transform=ax.transAxes, color="white", fontsize=8, va="top")
            notes += 1
    first = part.iloc[0]
    ax.plot(first.w0, first.b0, marker="*", color="red", ms=14, mec="white", ls="none", label="start")
    ax.set(xlim=w_lim, ylim=b_lim)


def _surface_figure(surface, zoom, trajectory, jumps, path: Path) -> Figure:
    start = show_start(jumps)
    has_paths = trajectory is not None and not trajectory.empty and start is not None
    has_zoom = zoom is not None and not zoom.empty
    panels = 1 + has_zoom + has_paths
    fig, axes = plt.subplots(1, panels, figsize=(6.2 * panels, 5.2), squeeze=False)
    axes = list(axes[0])
    ax = axes.pop(0)
    mesh = _draw_surface(ax, surface)
    if has_paths:
        _draw_paths(ax, trajectory, start, surface, annotate=True)
    if has_zoom:
        ax.add_patch(plt.Rectangle((zoom.w.min(), zoom.b.min()), zoom.w.max() - zoom.w.min(),
                                   zoom.b.max() - zoom.b.min(), fill=False, ec="white", ls=":", lw=1))
    ax.set(xlabel="w (recurrent weight)", ylabel="b (bias)", title="E over (w, b), GD trajectories")
    ax.legend(loc="lower right", fontsize=8)
    if has_zoom:
        axz = axes.pop(0)
        _draw_surface(axz, zoom)
        if has_paths:
            _draw_paths(axz, trajectory, start, zoom, annotate=True)
        axz.set(xlabel="w (recurrent weight)", ylabel="b (bias)", title="zoom (dotted box on the left)")
        axz.legend(loc="lower right", fontsize=8)
    fig.colorbar(mesh, ax=ax, label="E = (sigmoid(x_50) - 0.7)^2 (log scale)")
    if has_paths:
        ax2 = axes.pop(0)
        for clip, t in trajectory[trajectory.start == start].groupby("clip", sort=False):
            st = _style(clip)
            t = t.sort_values("step")
            ax2.plot(t.step, t.loss.clip(lower=1e-12), color=st["color"], ls=st["ls"], marker=st["marker"], ms=3,
                     markevery=10, lw=1.1, label=f"clip={clip}")
        ax2.set_yscale("log")
        ax2.set(xlabel="GD step", ylabel="E at the current (w, b) (log scale)", title=f"E vs step, start {start}")
        ax2.legend(fontsize=8)
    save_figure(fig, path)
    lr = jumps.lr.iloc[0] if jumps is not None and not jumps.empty else math.nan
    return Figure(path.name, f"Left: E over (w, b) (log colour, white contours at E = 1e-4..1e-1; computed with torch "
                  f"on a {int(np.sqrt(len(surface)))}^2 grid); the sharp colour edge is the wall. Full-batch GD at lr "
                  f"{lr:g} from the start {start} (red star), without clipping (black, solid, circles) and with "
                  "norm-1 clipping (orange, dashed, triangles); middle: the same around the start. Right: E along "
                  "each trajectory against the step. One deterministic run each (no seeds, no bands).")


def _jumps_figure(jumps: pd.DataFrame, path: Path) -> Figure:
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    data = jumps.sort_values(["w0", "b0"])
    order = list(dict.fromkeys(data.start))
    markers = ["o", "^", "s"][: data["clip"].nunique()]
    sns.pointplot(data=data, x="start", y="jump_norm", hue="clip", markers=markers, linestyles="none", order=order,
                  ax=ax, palette="colorblind")
    typical = data[data["clip"] == "none"].set_index("start").typical_step.reindex(order)
    ax.scatter(range(len(order)), typical, marker="x", color="gray", s=40, zorder=5,
               label="no clip: median step before its largest")
    ax.axhline(data.step_bound[np.isfinite(data.step_bound)].max() if np.isfinite(data.step_bound).any() else np.nan,
               color="gray", ls=":", lw=1, label="lr x threshold")
    ax.legend(fontsize=8)
    ax.set_yscale("log")
    ax.set(xlabel="start (w0, b0)", ylabel="largest single step ||delta(w, b)|| (log)",
           title="largest step per run")
    ax.tick_params(axis="x", rotation=45)
    colours = dict(zip(dict.fromkeys(data["clip"]), sns.color_palette("colorblind")))
    for k, (clip, part) in enumerate(data.groupby("clip", sort=False)):
        x = np.array([order.index(s) for s in part.start]) + (k - 0.5) * 0.2
        mid, low, high = (part[f"loss_end_{k}"].clip(lower=1e-12) for k in ("median", "min", "max"))
        ax2.errorbar(x, mid, yerr=[mid - low, high - mid], fmt=markers[k % len(markers)], color=colours[clip], ms=7,
                     capsize=3, ls="none", label=clip)
    ax2.set_xticks(range(len(order)), order)
    starts = data.drop_duplicates("start").set_index("start").loss_start.reindex(order)
    ax2.scatter(range(len(order)), starts.clip(lower=1e-12), marker="*", color="red", s=70, zorder=5,
                label="E at the start")
    ax2.set_yscale("log")
    ax2.set(xlabel="start (w0, b0)", ylabel="E over the last 10 % of steps (log)", title="where each run ended")
    ax2.tick_params(axis="x", rotation=45)
    ax2.legend(fontsize=8)
    save_figure(fig, path)
    return Figure(path.name, f"Per start (x axis, {len(order)} starts), one deterministic GD run each without "
                  "clipping (blue circles) and with norm-1 clipping (orange triangles): left, the largest single "
                  "parameter step, with the no-clip run's median step before it (grey x) and the clipped bound "
                  "lr x threshold (dotted); right, E over each run's last 10 % of steps (marker: median; bar: min to "
                  "max, as a run may oscillate to its end), with E at the start (red star). "
                  "No seeds, so no bands.")
