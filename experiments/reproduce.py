"""Reproduce every claim experiment and write results/: REPORT.md, report.html, figures/ and one CSV folder each.

    python experiments/reproduce.py                  # every experiment: its sweep, tables, figures, then the report
    python experiments/reproduce.py cliff threshold  # only these sweeps; the others' stored tables are reused
    python experiments/reproduce.py --figures        # no training: figures and report from results/<name>/*.csv

Raw runs land in results/runs/<name>/ (not committed); the committed reference is the small tables
(results/<name>/*.csv), the figures and the report, all rebuilt from those tables alone by --figures.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python experiments/reproduce.py` imports its sibling modules as experiments.*

from experiments.claims import claim_experiments  # noqa: E402
from experiments.claims_report import build_report  # noqa: E402
from experiments.runner import RESULTS, cpu, run_sweep, store, store_tables  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    experiments = claim_experiments()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"experiments to run (default: all of {', '.join(experiments)})")
    parser.add_argument("--figures", action="store_true", help="no training: rebuild figures and report from CSVs")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel runs (default 2)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results go (default: results/)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every sweep, e.g. steps=20 for a smoke test (repeatable)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in experiments]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(experiments)}")
    started = time.perf_counter()
    if not args.figures:
        names = args.names or experiments
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name}: running", flush=True)
            module, begun = importlib.import_module(f"experiments.{name}"), time.perf_counter()
            if hasattr(module, "reproduce"):  # several stages: the module runs its sweeps
                tables = module.reproduce(module.sweeper(args.results, args.jobs, args.override))
                store(name, tables, args.results, time.perf_counter() - begun, "reproduce")
            else:
                folder, seconds = run_sweep(name, args.results, args.jobs, args.override)
                store_tables(name, module, folder, args.results, seconds)
            print(f"[{i}/{len(names)}] {name}: done in {(time.perf_counter() - begun) / 60:.1f} min", flush=True)
    path = build_report(args.results)
    print(f"report: {path}\ntotal: {(time.perf_counter() - started) / 60:.1f} min on {cpu()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
