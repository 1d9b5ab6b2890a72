"""The report of `python run.py -m +experiment=NAME`, with the experiment's claims, rules and figures on top: each
conf/experiment/NAME.yaml points the suite's callback here (gradclip, in src/, never imports experiments/)."""

from __future__ import annotations

import base64
import html
import importlib
from collections import defaultdict
from pathlib import Path

import pandas as pd
import seaborn as sns

from experiments.claims import claim_experiments, claims_table, evidence
from experiments.common import Verdict
from gradclip.callbacks import SuiteCallback
from gradclip.files import write_atomic
from gradclip.report import html_table, load_runs, markdown_table


class ClaimsCallback(SuiteCallback):
    """The report of `python run.py -m +experiment=NAME`, with the experiment's claims, rules and figures on top.

    Each conf/experiment/NAME.yaml points the suite's callback here; gradclip (src/) never imports experiments/.
    """

    def build_report(self, folder: Path, config) -> Path:
        path = super().build_report(folder, config)
        name = config.hydra.runtime.choices.get("experiment")
        if name in claim_experiments():
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
