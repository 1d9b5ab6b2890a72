"""The committed results/ is what the code produces: the report rebuilds from the stored tables to the same text,
and a tiny real run of an experiment yields tables with the committed schema."""

import base64
import html
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

from conftest import ROOT
from experiments.common import VERDICTS, Verdict
from experiments.claims import CLAIMS, claim_experiments, combined_verdict

RESULTS = ROOT / "results"
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
PNG = b"\x89PNG\r\n\x1a\n"
CLAIM_ROW = re.compile(r"\| [CB]\d+ \|")  # a claims-table row of report.md


class Page(HTMLParser):
    """A page read tag by tag: misnested or unclosed tags, its <img> attributes, every table row (thead or tbody, cell
    texts) and the text of every element."""

    def __init__(self, text: str):
        super().__init__()
        self.open, self.errors, self.images, self.rows, self.texts = [], [], [], [], []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs))
        if tag == "tr":
            self.rows.append((next((t for t, _ in reversed(self.open) if t in ("thead", "tbody")), None), []))
        if tag not in VOID:
            self.open.append([tag, ""])

    def handle_endtag(self, tag):
        if not self.open or self.open[-1][0] != tag:
            self.errors.append(f"</{tag}> closes <{self.open[-1][0] if self.open else 'nothing'}>")
            return
        tag, text = self.open.pop()
        self.texts.append((tag, text.strip()))
        if tag in ("th", "td"):
            self.rows[-1][1].append(text.strip())

    def handle_data(self, data):
        for element in self.open:  # an element's text includes its children's
            element[1] += data

    def text_of(self, tag: str) -> list[str]:
        return [text for t, text in self.texts if t == tag]


def check_report_html(page_path: Path, md_path: Path) -> Page:
    """report.html is well formed, its figures are embedded PNGs, it has tables, and it shows every claims-table
    row of report.md (claim, statement, verdict, per-experiment verdicts) as a table row."""
    page = Page(page_path.read_text())
    assert page.errors == [] and [tag for tag, _ in page.open] == []  # every tag closed, in order
    assert page.images
    for img in page.images:
        kind, _, data = img["src"].partition(",")
        assert kind == "data:image/png;base64", img["src"][:40]
        png = base64.b64decode(data, validate=True)
        assert png.startswith(PNG) and png == (page_path.parent / "figures" / img["alt"]).read_bytes(), img["alt"]
    head = [cells for section, cells in page.rows if section == "thead"]
    body = [cells for section, cells in page.rows if section == "tbody"]
    assert head and body and all(cells for cells in head + body)
    md_rows = [[html.unescape(c.strip().replace("\\|", "|")) for c in re.split(r"(?<!\\)\|", line)[1:-1]]
               for line in md_path.read_text().splitlines() if CLAIM_ROW.match(line)]
    assert md_rows and all(row in body for row in md_rows)
    return page


def stored_copy(tmp_path):
    """results/ without the rebuilt parts: only each experiment's CSV tables and meta.json (an experiment not run
    yet has none: its card says so)."""
    for name in claim_experiments():
        if (RESULTS / name).is_dir():
            shutil.copytree(RESULTS / name, tmp_path / name)
    return tmp_path


def reproduce(*args):
    return subprocess.run([sys.executable, str(ROOT / "experiments" / "reproduce.py"), *args], cwd=ROOT, text=True,
                          capture_output=True, timeout=1800)


def test_figures_rebuild_the_committed_report_exactly(tmp_path):
    results = stored_copy(tmp_path)
    done = reproduce("--figures", "--results", str(results))
    assert done.returncode == 0, done.stderr
    assert (results / "REPORT.md").read_text() == (RESULTS / "REPORT.md").read_text()
    committed = sorted(p.name for p in (RESULTS / "figures").glob("*.png"))
    assert sorted(p.name for p in (results / "figures").glob("*.png")) == committed and committed
    page = check_report_html(results / "report.html", results / "REPORT.md")
    report = (results / "REPORT.md").read_text()
    assert all(f"figures/{name}" in report for name in committed)  # every figure shown in a card, or linked
    assert {img["alt"] for img in page.images} <= set(committed)
    # every heading with it, each claim's card ("C1: ... — partly") included
    assert page.text_of("h3") == [line[4:] for line in report.splitlines() if line.startswith("### ")]
    assert len(page.text_of("details")) == len(CLAIMS)  # each card's how-it-was-decided, collapsed


def test_claims_table_has_every_claim_with_a_verdict():
    """The summary's verdict of each claim is its card's, one of the verdict words, from COMBINE_RULE."""
    report = (RESULTS / "REPORT.md").read_text()
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in report.splitlines() if CLAIM_ROW.match(line)]
    assert [row[0] for row in rows] == list(CLAIMS)
    cards = {}
    for line in report.splitlines():  # a card's heading: "### C1: <statement> — <verdict>"
        found = re.match(r"### ([CB]\d): .* — ([a-z -]+)$", line)
        if found:
            cards.setdefault(found.group(1), found.group(2))
    for claim, _, verdict, finding in rows:
        assert verdict in VERDICTS and verdict == cards[claim] and finding, claim


@pytest.mark.parametrize("words,combined", [
    (["supported", "supported"], "supported"), (["supported", "undecided"], "partly"),
    (["contradicted", "undecided"], "contradicted"), (["supported", "contradicted"], "mixed"),
    (["undecided", "no detectable effect"], "undecided"), (["check passed", "undecided"], "undecided"),
    (["check passed", "check passed"], "check passed"), (["not tested"], "not tested"),
    (["setup-dependent"], "setup-dependent"), (["setup-dependent", "contradicted"], "mixed")])
def test_combine_rule(words, combined):
    assert combined_verdict([("x", Verdict("C0", "", "", "", "", word)) for word in words]) == combined


def check_schema(results, names):
    for name in names:
        for committed in sorted((RESULTS / name).glob("*.csv")):
            fresh = results / name / committed.name
            assert fresh.exists(), f"{name}: {committed.name} not produced"
            assert list(pd.read_csv(fresh).columns) == list(pd.read_csv(committed).columns), committed


@pytest.mark.slow  # covered by the slow tiny run of every experiment; cliff's sweep report: test below
def test_tiny_cliff_run_gives_the_committed_tables(tmp_path):
    done = reproduce("cliff", "--results", str(tmp_path), "--override", "steps=5")
    assert done.returncode == 0, done.stderr
    check_schema(tmp_path, ["cliff"])


@pytest.mark.slow
def test_tiny_run_of_every_experiment_gives_the_committed_tables(tmp_path):
    done = reproduce("--results", str(tmp_path), "--override", "steps=4", "--override", "eval_every=2")
    assert done.returncode == 0, done.stderr
    check_schema(tmp_path, claim_experiments())


def test_experiment_sweep_report_starts_with_its_claims(tmp_path):
    from conftest import run_cli

    sweep = tmp_path / "sweep"
    done = run_cli("-m", "+experiment=cliff", "steps=5", "logger=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    report = (sweep / "report" / "report.md").read_text().splitlines()
    assert report[2] == "## Claims tested by `cliff`"
    assert [line.split("|")[1].strip() for line in report if line.startswith("| C")] == ["C1", "C2", "C4"]
    assert (sweep / "report" / "figures" / "cliff_surface.png").is_file()
    assert "Claims tested by <code>cliff</code>" in (sweep / "report" / "report.html").read_text()
    check_report_html(sweep / "report" / "report.html", sweep / "report" / "report.md")
