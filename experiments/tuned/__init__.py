"""C3, C5, C6, C7 and B2 under one protocol: every arm tuned with the same budget on the validation split, then
decided on seeds tuning never saw and on the test split, by intervals (docs/protocol.md).

    python -m experiments.tuned            # tuning (with its bracketing), the C3 length, then the deciding block
    python -m experiments.tuned --verify   # the deciding stage again on a second fresh block of seeds

The pieces: ``design`` (seeds, grid, setups, arms, rows, smallest effects: the declarations), ``stages`` (the jobs
and their outcomes), ``rules`` (intervals, verdicts, Holm, blocks, setups), ``wording`` (effects in words, cards,
the rule), ``figures``.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from experiments import caffe
from experiments.common import Verdict
from experiments.tuned import plots
from experiments.tuned.design import ARMS, EXTRA, ROWS, SETUPS
from experiments.tuned.rules import across, analyse as _analyse, final_rows
from experiments.tuned.stages import base_steps, choose, decide, lengths, targets, tune
from experiments.tuned.wording import RULE, SCOPE, card_table, numbers_line, words_by_setup

NAME = "tuned"
TITLE = "C3, C5, C6, C7, B2: every arm tuned alike, decided on fresh seeds and the test split, by intervals"
CLAIMS = ("C3", "C5", "C6", "C7", "B2")
COMMAND = "python -m experiments.tuned [--verify]  (make reproduce / make verify)"
MEASURED = {"final": "final test metric", "steps": "steps until the smoothed training loss reaches the target",
            "diverged": "divergence rate", "spread": "seed-to-seed spread of the final test metric",
            "stuck": "final test metric and the late held-out gain"}
__all__ = ["NAME", "TITLE", "CLAIMS", "COMMAND", "RULE", "SCOPE", "analyse", "verdicts", "figures", "reproduce",
           "verify", "sweeper"]


def analyse(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return _analyse(tables["decided"], tables["choices"])


def plan_table(tuning: pd.DataFrame, choices: pd.DataFrame, length: pd.DataFrame) -> pd.DataFrame:
    """Per setup, fixed before the deciding runs: the steps-to-target target, the base and C3 steps, the eval
    spacing."""
    plan = targets(tuning, choices)
    spacing = {s: int(str(part.curve.iloc[0]).split()[1].split(":")[0]) for s, part in tuning.groupby("setup")}
    plan["base_steps"] = [base_steps(tuning, s) for s in plan.setup]
    plan["eval_every"] = plan.setup.map(spacing)
    c3 = length.set_index("setup").steps if len(length) else pd.Series(dtype=int)
    plan["c3_steps"] = [int(c3.get(s, b)) for s, b in zip(plan.setup, plan.base_steps)]
    return plan


def reproduce(sweep) -> dict[str, pd.DataFrame]:
    """Tuning, the C3 length, then the deciding block: the tables results/tuned/*.csv hold."""
    tuning = tune(sweep)
    choices = choose(tuning)
    length = lengths(sweep, tuning, choices)
    plan = plan_table(tuning, choices, length)
    decided = decide(sweep, choices, plan, "decide")
    tables = {"tuning": tuning.drop(columns=["curve", "train_curve"]), "choices": choices, "length": length, "plan": plan,
              "decided": decided, "caffe": caffe.semantics()}
    return {**tables, "rows": analyse(tables)}


def verify(sweep, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """The deciding stage again on the verify block, with the stored choices and plan."""
    decided = tables["decided"][tables["decided"].block != "verify"]
    again = decide(sweep, tables["choices"], tables["plan"], "verify")
    tables = {**tables, "decided": pd.concat([decided, again], ignore_index=True)}
    return {**tables, "rows": analyse(tables)}


def verdicts(tables: dict[str, pd.DataFrame]) -> list[Verdict]:
    final = final_rows(tables["rows"] if "rows" in tables else analyse(tables))
    trials = tables["choices"].set_index(["setup", "arm"]).trials
    out = []
    for row in ROWS:
        part = final[final.row == row.label]
        a, b = ARMS[row.a].label, ARMS[row.b].label
        out.append(Verdict(
            row.claim, f"{row.label} (a = {a}, b = {b})",
            f"{MEASURED[row.measure]}, {a} vs {b} ({'better than' if row.kind == 'superiority' else 'as good as'}; "
            f"on {'every' if row.quantifier == 'every' else 'some'} setup)",
            "; ".join(numbers_line(row, r) for r in part.itertuples()) + ".", "docs/sources.md",
            across(part.verdict.tolist(), row.quantifier), finding=f"{row.label}: {words_by_setup(part)}",
            figure=f"tuned_{row.claim}.png", table=card_table(row, part, tables["decided"], trials)))
    if "caffe" in tables:
        numbers, passed = caffe.check(tables["caffe"])
        out.append(Verdict("C7", "our norm clip + SGD compute Caffe's clip_gradients (global L2, before decay)",
                           "independent numpy Caffe solver vs ours on random gradients", numbers, caffe.ANCHOR, passed,
                           finding=f"Caffe's clipping semantics: {passed}"))
    return out


def figures(tables: dict[str, pd.DataFrame], out_dir) -> list:
    rows = tables["rows"] if "rows" in tables else analyse(tables)
    return plots.draw(rows, tables, Path(out_dir))


def sweeper(results: Path, jobs: int, extra: list[str]):
    """sweep(stage, jobs) -> (runs, steps): resumable sweeps under results/runs/tuned/ found by what
    they ran (``experiments.runner.stage_sweeper``)."""
    from experiments.runner import stage_sweeper

    return stage_sweeper(NAME, results, jobs, [*EXTRA, *extra])


def main(argv: list[str] | None = None) -> int:
    from experiments.runner import cpu, load_tables, stage_parser, store
    from experiments.claims_report import build_report

    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--verify", action="store_true", help="rerun the deciding stage on the verify block")
    args = parser.parse_args(argv)
    if args.verify and "choices" not in load_tables(args.results, NAME):
        parser.error(f"no stored choices in {args.results / NAME}: run `make reproduce` first")
    started = time.perf_counter()
    sweep = sweeper(args.results, args.jobs, args.override)
    tables = verify(sweep, load_tables(args.results, NAME)) if args.verify else reproduce(sweep)
    seconds = time.perf_counter() - started
    store(NAME, tables, args.results, seconds, "verify" if args.verify else "reproduce")
    build_report(args.results)
    print(f"{NAME}: {'verify' if args.verify else 'tuning + deciding'} took {seconds / 60:.1f} min on {cpu()}")
    return 0
