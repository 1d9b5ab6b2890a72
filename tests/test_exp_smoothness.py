"""experiments/smoothness.py: its rule both ways on synthetic tables, its tables on a synthetic sweep, its figure."""

import math
import numpy as np
import pandas as pd
import pytest

from experiments import smoothness


def synthetic_sweep(n_steps=300, every=5):
    """'coupled': log smoothness = 0.8 log grad norm + noise (Zhang's LSTM); 'flat': smoothness unrelated to it.
    Clip none diverges at step 8 in 'flat' (too few points), as the real no-clip runs do."""
    runs, rows = [], []
    for setup in ("coupled", "flat"):
        for clip in ("none", "norm1"):
            for seed in (0, 1):
                run = f"{setup}-{clip}-{seed}"
                rng = np.random.default_rng(seed)
                last = 8 if (setup == "flat" and clip == "none") else n_steps
                rows.append({"run": run, "seed": seed, "step": 0})
                for step in range(1, last + 1):
                    g = float(np.exp(rng.normal(0, 1.0)))
                    s = np.nan
                    if step % every == 0:
                        s = float(g ** 0.8 * np.exp(rng.normal(0, 0.2))) if setup == "coupled" else float(
                            np.exp(rng.normal(1, 0.5)))
                    rows.append({"run": run, "seed": seed, "step": step, "loss": 1.0, "grad_norm": g,
                                 "smoothness": s})
                runs.append({"run": run, "seed": seed, "setup_name": setup, "task": setup, "clip": clip,
                             "clip_threshold": 1.0 if clip == "norm1" else math.inf, "diverged": last < n_steps,
                             "clip_method": "none" if clip == "none" else "norm",
                             "group": f"{setup},{clip}", "overrides": [f"setup={setup}", f"clip={clip}"]})
    runs = pd.DataFrame(runs)
    steps = pd.DataFrame(rows).merge(runs[["run", "group", "task"]], on="run")
    return runs, steps


@pytest.fixture(scope="module")
def synthetic_tables():
    return smoothness.tables(*synthetic_sweep())


def test_tables_have_the_documented_columns(synthetic_tables):
    points, corr = synthetic_tables["points"], synthetic_tables["correlations"]
    assert list(points.columns) == ["run", "setup", "clip", "seed", "step", "log10_grad_norm", "log10_smoothness"]
    assert (points.step % 5 == 0).all()
    assert {"setup", "clip", "n_points", "pearson", "pearson_lo", "pearson_hi", "spearman", "spearman_lo",
            "spearman_hi", "run_r_median", "slope", "tested", "holds"} <= set(corr)
    cells = corr.set_index(["setup", "clip"])
    assert cells.loc[("coupled", "norm 1"), "pearson"] > 0.9 and cells.loc[("coupled", "norm 1"), "holds"]
    assert abs(cells.loc[("flat", "norm 1"), "pearson"]) < 0.3 and not cells.loc[("flat", "norm 1"), "holds"]
    assert not cells.loc[("flat", "none"), "tested"] and cells.loc[("flat", "none"), "n_points"] == 2
    assert cells.loc[("coupled", "norm 1"), "slope"] == pytest.approx(0.8, abs=0.1)


def cell(setup, clip, r, lo, tested=True, n=100):
    return {"setup": setup, "clip": clip, "n_points": n, "runs_with_points": 3, "pearson": r, "pearson_lo": lo,
            "pearson_hi": min(1, r + 0.1), "spearman": r, "spearman_lo": lo, "spearman_hi": min(1, r + 0.1),
            "run_r_min": r - 0.1, "run_r_max": r + 0.1, "slope": 1.0, "tested": tested,
            "holds": bool(tested and r >= 0.5 and lo > 0)}


@pytest.mark.parametrize("cells,expected", [
    ([cell("a", "none", 0.8, 0.7), cell("a", "norm 1", 0.6, 0.4), cell("b", "norm 1", 0.7, 0.5),
      cell("b", "none", 0.1, -0.5, tested=False, n=2)], "supported"),
    ([cell("a", "none", 0.8, 0.7), cell("b", "norm 1", 0.2, 0.05)], "partly"),
    ([cell("a", "none", 0.8, 0.7), cell("a", "norm 1", 0.3, 0.1)], "not supported"),  # a fails in one cell
    ([cell("a", "none", 0.55, -0.05)], "not supported"),  # interval includes 0
    ([cell("a", "none", 0.9, 0.8, tested=False, n=5)], "not tested"),
])
def test_b1_rule(cells, expected):
    (verdict,) = smoothness.verdicts({"correlations": pd.DataFrame(cells)})
    assert verdict.claim == "B1" and verdict.verdict == expected


def test_synthetic_sweep_verdict_and_round_trip(synthetic_tables, tmp_path):
    assert smoothness.verdicts(synthetic_tables)[0].verdict == "partly"  # coupled holds, flat does not
    for name, frame in synthetic_tables.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    reread = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in synthetic_tables}
    assert smoothness.verdicts(reread)[0].verdict == "partly"
    assert smoothness.verdicts({})[0].verdict == "not tested"


def test_figure_is_written(synthetic_tables, tmp_path):
    figures = smoothness.figures(synthetic_tables, tmp_path)
    assert [f.name for f in figures] == ["smoothness_scatter.png"]
    assert (tmp_path / "smoothness_scatter.png").stat().st_size > 10_000 and figures[0].caption
