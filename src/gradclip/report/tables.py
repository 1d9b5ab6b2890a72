"""The report's tables and wording: numbers as text, per-group and per-run tables, Markdown/HTML rendering."""

from __future__ import annotations

import html
import math

import numpy as np
import pandas as pd


def seed_text(runs: pd.DataFrame) -> str:
    """'4 seeds' (or '3-4 seeds' when groups differ)."""
    counts = runs.groupby("group").size()
    n = counts.iloc[0] if counts.nunique() == 1 else f"{counts.min()}-{counts.max()}"
    return f"{n} seed{'s' if str(n) != '1' else ''}"


def num(value, digits: int = 3) -> str:
    """A number as a reader reads it: ``digits`` significant digits, no e-notation from 0.001 up (250, not 2.5e+02)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if value == 0 or abs(value) < 1e-3:
        return f"{value:.{digits}g}"
    text = f"{value:.{max(0, digits - 1 - math.floor(math.log10(abs(value))))}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def spread(values: pd.Series, digits: int = 3) -> str:
    """'median [lowest, highest]' of the finite values (one value alone; '–' for none)."""
    values = pd.to_numeric(values, errors="coerce")
    values = values[np.isfinite(values)]
    if not len(values):
        return "–"
    if len(values) == 1:
        return num(float(values.iloc[0]), digits)
    return f"{num(float(values.median()), digits)} [{num(float(values.min()), digits)}, {num(float(values.max()), digits)}]"


def group_table(runs: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for group, part in runs.groupby("group", sort=False):
        diverged = part[part.diverged]
        reached = part.steps_to_target.dropna()
        target = part.target.iloc[0]
        rows.append({
            "group": group, "runs": len(part),
            f"final {part.metric.iloc[0]} (runs that did not diverge)": spread(part.final_metric[~part.diverged], 4),
            f"best {part.metric.iloc[0]} (median of the seeds' best, runs that did not diverge)": spread(
                part.best_metric[~part.diverged], 4),
            "diverged (at step)": f"{len(diverged)}/{len(part)}" + (
                f" ({', '.join(str(int(s)) for s in diverged.diverged_step)})" if len(diverged) else ""),
            f"steps to {part.target_metric.iloc[0]} ≤ {num(target)}": (
                f"{spread(reached)} ({len(reached)}/{len(part)} reached)" if target is not None else "–"),
            "% steps clipped": spread(100 * part.clipped_fraction, 3),
            "median grad norm": spread(part.grad_norm_median, 2),
            "loss-spike steps": spread(part.loss_spikes),
            "wall time (s)": spread(part.wall_time_s, 2),
        })
    return pd.DataFrame(rows)


def run_table(runs: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "run": runs.run, "group": runs.group, "seed": runs.seed, "status": [
            f"diverged at {int(s)} ({r})" if d else "ok"
            for d, s, r in zip(runs.diverged, runs.diverged_step, runs.diverged_reason)],
        "final": [f"– (diverged; {num(v, 4)} there)" if d else num(v, 4) for v, d in zip(runs.final_metric, runs.diverged)],
        "best (step)": [
            f"{num(b, 4)} ({num(s)})" for b, s in zip(runs.best_metric, runs.best_step)],
        "steps to target": runs.steps_to_target.map(num),
        "% clipped": (100 * runs.clipped_fraction).map(lambda v: num(v, 3)),
        "grad norm median / max": [f"{num(a, 2)} / {num(b, 2)}" for a, b in zip(runs.grad_norm_median, runs.grad_norm_max)],
        "loss-spike steps": runs.loss_spikes.map(num),
        "non-finite steps": runs.nonfinite_steps.map(num),
        "wall (s)": runs.wall_time_s.map(lambda v: num(v, 2)),
    })


# ---------------------------------------------------------------- rendering
def md_text(text) -> str:
    """Config strings in Markdown as text: `<` cannot open an HTML tag, a newline cannot end a table row."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    cells = [[md_text(c).replace("|", "\\|") for c in row] for row in [frame.columns, *frame.astype(str).values]]
    lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(cells[0])]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells[1:]])


def html_table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in frame.astype(str).values)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def describe(runs: pd.DataFrame) -> list[str]:
    """Plain sentences on what was run, shared by every run unless a group says otherwise."""
    first = runs.iloc[0]
    data = first.data if isinstance(first.data, dict) else {}
    corpus = data.get("corpus")
    lines = [
        f"{len(runs)} runs in {runs.group.nunique()} groups ({seed_text(runs)} each); "
        f"{int(runs.steps.max())} optimizer steps per run.",
        f"Task {', '.join(runs.task.unique())}; model {', '.join(runs.model.unique())}; optimizer "
        f"{', '.join(sorted({f'{o} lr {l:g}' for o, l in zip(runs.optim, runs.lr)}))}.",
        f"Held-out metric: {first.metric} ({'higher' if first.higher_is_better else 'lower'} is better); "
        f"target: {first.target_metric} ≤ {num(first.target)}.",
        "Diverged = non-finite loss, loss above the configured multiple of the first step's loss, or too many "
        "non-finite gradients in a row; a diverged run stops there and is kept as a result.",
        f"Loss-spike step = a step whose training loss exceeds the median of the {first.spike_window} losses before "
        f"it by more than {first.spike_factor:g} robust SDs of them (1.4826 x their median absolute deviation; config "
        f"keys spike_factor, spike_window).",
    ]
    if corpus:
        lines.append(f"Corpus: {corpus['source']}; {sum(corpus['chars'].values())} characters; sha256 "
                     f"{corpus['sha256'][:16]}….")
    shared = runs.population.fillna(1) if "population" in runs else pd.Series([1])
    if (shared > 1).any():
        lines.append(f"Runs were trained in populations of up to {int(shared.max())} (the population launcher steps "
                     "them together): a run's wall time is its population's.")
    versions = first.versions if isinstance(first.versions, dict) else {}
    lines.append(f"Device {first.device}, {first.threads} thread{'s' if first.threads != 1 else ''}; " +
                 ", ".join(f"{k} {v}" for k, v in versions.items()) + ".")
    return lines
