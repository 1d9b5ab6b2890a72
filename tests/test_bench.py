"""`make bench`: its plain loop (side (a)), the work it is timed on and its refusals; the step costs' measurement and
the results page, their structure (never their timings)."""

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLAIN = ROOT / "benchmarks" / "plain_loop.py"
sys.path.insert(0, str(PLAIN.parent))
import bench  # noqa: E402
import step_costs  # noqa: E402


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
    setups = list(bench.STEPS)
    measured = {
        "measured": "2026-01-01 00:00", "machine": "test", "command": "python benchmarks/bench.py", "seconds": 60.0,
        "suite_args": bench.SUITE_ARGS, "peaks": {"1024": 100.0, "2048": 90.0},
        "rates": {s: {"plain": 30.0, "suite": 10.0 if s == "deep_mlp" else 20.0, "plain_startup": 3.0,
                      "suite_startup": 5.0, "repeats": 2, "notes": []} for s in setups},
        "clip": {s: {"step": {"bare": 0.0025, "bare, default threads": 0.002},
                     "share": {"norm": 0.012, "clipping": 0.03 if s == "regression_mlp" else 0.015,
                               "clip_grad_norm_": 0.05},
                     "clip_us": {"none": 30.0, "norm1": 41.0}, "scale_us": 50.0, "clipped": 0.5, "tensors": 6,
                     "rounds": 20,
                     "block_steps": 8} for s in step_costs.SETUPS},
        "lstm": {"flops": 1.0e9, "recurrent": 0.6e9, "step": 0.0125, "gflops": 80.0, "recurrent_mm": 50.0,
                 "timesteps": 64, "shape": "32×128]·[128×512"},
        "gpt": {"bare": 0.040, "suite": 0.046, "ratio": 1.15, "load": 3.0, "tokens": 1024, "measured": "2026-01-01"}}
    rows = {line.split(" | ")[0].strip("| "): line for line in bench.report(measured).splitlines()
            if f" | {bench.RUNS} × " in line}  # the throughput table
    assert "| 3.00× | met |" in rows["deep_mlp"] and "1.50× | **missed**: the suite would need 1.7× its speed" in rows[
        "adding_rnn"]
    page = bench.report(measured)
    clip_rows = {line.split(" | ")[0].strip("| "): line for line in page.split("## Clipping's share")[1].splitlines()
                 if line.startswith("| ") and " | 6 | " in line}
    assert list(clip_rows) == list(step_costs.SETUPS)  # a row per setup, in order
    assert clip_rows["regression_mlp"] == ("| regression_mlp | 6 | 2.50 / 2.00 | +1.2% | +3.0% | 50% | 30 / 41 | "
                                           "50, 2.0% | +5.0% | **missed**: 3.0% |")
    assert clip_rows["charlm_gpt"].endswith("| +1.5% | 50% | 30 / 41 | 50, 2.0% | +5.0% | met |")
    assert "## `make reproduce`" not in page  # no headroom measured: no floor section
    bounds = page.split("## What bounds the ratio")[1].split("## ")[0]
    assert "| 2.00 / 2.50 |" in next(line for line in bounds.splitlines() if line.startswith("| deep_mlp |"))
    assert "**80.0** = 80% of the peak (100.0)" in page and "Target ≥ 70% of the peak: met" in page
    assert "| 40.0 | 46.0 | 1.15× | **missed**: 1.15× |" in page and "load average of 3.0" in page


def test_clipping_share_covers_every_protocol_setup():
    """Every protocol setup is measured, or is a measured setup at another lr (same model, data and step)."""
    from omegaconf import OmegaConf

    from experiments.tuned.design import SETUPS

    def same_step_as(setup: str) -> str:
        declared = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "setup" / f"{setup}.yaml"))
        inherits = [d for d in declared.pop("defaults", []) if d != "_self_"]
        declared.pop("setup_name", None)
        lr_only = declared == {} or declared == {"optim": {"lr": declared.get("optim", {}).get("lr")}}
        return inherits[0] if len(inherits) == 1 and lr_only else setup

    assert {same_step_as(setup) for setup in SETUPS} <= set(step_costs.SETUPS)
    assert same_step_as("charlm_gpt_spiky") == "charlm_gpt" and same_step_as("charlm_lstm") == "charlm_lstm"
    assert {"adding_rnn", "charlm_gpt"} <= set(step_costs.SETUPS)
    assert all((ROOT / "conf" / "setup" / f"{setup}.yaml").is_file() for setup in step_costs.SETUPS)


def test_clipping_share_measures_every_variant_on_a_real_step():
    """A short real measurement has the structure RESULTS.json stores (its numbers are timings: not checked)."""
    share = step_costs.clip_share("regression_mlp", rounds=2)
    assert set(share) == {"step", "share", "clip_us", "scale_us", "clipped", "tensors", "rounds", "block_steps"}
    assert 0 < share["scale_us"] < 1e6 * share["step"]["bare"]  # the multiplication is part of a step
    assert set(share["step"]) == {"bare", "bare, default threads"} and all(t > 0 for t in share["step"].values())
    assert set(share["share"]) == {"norm", "clipping", "clip_grad_norm_"}
    assert all(math.isfinite(v) for v in share["share"].values()) and set(share["clip_us"]) == {"none", "norm1"}
    assert share["clipped"] == 1.0 and share["tensors"] == 4 and share["rounds"] == 2  # norm ~1e3 > 1: every step
    assert step_costs.BLOCK_STEPS[0] <= share["block_steps"] <= step_costs.BLOCK_STEPS[1]


def test_the_floor_of_make_reproduce_counts_only_runs_that_train_to_the_end():
    """The lower bound: runs that did not diverge x their steps x their setup's bare step, over the cores; the
    headroom table's last column is the step on k batches over k steps on one batch."""
    import os

    import pandas as pd

    clip = {"charlm_gpt": {"step": {"bare": 0.015}}, "charlm_lstm": {"step": {"bare": 0.020}}}
    runs = pd.DataFrame({"setup": ["charlm_gpt"] * 3 + ["charlm_lstm"] * 2, "steps": 500, "run": range(5),
                         "diverged": [False, False, True, False, True]})
    floor = step_costs.reproduce_floor(clip, runs)
    assert floor.loc["charlm_gpt", "runs"] == 2 and floor.loc["charlm_gpt", "all_runs"] == 3
    assert math.isclose(floor.core_minutes.sum(), (2 * 500 * 0.015 + 500 * 0.020) / 60)
    headroom = {"measured": "2026-01-01", "setups": {"charlm_gpt": {"batch": 16, "step": {
        "1": 0.015, "2": 0.030, "4": 0.060, "10": 0.135}}}}
    page = "\n".join(step_costs.floor_report({"clip": clip, "headroom": headroom}, runs))
    minutes = floor.core_minutes.sum() / (os.cpu_count() or 1)
    assert f"At least {minutes:.1f} min on" in page and "| charlm_gpt | 2 (3) | 500 | 15.00 | 0.2 |" in page
    assert "| charlm_gpt | 16 | 15.0 | 30.0 | 60.0 | 135.0 | 0.90 |" in page
    assert ": met." in page  # 0.4 core-minutes: under 35 min
    runs_many = runs.assign(steps=5_000_000)
    assert "**missed**" in "\n".join(step_costs.floor_report({"clip": clip, "headroom": headroom}, runs_many))


def test_batch_headroom_measures_every_k_on_a_real_step(monkeypatch):
    monkeypatch.setattr(step_costs, "HEADROOM_ROUNDS", 1)
    monkeypatch.setattr(step_costs, "HEADROOM_STEPS", 1)
    monkeypatch.setattr(step_costs, "HEADROOM_FACTORS", (1, 2))
    found = step_costs.batch_headroom("charlm_gpt")
    assert found["batch"] == 16 and set(found["step"]) == {"1", "2"} and all(t > 0 for t in found["step"].values())
