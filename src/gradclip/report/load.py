"""The runs of a sweep, from the job files on disk: one row per finished job, and their metric rows."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import pandas as pd

from gradclip.summary import RunSummary
from gradclip.sweep import job_summaries, run_name


def load_runs(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One row per finished job (its summary.json) and all their metric rows, with a `group` label per run.

    Failed and unfinished jobs are left out (``failed_runs`` lists them). The group of a run is what the sweep varied
    for it: its overrides, less the seed and less those every run shares.
    """
    summaries, metrics = [], []
    for job_dir, summary in job_summaries(folder):
        if summary is None or summary.get("status") == "failed":
            continue
        run, typed = run_name(folder, job_dir), RunSummary.from_dict(summary)
        summaries.append({**asdict(typed), "run": run})
        metrics.append(pd.read_csv(job_dir / "metrics.csv").assign(run=run, seed=typed.seed))
    if not summaries:
        raise FileNotFoundError(f"{folder}: no finished runs (no summary.json below it)")
    runs = pd.DataFrame(summaries)
    runs["group"] = group_labels(runs["overrides"].tolist())
    steps = pd.concat(metrics, ignore_index=True).merge(runs[["run", "group", "task"]], on="run")
    return runs, steps


def group_labels(overrides: list[list[str]]) -> list[str]:
    parsed = [dict(o.split("=", 1) for o in run if "=" in o) for run in overrides]
    keys = []
    for run in parsed:
        keys += [k for k in run if k not in keys and k.lstrip("+~") != "seed"]
    varied = [k for k in keys if len({run.get(k) for run in parsed}) > 1]
    if not varied:
        return ["all runs"] * len(parsed)
    return [", ".join(f"{k}={run.get(k, '(default)')}" for k in varied) for run in parsed]
