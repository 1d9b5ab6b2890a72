"""The benchmark's plain loop (side (a) of `make bench`): the work it is timed on, and its refusals."""

import json
import subprocess
import sys
from pathlib import Path

PLAIN = Path(__file__).resolve().parents[1] / "benchmarks" / "plain_loop.py"


def plain(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PLAIN), *args], capture_output=True, text=True)


def test_plain_loop_runs_every_seed_of_every_regime():
    done = plain("--setup", "deep_mlp", "--seeds", "0-1", "--clip", "none,norm1", "--steps", "3")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["model_steps"] == 2 * 2 * 3 and result["nonfinite_losses"] == 0 and result["clip"] == "none,norm1"


def test_plain_loop_refuses_an_unknown_regime():
    done = plain("--setup", "deep_mlp", "--clip", "none,norm2", "--steps", "3")
    assert done.returncode == 2 and "norm2" in done.stderr.splitlines()[-1] and not done.stdout


def test_results_page_says_which_targets_are_met_and_by_how_much_the_others_are_missed():
    sys.path.insert(0, str(PLAIN.parent))
    import bench

    setups = list(bench.STEPS)
    measured = {
        "measured": "2026-01-01 00:00", "machine": "test", "command": "python benchmarks/bench.py", "seconds": 60.0,
        "suite_args": bench.SUITE_ARGS, "peaks": {"1024": 100.0, "2048": 90.0},
        "rates": {s: {"plain": 30.0, "suite": 10.0 if s == "deep_mlp" else 20.0, "plain_startup": 3.0,
                      "suite_startup": 5.0, "repeats": 2, "notes": []} for s in setups},
        "overheads": {s: {"step": {"none": 0.002, "none, 1 thread": 0.0025},
                          "overhead": {"clip_grad_norm_": 0.01, "Clipper": 0.03 if s == "adding_rnn" else 0.015},
                          "tensors": 6} for s in setups},
        "lstm": {"flops": 1.0e9, "recurrent": 0.6e9, "step": 0.0125, "gflops": 80.0, "recurrent_mm": 50.0,
                 "timesteps": 64, "shape": "32×128]·[128×512"},
        "gpt": {"bare": 0.040, "suite": 0.046, "ratio": 1.15, "load": 3.0, "tokens": 1024, "measured": "2026-01-01"}}
    rows = {line.split(" | ")[0].strip("| "): line for line in bench.report(measured).splitlines()
            if f" | {bench.RUNS} × " in line}  # the throughput table
    assert "| 3.00× | met |" in rows["deep_mlp"] and "1.50× | **missed**: the suite would need 1.7× its speed" in rows[
        "adding_rnn"]
    page = bench.report(measured)
    assert "| +1.0% | +3.0% | 6 | 3.3 | **missed**: 3.0% |" in page and "| +1.0% | +1.5% | 6 | 3.3 | met |" in page
    assert "**80.0** = 80% of the peak (100.0)" in page and "Target ≥ 70% of the peak: met" in page
    assert "| 40.0 | 46.0 | 1.15× | **missed**: 1.15× |" in page and "load average of 3.0" in page
