"""Reproduce every claim experiment and write results/: REPORT.md, report.html, figures/ and one CSV folder each.

    python experiments/reproduce.py                  # every experiment: its sweep, tables, figures, then the report
    python experiments/reproduce.py cliff threshold  # only these sweeps; the others' stored tables are reused
    python experiments/reproduce.py --figures        # no training: figures and report from results/<name>/*.csv

Raw runs land in results/runs/<name>/<date_time>/ (not committed); the committed reference is the small tables
(results/<name>/*.csv), the figures and the report, all rebuilt from those tables alone by --figures.
"""

from __future__ import annotations

import argparse
import base64
import html
import importlib
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pandas as pd
import seaborn as sns

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `python experiments/reproduce.py` imports its sibling modules as experiments.*

from experiments.common import Verdict  # noqa: E402
from gradclip.callbacks import SuiteCallback  # noqa: E402
from gradclip.files import write_atomic, write_json  # noqa: E402
from gradclip.report import html_table, load_runs, markdown_table  # noqa: E402
from gradclip.sweep import MixedResultsError, check_folder  # noqa: E402

CLAIMS = {
    "C1": "Strongly non-linear objectives (RNNs, deep nets) have cliffs: products of many large weights give huge "
          "gradients.",
    "C2": "One step at a cliff throws the parameters far and can undo much of the progress made.",
    "C3": "A very small learning rate avoids the cliffs but trains slowly and can get stuck.",
    "C4": "Norm clipping rescales the gradient when its norm exceeds a threshold: direction kept, step limited.",
    "C5": "Clipping makes training faster and more predictable, with less hyper-parameter trial and error.",
    "C6": "The usual max norm is 1.",
    "C7": "Caffe clips the global L2 norm over all parameters; implement it otherwise and use it on every network.",
    "B1": "(Zhang et al. 2020) Local smoothness grows with the gradient norm, which is why clipping helps.",
    "B2": "(beyond the post) Adaptive clipping (AutoClip, AGC, ZClip) matches the best fixed threshold untuned.",
}
COMBINE_RULE = ("A claim tested by several experiments or rows gets one verdict: the word they all give; checks "
                "(true by construction) count only when nothing else tests the claim; otherwise 'partly' when some "
                "row supports it and none contradicts it, 'contradicted' (or 'not supported') when some row "
                "contradicts it and none supports it, 'mixed' when both happen (a setup-dependent row is both), "
                "else 'undecided'. A row that could not test it does not count.")
POSITIVE = {"supported", "partly", "setup-dependent"}  # setup-dependent: supported somewhere, contradicted elsewhere
NEGATIVE = {"contradicted", "not supported", "setup-dependent"}
RESULTS = ROOT / "results"


def claim_experiments() -> list[str]:
    """Every claim experiment, found on disk: a module experiments/NAME.py with ``verdicts`` and its sweep
    conf/experiment/NAME.yaml; ordered by the first claim each tests, then by name."""
    names = [path.stem for path in (ROOT / "conf" / "experiment").glob("*.yaml")
             if (ROOT / "experiments" / f"{path.stem}.py").is_file()]
    modules = {name: importlib.import_module(f"experiments.{name}") for name in names}
    found = [name for name, module in modules.items() if hasattr(module, "verdicts")]
    return sorted(found, key=lambda name: (list(CLAIMS).index(modules[name].CLAIMS[0]), name))


EXPERIMENTS = claim_experiments()


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
    subprocess.run(command, check=True, cwd=ROOT)
    return folder, time.perf_counter() - started


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


def combined_verdict(rows: list[tuple[str, Verdict]]) -> str:
    """The claims-table verdict from every row that tested the claim (COMBINE_RULE)."""
    tested = [v.verdict for _, v in rows if v.verdict != "not tested"]
    evidence = [word for word in tested if not word.startswith("check")]
    words = set(evidence or tested)
    if not words:
        return "not tested"
    if len(words) == 1:
        return words.pop()
    if words & POSITIVE and words & NEGATIVE:
        return "mixed"
    if words & POSITIVE:
        return "partly"
    if words & NEGATIVE:
        return "contradicted" if "contradicted" in words else "not supported"
    return "undecided"


def claims_table(found: dict[str, list[tuple[str, Verdict]]]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": claim, "statement": statement,
                          "verdict": combined_verdict(found.get(claim, [])),
                          "by experiment": " · ".join(f"{row_label(name, v, found[claim])}: {v.verdict}"
                                                      for name, v in found.get(claim, [])) or "–"}
                         for claim, statement in CLAIMS.items()])


def row_label(name: str, verdict: Verdict, rows: list[tuple[str, Verdict]]) -> str:
    """The experiment's name, and the row's own words when the experiment gives the claim several rows."""
    several = sum(other == name for other, _ in rows) > 1
    return f"{name} ({verdict.statement.split(' (')[0]})" if several else name


def evidence(found: dict[str, list[tuple[str, Verdict]]]) -> list[tuple[str, list[tuple[str, Verdict]]]]:
    """Per claim, the heading and each experiment's full verdict (what was measured, the numbers, the anchor)."""
    return [(f"{claim}: {statement} — {combined_verdict(found.get(claim, []))}", found.get(claim, []))
            for claim, statement in CLAIMS.items()]


def build_report(names: list[str], results: Path) -> Path:
    """results/REPORT.md and report.html from the stored tables of every experiment (no training)."""
    figures_dir = results / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    found: dict[str, list[tuple[str, Verdict]]] = defaultdict(list)
    sections = []
    for name in names:
        module = importlib.import_module(f"experiments.{name}")
        tables = load_tables(results, name)
        if tables and hasattr(module, "analyse"):  # derived rows: recomputed by this code, stored for readers
            tables["rows"] = module.analyse(tables)
            write_atomic(results / name / "rows.csv", tables["rows"].to_csv(index=False))
        meta_path = results / name / "meta.json"
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else None
        verdicts = module.verdicts(tables) if tables else [
            Verdict(c, CLAIMS.get(c, c), "no stored results (run make reproduce)", "–", "–", "not tested")
            for c in module.CLAIMS]
        for v in verdicts:
            found[v.claim].append((name, v))
        sns.set_theme(style="whitegrid", palette="colorblind")  # the same style for every experiment's figures
        figures = module.figures(tables, figures_dir) if tables else []
        sections.append((name, module, meta, figures))
    claims = claims_table(found)
    drawn = {fig.name for _, _, _, figures in sections for fig in figures}
    for stale in figures_dir.glob("*.png"):  # figures of experiments that no longer exist
        if stale.name not in drawn:
            stale.unlink()
    captions = {fig.name: fig.caption for _, _, _, figures in sections for fig in figures}
    cards = [claim_card(claim, statement, found.get(claim, []), sections, captions, figures_dir)
             for claim, statement in CLAIMS.items()]
    summary = claims.assign(finding=[card["finding"] for card in cards])[["claim", "statement", "verdict", "finding"]]
    title = "gradclip: what gradient clipping does — reference results"
    intro = ("Generated by `make reproduce` and `make verify` (figures and this page again: `make figures`, from the "
             "CSV tables in `results/<experiment>/`). Every number comes from those tables; every rule was written in "
             "its experiment module before the runs (each card's 'How it was decided'). Sources: "
             "[docs/sources.md](../docs/sources.md); the protocol of the comparative verdicts: "
             "[docs/protocol.md](../docs/protocol.md).")
    md = [f"# {title}", "", intro, "", "## Summary", "", markdown_table(summary), "",
          f"How rows combine into a claim's verdict: {COMBINE_RULE}", ""]
    body = [f"<h1>{html.escape(title)}</h1>", f"<p>{markdown_links(html.escape(intro))}</p>", "<h2>Summary</h2>",
            badge_table(summary), f"<p>How rows combine into a claim's verdict: {html.escape(COMBINE_RULE)}</p>"]
    for card in cards:
        md += card["md"]
        body += card["html"]
    md += ["## Experiments", ""]
    body.append("<h2>Experiments</h2>")
    for name, module, meta, figures in sections:
        command = getattr(module, "COMMAND", f"python run.py -m +experiment={name}")
        line = f"`{command}` — claims {', '.join(module.CLAIMS)}; {meta_text(meta)}; tables: `results/{name}/`."
        md += [f"### {module.TITLE}", "", line, ""]
        body += [f"<h3>{html.escape(module.TITLE)}</h3>", f"<p>{code_spans(html.escape(line))}</p>"]
        if hasattr(module, "SCOPE"):
            md += [f"*Scope.* {module.SCOPE}", ""]
            body.append(f"<p><i>Scope.</i> {html.escape(module.SCOPE)}</p>")
        md += [f"Figures: {', '.join(f'[{fig.name}](figures/{fig.name})' for fig in figures)}", ""]
        body.append("<p>Figures: " + ", ".join(f'<a href="figures/{html.escape(fig.name)}">{html.escape(fig.name)}</a>'
                                               for fig in figures) + "</p>")
    write_atomic(results / "REPORT.md", "\n".join(md))
    write_atomic(results / "report.html", '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
                 f"<title>gradclip reference results</title><style>{STYLE}</style></head><body>\n"
                 + "\n".join(body) + "\n</body></html>\n")
    return results / "REPORT.md"


STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222;line-height:1.4}"
         "table{border-collapse:collapse;font-size:13px;margin:.5em 0}td,th{border:1px solid #bbb;padding:3px 7px;"
         "vertical-align:top}th{background:#eee}img{max-width:100%}figcaption{font-size:13px;color:#444}"
         "section.card{border:1px solid #ccc;border-radius:6px;padding:.2em 1.2em 1em;margin:1.5em 0}"
         "details{margin:.6em 0}summary{cursor:pointer;color:#035}.badge{display:inline-block;padding:1px 8px;"
         "border-radius:10px;font-size:12px;font-weight:bold;white-space:nowrap}"
         + "".join(f".v-{word.replace(' ', '-')}{{background:{colour};color:{'#fff' if dark else '#000'}}}"
                   for word, (colour, dark) in {
                       "supported": ("#1a7f37", True), "contradicted": ("#b42318", True),
                       "no-detectable-effect": ("#6e7781", True), "undecided": ("#d0d7de", False),
                       "setup-dependent": ("#bf8700", False), "partly": ("#9be9a8", False),
                       "mixed": ("#bf8700", False), "not-supported": ("#ff8182", False),
                       "not-tested": ("#eeeeee", False), "check-passed": ("#ddf4ff", False),
                       "check-failed": ("#ff8182", False)}.items()))


def badge(word: str) -> str:
    return f'<span class="badge v-{word.replace(" ", "-")}">{html.escape(word)}</span>'


def badge_table(frame: pd.DataFrame) -> str:
    """A table whose verdict column is drawn as badges (cells as text, like html_table)."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = "".join("<tr>" + "".join(f"<td>{badge(str(v)) if c == 'verdict' else html.escape(str(v))}</td>"
                                    for c, v in row.items()) + "</tr>" for _, row in frame.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"


def markdown_links(text: str) -> str:
    """[label](target) as <a href>; `code` as <code> (text already HTML-escaped)."""
    import re

    return code_spans(re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', text))


def code_spans(text: str) -> str:
    import re

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", text)


def claim_card(claim: str, statement: str, rows: list[tuple[str, Verdict]], sections, captions: dict,
               figures_dir: Path) -> dict:
    """One claim's card: verdict, finding, key figure, compact table, and how it was decided (collapsed)."""
    verdict = combined_verdict(rows)
    findings = [v.finding or f"{name}: {v.verdict}" for name, v in rows]
    finding = "; ".join(findings) if rows else "not tested by any experiment"
    figure = next((v.figure for _, v in rows if v.figure and v.figure in captions), None) or next(
        (fig.name for name, _, _, figures in sections for fig in figures for n, _ in rows[:1] if name == n), None)
    tables = [v.table for _, v in rows if v.table is not None]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(
        [{"experiment": row_label(name, v, rows), "verdict": v.verdict, "what was measured": v.measured}
         for name, v in rows])
    rules = {name: " ".join(module.RULE.split()) for name, module, _, _ in sections}
    heading = f"{claim}: {statement} — {verdict}"
    md = [f"### {heading}", "", f"**Finding.** {finding}", ""]
    body = [f'<section class="card"><h3>{html.escape(heading)}</h3>',
            f"<p>{badge(verdict)} <b>Finding.</b> {html.escape(finding)}</p>"]
    if figure:
        encoded = base64.b64encode((figures_dir / figure).read_bytes()).decode("ascii")
        md += [f"![{captions[figure]}](figures/{figure})", "", f"*{captions[figure]}*", ""]
        body.append(f'<figure><img alt="{html.escape(figure)}" src="data:image/png;base64,{encoded}">'
                    f"<figcaption>{html.escape(captions[figure])}</figcaption></figure>")
    if len(table):
        md += [markdown_table(table), ""]
        body.append(badge_table(table))
    details = [f"{row_label(name, v, rows)} ({v.verdict}): {v.measured}. {v.numbers} Published: {v.anchor}"
               for name, v in rows]
    used = list(dict.fromkeys(name for name, _ in rows))
    md += ["<details><summary>How it was decided, every number, the data</summary>", ""]
    md += [f"- {md_line(line)}" for line in details]
    md += [f"- Rule of `{name}` (fixed before the runs): {rules[name]}" for name in used]
    md += [f"- Data: {', '.join(f'[results/{name}/]({name}/)' for name in used)}", "", "</details>", ""]
    body.append("<details><summary>How it was decided, every number, the data</summary><ul>"
                + "".join(f"<li>{html.escape(line)}</li>" for line in details)
                + "".join(f"<li>Rule of <code>{html.escape(name)}</code> (fixed before the runs): "
                          f"{html.escape(rules[name])}</li>" for name in used)
                + "<li>Data: " + ", ".join(f'<a href="{html.escape(name)}/">results/{html.escape(name)}/</a>'
                                           for name in used) + "</li></ul></details></section>")
    return {"finding": finding, "md": md, "html": body}


def md_line(text: str) -> str:
    return str(text).replace("<", "&lt;").replace("\n", " ")


class ClaimsCallback(SuiteCallback):
    """The report of `python run.py -m +experiment=NAME`, with the experiment's claims, rules and figures on top.

    Each conf/experiment/NAME.yaml points the suite's callback here; gradclip (src/) never imports experiments/.
    """

    def build_report(self, folder: Path, config) -> Path:
        path = super().build_report(folder, config)
        name = config.hydra.runtime.choices.get("experiment")
        if name in EXPERIMENTS:
            add_claims(path.parent, name, *load_runs(folder))
        return path


def add_claims(report_dir: Path, name: str, runs: pd.DataFrame, steps: pd.DataFrame) -> None:
    """Insert the experiment's claims table, rule and figures after the title of report.md and report.html."""
    module = importlib.import_module(f"experiments.{name}")
    tables = module.tables(runs, steps)
    for table, frame in tables.items():
        write_atomic(report_dir / "tables" / f"{table}.csv", frame.to_csv(index=False))
    found: dict[str, list[tuple[str, Verdict]]] = defaultdict(list)
    for v in module.verdicts(tables):
        found[v.claim].append((name, v))
    sns.set_theme(style="whitegrid", palette="colorblind")
    figures = module.figures(tables, report_dir / "figures")
    claims = claims_table(found)
    claims = claims[claims.claim.isin(found)]
    md = [f"## Claims tested by `{name}`", "", markdown_table(claims), "", f"Rule (fixed before the runs): "
          f"{' '.join(module.RULE.split())}", ""]
    for heading, rows in evidence(found):
        if rows:
            md += [f"### {heading}", ""] + [f"- {v.measured}. {v.numbers} *Published:* {v.anchor}" for _, v in rows]
            md.append("")
    md += [line for fig in figures for line in (f"![{fig.caption}](figures/{fig.name})", "", f"*{fig.caption}*", "")]
    report = (report_dir / "report.md").read_text().split("\n")
    write_atomic(report_dir / "report.md", "\n".join(report[:2] + md + report[2:]))
    section = [f"<h2>Claims tested by <code>{html.escape(name)}</code></h2>", html_table(claims),
               f"<p>Rule (fixed before the runs): {html.escape(' '.join(module.RULE.split()))}</p>"]
    for fig in figures:
        encoded = base64.b64encode((report_dir / "figures" / fig.name).read_bytes()).decode("ascii")
        section.append(f'<figure><img alt="{html.escape(fig.name)}" src="data:image/png;base64,{encoded}">'
                       f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
    page = (report_dir / "report.html").read_text()
    head, _, rest = page.partition("</h1>")
    write_atomic(report_dir / "report.html", head + "</h1>\n" + "\n".join(section) + rest)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"experiments to run (default: all of {', '.join(EXPERIMENTS)})")
    parser.add_argument("--figures", action="store_true", help="no training: rebuild figures and report from CSVs")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel runs (default 2)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where results go (default: results/)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="extra override for every sweep, e.g. steps=20 for a smoke test (repeatable)")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"unknown experiment(s) {', '.join(unknown)}; choose from {', '.join(EXPERIMENTS)}")
    started = time.perf_counter()
    if not args.figures:
        names = args.names or EXPERIMENTS
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
    path = build_report(EXPERIMENTS, args.results)
    print(f"report: {path}\ntotal: {(time.perf_counter() - started) / 60:.1f} min on {cpu()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
