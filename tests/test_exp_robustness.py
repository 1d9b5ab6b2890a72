"""experiments/robustness.py: its rule both ways on synthetic grids, its tables on fake job folders, its figure."""

import math

import pandas as pd
import pytest
from test_exp_threshold import SETUPS, fake_sweep

from experiments import robustness as exp

SCALES = (0.1, 0.3, 1.0, 3.0, 10.0)


def cell(setup, scale, threshold, score, diverged=0, runs=3):
    metric, higher = SETUPS[setup][:2]
    final = score if math.isfinite(score) else math.nan
    return {"setup": setup, "lr_scale": scale, "lr": SETUPS[setup][4] * scale, "threshold": threshold,
            "metric": metric, "higher_is_better": higher, "runs": runs, "diverged": diverged,
            "div_rate": diverged / runs, "div_lo": 0.0, "div_hi": 1.0, "finished": runs - diverged,
            "final_median": final, "final_lo": final, "final_hi": final, "score_median": score,
            "clipped_pct_median": 0.0 if threshold == math.inf else 50.0}


def grid(setup, columns):
    """columns: threshold -> 5 scores (lr x0.1 .. x10)."""
    return [cell(setup, s, t, v, diverged=0 if math.isfinite(v) else 3)
            for t, values in columns.items() for s, v in zip(SCALES, values)]


INF = math.inf
# regression: without clipping only x0.1 works and the rest diverge; threshold 10 works over x0.1..x3 (MSE <= 11)
MSE_WIDER = grid("regression_mlp", {1.0: [40, 30, 20, 15, 12], 10.0: [11, 10.5, 10, 10.8, 25],
                                    INF: [10.9, INF, INF, INF, INF]})
MSE_SAME = grid("regression_mlp", {1.0: [40, 30, 20, 15, 12], 10.0: [10, 30, 40, 50, 60],
                                   INF: [10.2, INF, INF, INF, INF]})
# accuracy: best 0.94; 'works' = >= 0.92
ACC_WIDER = grid("digits_deep_mlp", {1.0: [0.80, 0.90, 0.93, 0.94, 0.92], INF: [0.93, 0.91, -INF, -INF, -INF]})
ACC_NARROWER = grid("digits_deep_mlp", {1.0: [0.50, 0.93, 0.80, 0.70, 0.60], INF: [0.94, 0.93, 0.92, -INF, -INF]})


def verdict(rows):
    (v,) = exp.verdicts({"grid": pd.DataFrame(rows)})
    assert v.claim == "C5"
    return v


def test_supported_when_clipping_widens_the_lr_range_everywhere():
    v = verdict(MSE_WIDER + ACC_WIDER)
    assert v.verdict == "supported"
    assert "without clipping 1/5 lrs (x0.1)" in v.numbers and "(threshold 10) 4/5 lrs" in v.numbers


def test_partly_and_not_supported():
    assert verdict(MSE_WIDER + ACC_NARROWER).verdict == "partly"
    assert verdict(MSE_SAME + ACC_NARROWER).verdict == "not supported"


def test_width_table():
    width = exp.widths(pd.DataFrame(MSE_WIDER)).set_index("threshold")
    assert width.loc[10.0, "width"] == 4 and width.loc[10.0, "working_lr_scales"] == "0.1 0.3 1 3"
    assert width.loc[10.0, "decades"] == pytest.approx(math.log10(30))
    assert width.loc[INF, "width"] == 1 and width.loc[1.0, "width"] == 0


def test_not_tested_without_both_kinds_of_threshold():
    only_finite = [r for r in MSE_WIDER if r["threshold"] != INF]
    assert verdict(only_finite).verdict == "not tested"
    (v,) = exp.verdicts({})
    assert v.verdict == "not tested"
    all_diverged = grid("regression_mlp", {1.0: [INF] * 5, INF: [INF] * 5})
    assert verdict(all_diverged).verdict == "not tested"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("robustness_sweep")
    specs = []
    for setup in ("regression_mlp", "digits_deep_mlp"):
        for scale in (0.1, 1.0, 10.0):
            for t in (1.0, INF):
                for seed in (0, 1, 2):
                    higher = SETUPS[setup][1]
                    specs.append({"setup": setup, "clip": "norm", "lr_scale": scale, "threshold": t, "seed": seed,
                                  "diverged": t == INF and scale > 1,
                                  "final": (0.9 - 0.01 * seed) if higher else 10.0 + seed})
    return fake_sweep(folder, specs)


def test_tables_have_the_documented_columns(sweep):
    runs, steps = sweep
    tables = exp.tables(runs, steps)
    assert set(tables) == {"grid", "width"}
    grid_ = tables["grid"]
    assert {"setup", "lr_scale", "lr", "threshold", "metric", "higher_is_better", "runs", "diverged", "div_rate",
            "div_lo", "div_hi", "finished", "final_median", "final_lo", "final_hi", "score_median",
            "clipped_pct_median"} == set(grid_.columns)
    assert len(grid_) == 12 and set(grid_.runs) == {3}
    assert set(grid_.threshold) == {1.0, INF}  # inf comes back from JSON null
    top = grid_[(grid_.threshold == INF) & (grid_.lr_scale == 10.0)]
    assert set(top.diverged) == {3} and set(top.finished) == {0}
    assert dict(zip(top.setup, top.score_median)) == {"regression_mlp": INF, "digits_deep_mlp": -INF}  # worst
    assert list(tables["width"].columns) == ["setup", "threshold", "metric", "higher_is_better", "best_score",
                                             "best_lr_scale", "best_threshold", "lrs_in_grid", "width", "decades",
                                             "working_lr_scales"]
    # every lr works with clipping, two of three without
    (v,) = exp.verdicts(tables)
    assert v.verdict == "supported"


def test_figures_are_written(sweep, tmp_path):
    runs, steps = sweep
    tables = {k: pd.read_csv(pd.io.common.StringIO(v.to_csv(index=False)))
              for k, v in exp.tables(runs, steps).items()}
    assert exp.verdicts(tables)[0].verdict == "supported"  # the same verdict from the CSV round trip
    figures = exp.figures(tables, tmp_path)
    assert [f.name for f in figures] == ["robustness_heatmap.png"]
    assert (tmp_path / "robustness_heatmap.png").stat().st_size > 10_000
    assert "seeds per cell" in figures[0].caption
