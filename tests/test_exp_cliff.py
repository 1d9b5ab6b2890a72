"""experiments/cliff.py: its rules both ways on synthetic tables, its tables on simulated runs, its figures."""

import numpy as np
import pandas as pd
import pytest

from experiments import cliff
from experiments.common import VERDICTS


def simulate(starts, clips=("none", "norm1"), lr=0.1, steps=200):
    """Full-batch GD on the cliff model, every (start, clip) at once, written as the training loop writes it: row s =
    loss before step s and (w, b) after it; summary fields as load_runs gives them."""
    jobs = [(w0, b0, clip) for w0, b0 in starts for clip in clips]
    w = np.array([j[0] for j in jobs], dtype=float)
    b = np.array([j[1] for j in jobs], dtype=float)
    threshold = np.array([1.0 if j[2] == "norm1" else np.inf for j in jobs])
    rows = [{"run": str(i), "step": 0, "seed": 0} for i in range(len(jobs))]
    for step in range(1, steps + 1):
        E, gw, gb = cliff.loss_and_grad(w, b)
        norm = np.hypot(gw, gb)
        scale = np.minimum(1.0, threshold / (norm + 1e-6))
        w, b = w - lr * scale * gw, b - lr * scale * gb
        rows += [{"run": str(i), "step": step, "seed": 0, "loss": E[i], "grad_norm": norm[i],
                  "grad_norm_clipped": norm[i] * scale[i], "clipped": int(scale[i] < 1), "skipped": 0, "cosine": 1.0,
                  "update_norm": lr * scale[i] * norm[i], "w": w[i], "b": b[i]} for i in range(len(jobs))]
    runs = pd.DataFrame([{"run": str(i), "clip": clip, "clip_threshold": 1.0 if clip == "norm1" else None, "lr": lr,
                          "seed": 0, "task": "cliff", "overrides": [f"clip={clip}", f"model.w0={w0}", f"model.b0={b0}"],
                          "group": clip, "diverged": False} for i, (w0, b0, clip) in enumerate(jobs)])
    steps = pd.DataFrame(rows).merge(runs[["run", "group", "task"]], on="run")
    return runs, steps


@pytest.fixture(scope="module")
def real_like():
    runs, steps = simulate([(5.0, -2.3), (5.0, -2.0), (4.5, -2.0)])
    return cliff.tables(runs, steps)


def test_tables_have_the_documented_columns(real_like):
    assert set(real_like) == {"steepness", "surface", "surface_zoom", "trajectory", "jumps"}
    assert {"where", "max", "median", "ratio", "w_at_max", "b_at_max", "verdict_grid"} <= set(real_like["steepness"])
    assert list(real_like["surface"].columns) == ["w", "b", "loss"]
    assert len(real_like["surface"]) == cliff.SURFACE_GRID ** 2
    assert len(real_like["surface_zoom"]) == cliff.ZOOM_GRID ** 2
    assert {"start", "clip", "step", "w", "b", "loss", "grad_norm", "step_norm", "cosine"} <= set(
        real_like["trajectory"])
    jumps = real_like["jumps"]
    assert {"jump_norm", "typical_step", "jump_ratio", "loss_before", "loss_after", "progress_undone",
            "max_step_norm", "step_bound", "min_cosine"} <= set(jumps)
    assert len(jumps) == 6 and set(jumps["clip"]) == {"none", "norm 1"}
    traj = real_like["trajectory"]
    # the recomputed loss agrees with the logged one, and the start comes from the overrides
    assert jumps.max_loss_check_error.max() < 1e-9
    assert set(traj.start) == {"(5, -2.3)"} and set(traj["clip"]) == {"none", "norm 1"}  # the illustrated start
    assert set(jumps.w0) == {5.0, 4.5}  # starts from the overrides


def test_steepness_finds_the_wall(real_like):
    row = real_like["steepness"].query("verdict_grid").iloc[0]
    assert row["ratio"] > 100 and 4 < row["w_at_max"] < 8 and -4 < row["b_at_max"] < 0


def test_verdicts_on_simulated_runs(real_like):
    found = {v.claim: v for v in cliff.verdicts(real_like)}
    assert list(found) == ["C1", "C2", "C4"] and all(v.verdict in VERDICTS for v in found.values())
    assert found["C1"].verdict == "supported"
    assert found["C2"].verdict == "supported"  # (5, -2.3): thrown to a plateau (w ~ 12.8, b ~ 11), E 0.09 > E0
    assert found["C4"].verdict == "supported"


def jumps_row(**kw):
    base = dict(run="0", start="(5, -2.3)", w0=5.0, b0=-2.3, clip="none", lr=0.1, threshold=np.inf,
                jump_norm=0.01, typical_step=0.01, jump_ratio=1.0, progress_undone=0.0, loss_start=0.04,
                loss_final=0.001, max_step_norm=0.01, step_bound=np.inf, clipped_steps=0, min_cosine=1.0,
                min_cosine_logged_clipped=np.nan, max_grad_norm=0.2)
    return {**base, **kw}


@pytest.mark.parametrize("ratio,expected", [(2000.0, "supported"), (50.0, "partly"), (3.0, "not supported")])
def test_c1_rule(ratio, expected):
    steep = pd.DataFrame([{"where": "grid 200x200", "max": ratio, "median": 1.0, "ratio": ratio, "w_at_max": 5.0,
                           "b_at_max": -2.6, "verdict_grid": True}])
    assert cliff.verdict_c1(steep).verdict == expected


@pytest.mark.parametrize("rows,expected", [
    ([jumps_row(jump_norm=15, jump_ratio=1000, progress_undone=2.0), jumps_row(), jumps_row()], "supported"),
    ([jumps_row(jump_norm=15, jump_ratio=1000, progress_undone=0.1), jumps_row(), jumps_row()], "partly"),
    ([jumps_row(jump_norm=15, jump_ratio=1000, progress_undone=2.0)] + [jumps_row()] * 3, "partly"),  # 1/4 < 1/3
    ([jumps_row(jump_ratio=5.0), jumps_row()], "not supported"),
    ([jumps_row(clip="norm 1")], "not tested"),
])
def test_c2_rule(rows, expected):
    assert cliff.verdict_c2(pd.DataFrame(rows)).verdict == expected


@pytest.mark.parametrize("kw,expected", [
    (dict(max_step_norm=0.1, min_cosine=1.0), "supported"),
    (dict(max_step_norm=0.1, min_cosine=0.9), "partly"),
    (dict(max_step_norm=0.5, min_cosine=1.0), "partly"),
    (dict(max_step_norm=0.5, min_cosine=0.5), "not supported"),
    (dict(max_step_norm=0.01, min_cosine=1.0, clipped_steps=0), "not tested"),
])
def test_c4_rule(kw, expected):
    row = jumps_row(**{"clip": "norm 1", "threshold": 1.0, "step_bound": 0.1, "clipped_steps": 3, **kw})
    assert cliff.verdict_c4(pd.DataFrame([jumps_row(), row])).verdict == expected


def test_missing_tables_are_not_tested():
    assert [v.verdict for v in cliff.verdicts({})] == ["not tested"] * 3
    assert [v.verdict for v in cliff.verdicts({"jumps": pd.DataFrame(), "steepness": pd.DataFrame()})] == [
        "not tested"] * 3


def test_figures_are_written(real_like, tmp_path):
    figures = cliff.figures(real_like, tmp_path)
    assert [f.name for f in figures] == ["cliff_surface.png", "cliff_jumps.png"]
    assert all((tmp_path / f.name).stat().st_size > 10_000 and f.caption for f in figures)
