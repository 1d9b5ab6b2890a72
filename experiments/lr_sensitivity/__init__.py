"""C5's "less hyper-parameter trial and error", tested as Wortsman et al. 2023 measure it: every arm run at every lr
of a 3-decade grid on fresh seeds, and per seed its LR sensitivity and the width of the lrs that end good, compared
between arms by exact paired intervals (docs/protocol.md, the lr sensitivity section). B4 the same way: the GPT's
model-side remedies (qk-layernorm, z-loss, without clipping) against norm 1.

    python -m experiments.lr_sensitivity              # the runs (resumable), tables, figures, then the report
    python -m experiments.lr_sensitivity --estimate   # one run per setup, timed: the cost of the whole experiment

The pieces: ``design`` (seeds, grids, setups, arms, rows, smallest effects: the declarations), ``rules`` (the
measures, intervals, Holm, the shifted grids), ``wording`` (effects in words, the card, the rule), ``plots``.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pandas as pd

from experiments.common import Verdict
from experiments.lr_sensitivity import plots, rules
from experiments.lr_sensitivity.design import ARMS, BLOCK, EXTRA, ROWS, SETUPS, job, overrides, runs_grid
from experiments.lr_sensitivity.wording import RULE, card_table, numbers_line
from experiments.tuned.wording import words_by_setup

NAME = "lr_sensitivity"
TITLE = ("C5 and B4: less lr trial and error? LR sensitivity and the width of good lrs, no clip vs clipping (and "
         "model-side remedies), on fresh seeds")
CLAIMS = ("C5", "B4")
COMMAND = "python -m experiments.lr_sensitivity  (make reproduce)"
MEASURED = {"width": "decades of lrs that end within the smallest effect of the setup's reference (wider is better)",
            "sensitivity": "LR sensitivity, the mean over the grid of min(L, L0) - L* (lower is better)"}
__all__ = ["NAME", "TITLE", "CLAIMS", "COMMAND", "RULE", "analyse", "verdicts", "figures", "reproduce", "sweeper",
           "estimate"]


def plan(setups=SETUPS) -> list[tuple[dict, list[str]]]:
    """Every run: (what it is, its overrides), each arm a setup of ``setups`` can run at every lr of its runs grid
    and seed."""
    return [({"setup": s, "arm": a, "j": j, "seed": seed}, job(s, a, j, seed)) for s in setups
            for a in SETUPS[s].arms if overrides(s, a) is not None for j in runs_grid(s) for seed in BLOCK]


def analyse(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return rules.analyse(rules.measures(tables["runs"]))


def reproduce(sweep, setups=SETUPS) -> dict[str, pd.DataFrame]:
    """The runs of ``setups``, one resumable stage per setup and arm (a new arm runs only its own), then the tables
    results/lr_sensitivity/*.csv hold (a setup left out: its rows say "no runs")."""
    stages: dict[str, list] = {}
    for meta, job_overrides in plan(setups):
        stages.setdefault(f"{meta['setup']}-{meta['arm']}", []).append((meta, job_overrides))
    found = []
    for stage, jobs in stages.items():
        runs, steps = sweep(stage, [o for _, o in jobs])
        if runs.empty:  # not run yet (--no-train): its rows say so
            continue
        read = rules.read_runs(runs, steps, {tuple(o): meta for meta, o in jobs})
        found.append(read.assign(run=f"{stage}/" + read.run.astype(str)))
    runs = pd.concat(found, ignore_index=True)
    tables = {"runs": runs, "measures": rules.measures(runs), "clipped": rules.clipped(runs)}
    return {**tables, "rows": analyse(tables)}


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    final = rules.final_rows(tables["rows"] if "rows" in tables else analyse(tables))
    measured, words = rules.measures(tables["runs"]), rules.claim_verdicts(final)
    out = []
    for row in ROWS:
        part = final[final.row == row.label]
        a, b = ARMS[row.a].label, ARMS[row.b].label
        out.append(Verdict(
            row.claim, f"{row.label} (a = {a}, b = {b})",
            f"{MEASURED[row.measure]}, {a} vs {b} ({'better than' if row.kind == 'superiority' else 'as good as'}; "
            "on every setup)",
            "; ".join(numbers_line(row, r) for r in part.itertuples()) + ".", "Wortsman et al. 2023 (Fig. 1)",
            words[row.label], finding=f"{row.label}: {words_by_setup(part, SETUPS)}",
            figure="lr_sensitivity.png", table=card_table(row, part, measured)))
    return out


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list:
    return plots.draw(tables, Path(out_dir))


def sweeper(results: Path, jobs: int, extra: list[str], train: bool = True):
    """sweep(stage, jobs) -> (runs, steps): one resumable sweep per stage under results/runs/lr_sensitivity/<stage>
    (``experiments.runner.stage_sweeper``; ``train=False``: only the finished stages, read)."""
    from experiments.runner import stage_sweeper

    return stage_sweeper(NAME, results, jobs, [*EXTRA, *extra], train)


def run_seconds(setup: str, extra: list[str], folder: Path) -> tuple[float, int]:
    """CPU seconds and steps of one run of ``setup`` trained in this process (norm 1 at its grid's smallest lr, which
    does not diverge; seed 0, never a deciding seed), composed as the command line composes it: the cost on a free
    core, whatever the load."""
    from hydra import compose, initialize_config_dir

    from gradclip.config import register_schemas
    from gradclip.sweep import Job
    from gradclip.training import run_jobs

    overrides = [*EXTRA, *extra, *job(setup, "norm1", runs_grid(setup).start, 0)]
    register_schemas()
    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["logger=none", "threads=1", *overrides])
    started = time.process_time()
    summary = run_jobs([Job(cfg, folder / setup, "estimate", setup, overrides)])[0]
    return time.process_time() - started, summary.steps_run


def estimate(jobs: int, extra: list[str]) -> pd.DataFrame:
    """One run per setup, timed (``run_seconds``), and the whole experiment's cost from it: an upper bound, as
    diverged runs stop early and a population builds its task once."""
    import tempfile

    counts = Counter(meta["setup"] for meta, _ in plan())
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for setup in SETUPS:
            seconds, steps = run_seconds(setup, extra, Path(folder))
            rows.append({"setup": setup, "cpu_seconds_per_run": seconds, "steps": steps, "runs": counts[setup]})
    cost = pd.DataFrame(rows)
    cost["core_hours"] = cost.cpu_seconds_per_run * cost.runs / 3600
    total = cost.core_hours.sum()
    print(cost.to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    print(f"{NAME}: {cost.runs.sum()} runs, at most {total:.2g} core-hours: about {total / jobs:.2g} h on {jobs} "
          "free cores (diverged runs stop early)", flush=True)
    return cost


def main(argv: list[str] | None = None) -> int:
    from experiments.claims_report import build_report
    from experiments.runner import cpu, stage_parser, store

    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--estimate", action="store_true", help="time one run per setup, print the total cost")
    parser.add_argument("--setups", nargs="+", choices=list(SETUPS), default=list(SETUPS), metavar="SETUP",
                        help=f"only these setups' runs and rows (default: all of {', '.join(SETUPS)})")
    parser.add_argument("--no-train", action="store_true",
                        help="run nothing: tables and report from the stages already finished (the others' rows say "
                             "they have no runs yet)")
    args = parser.parse_args(argv)
    if args.estimate:
        estimate(args.jobs, args.override)
        return 0
    started = time.perf_counter()
    tables = reproduce(sweeper(args.results, args.jobs, args.override, not args.no_train), args.setups)
    seconds = time.perf_counter() - started
    store(NAME, tables, args.results, seconds, "tables" if args.no_train else "reproduce", runs=len(tables["runs"]),
          diverged_runs=int(tables["runs"].diverged.sum()))
    build_report(args.results)
    done = "read from finished stages in" if args.no_train else "ran or resumed in"
    print(f"{NAME}: {len(tables['runs'])} runs {done} {seconds / 60:.1f} min on {cpu()}")
    return 0
