"""report.md and the self-contained report.html of a sweep, and the command line that builds them."""

from __future__ import annotations

import argparse
import base64
import html
import re
import sys
from pathlib import Path

import pandas as pd

from gradclip.files import write_atomic
from gradclip.report.answer import answer, how_to_read, title as title_of
from gradclip.report.figures import make_figures
from gradclip.report.load import load_runs
from gradclip.report.tables import describe, group_table, html_table, markdown_table, md_text, run_table
from gradclip.sweep import failed_runs



def strong(line: str) -> str:
    """A line of the answer as HTML: escaped, its **emphasis** as <strong>."""
    return re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", html.escape(line))


def build_report(folder: str | Path) -> Path:
    """Write <folder>/report/{report.md, report.html, figures/*.png} from the job files below ``folder``.

    Failed and unfinished jobs are listed first; a report is written even when no job finished.
    """
    folder = Path(folder)
    failed = pd.DataFrame(failed_runs(folder), columns=["run", "overrides", "status", "error"])
    try:
        runs, steps = load_runs(folder)
    except FileNotFoundError:
        if failed.empty:
            raise
        runs = steps = None
    out = folder / "report"
    title = title_of(runs) if runs is not None else f"gradclip report: {folder.name}"
    md, body = [f"# {md_text(title)}"], [f"<h1>{html.escape(title)}</h1>"]
    if runs is not None:  # right under the title: an experiment's claims (experiments/callback.py) go after md[:2]
        how = how_to_read(runs)
        md += [f"*{md_text(how)}*"]
        body += [f'<p class="how">{html.escape(how)}</p>']
    md += [""]
    if runs is not None:
        lines = answer(runs)  # first: what the sweep says about its question, before how it was run
        if lines:
            md += ["## The answer", "", *[part for line in lines for part in (md_text(line), "")]]
            body += ["<h2>The answer</h2>", *[f"<p>{strong(line)}</p>" for line in lines]]
        intro = describe(runs)
        md += ["## How it was run", "", *[f"- {md_text(line)}" for line in intro], ""]
        body += ["<h2>How it was run</h2>", "<ul>" + "".join(f"<li>{html.escape(x)}</li>" for x in intro) + "</ul>"]
    if not failed.empty:
        note = (f"{len(failed)} job(s) did not finish; they are not in the tables and figures below. A failed job's "
                "traceback is in its summary.json; rerunning the same command reruns it (finished jobs are skipped).")
        md += ["## Failed or unfinished runs", "", md_text(note), "", markdown_table(failed), ""]
        body += ["<h2>Failed or unfinished runs</h2>", f"<p>{html.escape(note)}</p>", html_table(failed)]
    if runs is not None:
        figures = make_figures(runs, steps, out / "figures")
        groups, per_run = group_table(runs), run_table(runs)
        cell = ("Cells: the median over the group's seeds [lowest, highest seed]; a median is not a value any one run "
                "had.")
        md += ["## Summary by group", "", cell, "", markdown_table(groups), "", "## Figures", ""]
        for fig in figures:
            md += [f"![{fig.caption}](figures/{fig.name})", "", f"*{fig.caption}*", ""]
        md += ["## Every run", "", markdown_table(per_run), ""]
        body += ["<h2>Summary by group</h2>", f"<p>{html.escape(cell)}</p>", html_table(groups), "<h2>Figures</h2>"]
        for fig in figures:
            encoded = base64.b64encode((out / "figures" / fig.name).read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(fig.name)}" src="data:image/png;base64,{encoded}">'
                        f"<figcaption>{html.escape(fig.caption)}</figcaption></figure>")
        body += ["<h2>Every run</h2>", html_table(per_run)]
    write_atomic(out / "report.md", "\n".join(md))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #bbb;padding:3px 7px}"
             "th{background:#eee}p.how{color:#555;margin-top:-0.5em}figure{margin:1.5em 0}img{max-width:100%}figcaption{font-size:13px;color:#444}")
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")
    write_atomic(out / "report.html", page)
    return out / "report.md"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="gradclip-report", description="Rebuild a sweep's report (report.md, report.html, figures/) from its job files.")
    parser.add_argument("folder", help="a sweep folder (multirun/<date>/<time>) or one run's folder")
    args = parser.parse_args(argv)
    folder = Path(args.folder)
    if not folder.is_dir():
        sys.exit(f"error: {folder}: no such folder")
    try:
        path = build_report(folder)
    except FileNotFoundError as exc:
        sys.exit(f"error: {exc}")
    print(f"report: {path.resolve()}")

