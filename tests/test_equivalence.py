"""Runs of older code count as this code's only after a rerun gave the same bytes (gradclip.equivalence)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gradclip import equivalence, sweep

ROOT = Path(__file__).resolve().parents[1]
OLD = "0.1.0+000000000000"


@pytest.fixture
def old_folder(tmp_path, monkeypatch):
    """A sweep folder with one finished tiny run, its summary stamped as if written by older code."""
    monkeypatch.setattr(sweep, "EQUIVALENT", tmp_path / "equivalent_versions.yaml")
    monkeypatch.setattr(equivalence, "EQUIVALENT", tmp_path / "equivalent_versions.yaml")
    monkeypatch.setattr(sweep.accepted_versions, "__defaults__", (tmp_path / "equivalent_versions.yaml",))
    job = tmp_path / "sweep" / "0"
    subprocess.run([sys.executable, str(ROOT / "run.py"), "setup=regression_mlp", "steps=6", "eval_every=3",
                    "logger=none", "report=false", "threads=1", f"hydra.run.dir={job}"], check=True, cwd=ROOT,
                   capture_output=True)
    summary = json.loads((job / "summary.json").read_text())
    (job / "summary.json").write_text(json.dumps({**summary, "code_version": OLD}))
    return job


def test_an_old_run_counts_only_after_its_rerun_matched(old_folder, tmp_path):
    assert sweep.read_summary(old_folder) is None  # older code: not ours
    assert equivalence.main([str(old_folder.parent), "--jobs", "1"]) == 0
    groups = yaml.safe_load((tmp_path / "equivalent_versions.yaml").read_text())
    assert groups[0]["versions"] == sorted([OLD, sweep.code_version()]) and "1 reruns identical" in groups[0]["checked"]
    assert sweep.read_summary(old_folder) is not None
    assert sweep.check_folder(old_folder.parent, []) == 0  # the folder is no longer refused


def test_one_differing_byte_records_nothing(old_folder, tmp_path):
    metrics = old_folder / "metrics.csv"
    metrics.write_bytes(metrics.read_bytes().replace(b"\n1,", b"\n1,0", 1))
    assert equivalence.main([str(old_folder.parent), "--jobs", "1"]) == 1
    assert not (tmp_path / "equivalent_versions.yaml").exists() and sweep.read_summary(old_folder) is None


def test_a_group_without_this_code_accepts_nothing(tmp_path):
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump([{"versions": [OLD, "0.1.0+111111111111"], "checked": "elsewhere"}]))
    assert sweep.accepted_versions(path) == {sweep.code_version()}
    path.write_text(yaml.safe_dump([{"versions": [OLD, sweep.code_version()], "checked": "here"}]))
    assert sweep.accepted_versions(path) == {sweep.code_version(), OLD}
