"""Record that runs of older code are runs of this code: rerun a sample of their jobs and compare the bytes.

    python -m gradclip.equivalence results/runs/tuned/decide results/runs/tuned/verify

Any edit under src/gradclip changes the code version (``gradclip.sweep.code_version``), and a sweep then reruns every
job of the older version. When the edit cannot change those runs' numbers (a new component, a faster step that is
bit-identical), this proves it on the machine: from each folder one finished job per (setup, clip method,
optimizer), the first of each in job order, is rerun here with this code, and its metrics.csv must equal the stored
one byte for byte and its final metric must be the same. Only then are the versions written into one group of
``equivalent_versions.yaml`` with what was checked, and a finished run of any version in it counts as this code's.
One mismatch, or runs made on a CPU of other vector capability (their last bits differ anyway), and nothing is
recorded (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from gradclip.files import write_atomic
from gradclip.sweep import EQUIVALENT, accepted_versions, code_version, job_summaries

RUN = Path(__file__).resolve().parents[2] / "run.py"
SKIP = ("hydra.", "logger=", "report=")  # the rerun's own folder, no logger, no report


def sample(folder: Path) -> list[tuple[Path, dict]]:
    """The first finished job of each (setup, clip method, optimizer) of older code in ``folder``."""
    picked: dict[tuple, tuple[Path, dict]] = {}
    for job_dir, summary in job_summaries(folder):
        if summary and summary.get("status") in ("ok", "diverged") and \
                summary.get("code_version") not in accepted_versions():
            picked.setdefault((summary["setup_name"], summary["clip_method"], summary["optim"]), (job_dir, summary))
    return list(picked.values())


def rerun(job_dir: Path, summary: dict, scratch: Path) -> str | None:
    """Rerun one job with this code; None when its metrics.csv and final metric are the stored ones, else why not."""
    out = scratch / f"{job_dir.parent.name}-{job_dir.name}"
    overrides = [o for o in summary["overrides"] if not o.startswith(SKIP)]
    command = [sys.executable, str(RUN), *overrides, "logger=none", "report=false", f"hydra.run.dir={out}"]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        return f"{job_dir}: the rerun failed: {done.stderr.strip().splitlines()[-1:]}"
    if (out / "metrics.csv").read_bytes() != (job_dir / "metrics.csv").read_bytes():
        return f"{job_dir}: metrics.csv differs"
    final = json.loads((out / "summary.json").read_text())["final_metric"]
    return None if final == summary["final_metric"] else f"{job_dir}: final metric {final} != {summary['final_metric']}"


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="+", type=Path, help="sweep folders holding finished runs of older code")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="reruns in parallel")
    args = parser.parse_args(argv)
    missing = [str(f) for f in args.folders if not f.is_dir()]
    if missing:
        parser.error(f"no such folder: {', '.join(missing)}")
    jobs = [job for folder in args.folders for job in sample(folder)]
    if not jobs:
        print(f"nothing to check: every finished run there is of this code ({code_version()}) or recorded as it")
        return 0
    ours = torch.backends.cpu.get_cpu_capability()
    other = sorted({s["versions"].get("cpu_capability") for _, s in jobs} - {ours})
    if other:
        print(f"runs made on {', '.join(map(str, other))} CPUs cannot be compared byte for byte on this {ours} one; "
              "nothing recorded", file=sys.stderr)
        return 1
    print(f"rerunning {len(jobs)} jobs with code {code_version()} ({args.jobs} at a time)", flush=True)
    with tempfile.TemporaryDirectory() as scratch, ThreadPoolExecutor(args.jobs) as pool:
        found = []
        for i, problem in enumerate(pool.map(lambda job: rerun(*job, Path(scratch)), jobs), 1):
            print(f"[{i}/{len(jobs)}] {jobs[i - 1][0]}: {problem or 'same bytes'}", flush=True)
            found.append(problem)
    problems = [p for p in found if p]
    if problems:
        print(f"{len(problems)} of {len(jobs)} reruns differ; nothing recorded", file=sys.stderr)
        return 1
    versions = sorted({s["code_version"] for _, s in jobs} | accepted_versions())
    groups = [g for g in (yaml.safe_load(EQUIVALENT.read_text()) if EQUIVALENT.is_file() else None) or []
              if not set(g["versions"]) & set(versions)]
    checked = sorted({f"{s['setup_name']}/{s['clip_method']}/{s['optim']}" for _, s in jobs})
    groups.append({"versions": versions, "checked": f"{time.strftime('%Y-%m-%d')}, {ours} CPU, by {code_version()}: "
                   f"{len(jobs)} reruns identical ({', '.join(checked)}) from {', '.join(map(str, args.folders))}"})
    header = "# Code versions whose runs are the same bytes (python -m gradclip.equivalence writes it; gradclip.sweep)\n"
    write_atomic(EQUIVALENT, header + yaml.safe_dump(groups, sort_keys=False, width=120))
    print(f"recorded: {', '.join(versions)} compute the same numbers ({EQUIVALENT})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
