"""The committed results/ is what the code produces: the report rebuilds from the stored tables to the same text,
and a tiny real run of an experiment yields tables with the committed schema."""

import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pandas as pd
import pytest

from conftest import ROOT
from experiments.common import VERDICTS
from experiments.reproduce import CLAIMS, EXPERIMENTS

RESULTS = ROOT / "results"


def stored_copy(tmp_path):
    """results/ without the rebuilt parts: only each experiment's CSV tables and meta.json."""
    for name in EXPERIMENTS:
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
    HTMLParser().feed((results / "report.html").read_text())


def test_claims_table_has_every_claim_with_a_verdict():
    report = (RESULTS / "REPORT.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| C") or line.startswith("| B")]
    assert [row.split("|")[1].strip() for row in rows] == list(CLAIMS)
    assert all(row.split("|")[3].strip() in VERDICTS for row in rows)


def check_schema(results, names):
    for name in names:
        for committed in sorted((RESULTS / name).glob("*.csv")):
            fresh = results / name / committed.name
            assert fresh.exists(), f"{name}: {committed.name} not produced"
            assert list(pd.read_csv(fresh).columns) == list(pd.read_csv(committed).columns), committed


def test_tiny_cliff_run_gives_the_committed_tables(tmp_path):
    done = reproduce("cliff", "--results", str(tmp_path), "--override", "steps=5")
    assert done.returncode == 0, done.stderr
    check_schema(tmp_path, ["cliff"])


@pytest.mark.slow
def test_tiny_run_of_every_experiment_gives_the_committed_tables(tmp_path):
    done = reproduce("--results", str(tmp_path), "--override", "steps=4", "--override", "eval_every=2")
    assert done.returncode == 0, done.stderr
    check_schema(tmp_path, EXPERIMENTS)


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
