"""experiments.runner: an experiment stopped from outside takes the sweep it started, and the sweep's own workers,
with it; meta.json times only what the last command did."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from conftest import ROOT

from experiments.runner import store

SLEEPER = "import time; time.sleep(120)"


def alive(pid: int) -> bool:
    """Running (a zombie left for init to reap counts as gone)."""
    status = Path(f"/proc/{pid}/status")
    try:
        return "\nState:\tZ" not in status.read_text()
    except FileNotFoundError:
        return False


def wait_for(condition, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def test_sigterm_stops_the_sweep_and_its_workers(tmp_path):
    worker = tmp_path / "worker.pid"
    sweep = (f"import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}]); "
             f"open({str(worker)!r}, 'w').write(str(p.pid)); time.sleep(120)")
    experiment = subprocess.Popen([sys.executable, "-c", f"import sys; sys.path.insert(0, {str(ROOT)!r}); "
                                   "from experiments.runner import run_with_children; "
                                   f"run_with_children([sys.executable, '-c', {sweep!r}])"])
    try:
        assert wait_for(lambda: worker.is_file() and worker.read_text().strip())
        pid = int(worker.read_text())
        assert alive(pid)
        experiment.send_signal(signal.SIGTERM)
        assert experiment.wait(timeout=30) == 128 + signal.SIGTERM
        assert wait_for(lambda: not alive(pid)), "the sweep's worker ran on after its experiment was stopped"
    finally:
        experiment.kill()


def test_meta_times_the_runs_or_the_reading_never_both(tmp_path):
    """Tables rebuilt from finished runs drop the time of the command that ran them, and the other way round; a
    verify block adds its own time to the deciding block's, and a new deciding block drops it."""
    table = {"rows": pd.DataFrame({"a": [1]})}

    def meta_after(stage: str) -> set[str]:
        store("x", table, tmp_path, 60.0, stage)
        return {key for key in json.loads((tmp_path / "x" / "meta.json").read_text()) if key.endswith("_seconds")}

    assert meta_after("reproduce") == {"reproduce_seconds"}
    assert meta_after("verify") == {"reproduce_seconds", "verify_seconds"}
    assert meta_after("tables") == {"tables_seconds", "verify_seconds"}
    assert meta_after("reproduce") == {"reproduce_seconds"}
