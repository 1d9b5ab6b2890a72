"""Running an experiment's sweeps and keeping its tables: results/<name>/*.csv and meta.json, written atomically;
raw runs under results/runs/<name>/ (resumable, never mixed with runs of other code)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from gradclip.files import write_atomic, write_json
from gradclip.report import load_runs
from gradclip.sweep import MixedResultsError, check_folder

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"


def run_sweep(name: str, results: Path, jobs: int, extra: list[str], folder: Path | None = None,
              jobs_file: Path | None = None) -> tuple[Path, float]:
    """`python run.py -m +experiment=<name>` (or the jobs of ``jobs_file``, with no experiment added) with the
    population launcher (one core per worker) in ``folder`` (default results/runs/<name>): a rerun resumes it, and a
    folder of other code is moved aside to <folder>.stale-<time> first."""
    folder = Path(folder or results / "runs" / name).absolute()
    try:  # results of other code or schema (its sweep.json says), or of no sweep (the former <name>/<date_time>/)
        check_folder(folder, [])
        other = folder.is_dir() and any(folder.iterdir()) and not (folder / "sweep.json").is_file()
    except MixedResultsError:
        other = True
    if other:
        stale = folder.with_name(f"{folder.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}")
        folder.rename(stale)
        print(f"{folder}: results of other code, moved to {stale}; starting fresh", flush=True)
    sweep = [f"hydra.sweeper.jobs_file={Path(jobs_file).absolute()}"] if jobs_file else [f"+experiment={name}"]
    command = [sys.executable, str(ROOT / "run.py"), "-m", *sweep, "logger=none", "threads=1", "report=false",
               "hydra/launcher=population", f"hydra.launcher.n_jobs={jobs}", f"hydra.sweep.dir={folder}", *extra]
    started = time.perf_counter()
    run_with_children(command)
    return folder, time.perf_counter() - started


def run_with_children(command: list[str]) -> None:
    """``command`` in a process group of its own, given every SIGINT and SIGTERM this process gets: stopped, this
    process takes the sweep and its workers with it (a sweep left running would write on into the folder that a rerun
    resumes). Ctrl-C raises KeyboardInterrupt here once the sweep has stopped, SIGTERM exits with 128 + 15."""
    child = subprocess.Popen(command, cwd=ROOT, start_new_session=True)
    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        os.killpg(child.pid, signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if signal.SIGINT in received:
        raise KeyboardInterrupt
    if received:
        sys.exit(128 + received[-1])
    if code:
        raise subprocess.CalledProcessError(code, command)


def stage_parser(description: str):
    """The command line of an experiment that runs its own stages (``python -m experiments.NAME``): where results go,
    how many runs in parallel, extra overrides for every run."""
    import argparse

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--jobs", type=int, default=2, help="parallel runs (default 2)")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE")
    return parser


def stage_sweeper(name: str, results: Path, jobs: int, prefix: list[str], train: bool = True):
    """sweep(stage, job_list) -> (runs, steps): resumable sweeps under results/runs/<name>/, each job run with the
    overrides ``prefix`` first, found by what they ran, not by their order: a stage's jobs that some part of it
    (<stage>/, then <stage>+2/, ...: each a fixed job list, <part>.jobs.yaml) already lists are taken from there, and
    only the others run, as a new part. A new setup or arm thus runs only its own jobs. Each run's ``overrides`` come
    back as the stage listed them (from its setup= on: without the launcher's and ``prefix``). ``train=False``:
    nothing runs, and only the finished parts are read (a stage with none comes back empty)."""
    import yaml

    base = results / "runs" / name

    def listed(part: str) -> list[tuple[str, ...]]:
        jobs_file = base / f"{part}.jobs.yaml"
        return [tuple(j) for j in yaml.safe_load(jobs_file.read_text())] if jobs_file.is_file() else []

    def finished(folder: Path, count: int) -> bool:
        """Every job of the part has its summary.json, and the part is of this code and schema."""
        try:
            check_folder(folder, [])
        except MixedResultsError:
            return False
        return folder.is_dir() and sum(1 for _ in folder.glob("*/summary.json")) >= count

    def sweep(stage: str, job_list: list[list[str]]):
        wanted = [tuple(prefix + j) for j in job_list]
        names = [stage] + [f"{stage}+{i}" for i in range(2, 100) if (base / f"{stage}+{i}.jobs.yaml").is_file()]
        parts = {part: listed(part) for part in names}  # each part's job list, read once
        covered = {j for jobs_of_part in parts.values() for j in jobs_of_part}
        missing = [j for j in dict.fromkeys(wanted) if j not in covered]
        if missing and train:
            part = stage if not parts[stage] else f"{stage}+{len(parts) + 1}"
            write_atomic(base / f"{part}.jobs.yaml", yaml.safe_dump([list(j) for j in missing]))
            parts[part] = missing
        used = [part for part, jobs_of_part in parts.items() if set(jobs_of_part) & set(wanted)
                and (train or finished(base / part, len(jobs_of_part)))]
        print(f"{name}: stage {stage}, {len(wanted)} runs ({len(missing)} new)" if train else
              f"{name}: stage {stage}, {len(used)} finished parts read, nothing run", flush=True)
        if not used:
            return pd.DataFrame(columns=["run", "overrides"]), pd.DataFrame(columns=["run"])
        found_runs, found_steps = [], []
        for part in used:  # each resumes unless done; a part of other code is set aside and rerun by run_sweep
            folder = base / part
            if not finished(folder, len(parts[part])):
                run_sweep(f"{name}/{part}", results, jobs, [], folder=folder, jobs_file=base / f"{part}.jobs.yaml")
            runs, steps = load_runs(folder)
            found_runs.append(runs.assign(run=part + "/" + runs.run.astype(str)))
            found_steps.append(steps.assign(run=part + "/" + steps.run.astype(str)))
        runs, steps = pd.concat(found_runs, ignore_index=True), pd.concat(found_steps, ignore_index=True)
        runs = runs.assign(overrides=[list(o)[[x.startswith("setup=") for x in o].index(True):]
                                      for o in runs.overrides])
        keep = runs.overrides.map(tuple).isin({j[len(prefix):] for j in wanted})
        runs = runs[keep].assign(job=runs.overrides.map(tuple)).drop_duplicates("job").drop(columns="job")
        return runs.reset_index(drop=True), steps[steps.run.isin(runs.run)]

    return sweep


def store_tables(name: str, module, folder: Path, results: Path, seconds: float) -> None:
    """The experiment's tables from its job files, as CSV under results/<name>/ (written atomically)."""
    runs, steps = load_runs(folder)
    store(name, module.tables(runs, steps), results, seconds, "sweep", runs=len(runs),
          diverged_runs=int(runs.diverged.sum()))


def store(name: str, tables: dict[str, pd.DataFrame], results: Path, seconds: float, stage: str, **facts) -> None:
    """Tables as results/<name>/<table>.csv (the old CSVs replaced) and meta.json: when, how long, on which CPU."""
    out = results / name
    for old in out.glob("*.csv"):
        if old.stem not in tables:
            old.unlink()
    for table, frame in tables.items():
        write_atomic(out / f"{table}.csv", frame.to_csv(index=False))
    meta_path = out / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    if stage == "reproduce":  # a new deciding block: the verify block, if any, no longer belongs to it
        meta.pop("verify_seconds", None)
    # tables from runs this command ran (or resumed), or from finished runs it only read: never both timings
    meta.pop({"reproduce": "tables_seconds", "tables": "reproduce_seconds"}.get(stage, ""), None)
    meta.update({f"{stage}_seconds": round(seconds, 1), "finished": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu(),
                 **facts})
    write_json(meta_path, meta)


def meta_text(meta: dict | None) -> str:
    """'60 runs (3 diverged), sweep 1.2 min on <cpu>, <date>' from a meta.json."""
    if not meta:
        return "not run yet"
    runs = f"{meta['runs']} runs ({meta['diverged_runs']} diverged), " if "runs" in meta else ""
    times = ", ".join(f"{key[:-len('_seconds')]} {value / 60:.1f} min" for key, value in meta.items()
                      if key.endswith("_seconds"))
    return f"{runs}{times} on {meta.get('cpu', '2 cores')}, {meta['finished']}"


def cpu() -> str:
    """This machine's CPU model, cores and the vector instructions torch uses (numbers differ in the last bits
    between CPUs of different capability)."""
    import platform

    import torch

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else \
        platform.processor()
    return f"{model}, {os.cpu_count()} cores, {torch.backends.cpu.get_cpu_capability()}"


def load_tables(results: Path, name: str) -> dict[str, pd.DataFrame]:
    return {path.stem: pd.read_csv(path) for path in sorted((results / name).glob("*.csv"))}
