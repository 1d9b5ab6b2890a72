"""experiments/small_lr_vs_clip.py: its rules both ways on synthetic tables, its tables on fake job folders, figures."""

import math

import pandas as pd
import pytest
from test_exp_threshold import SETUPS, fake_sweep

from experiments import small_lr_vs_clip as exp

INF = math.inf
LARGE, SMALL, CLIP = exp.LARGE, exp.SMALL, exp.CLIP


def row(setup, regime, diverged=0, final=2.2, spread=0.05, steps=300.0, runs=5):
    metric, higher = SETUPS[setup][:2]
    finished = runs - diverged
    return {"setup": setup, "regime": regime, "lr": 1.0, "clip": "norm1" if "clip" in regime else "none",
            "metric": metric, "higher_is_better": higher, "target": SETUPS[setup][3], "runs": runs,
            "diverged": diverged, "div_rate": diverged / runs, "div_lo": 0.0, "div_hi": 1.0, "finished": finished,
            "final_median": final, "final_lo": final - spread / 2, "final_hi": final + spread / 2,
            "final_min": final - spread / 2, "final_max": final + spread / 2,
            "spread": spread if finished >= 2 else INF,
            "score_median": final if diverged <= runs // 2 else (-INF if higher else INF),
            "reached": runs - diverged if math.isfinite(steps) else 0, "steps_to_target": steps,
            "steps_to_target_reached": steps, "loss_spikes_median": 1.0, "loss_spikes_max": 3.0,
            "clipped_pct_median": 1.0}


def verdicts(*rows):
    v3, v5 = exp.verdicts({"summary": pd.DataFrame(list(rows))})
    assert (v3.claim, v5.claim) == ("C3", "C5")
    return v3.verdict, v5.verdict


# char LSTM as in the README scan: lr 16 diverges on 2/5 and is spiky, lr 4 is stable, lr 16 + clip is best
CHAR_LARGE = row("charlm_lstm", LARGE, diverged=2, final=2.6, spread=0.25, steps=INF)
CHAR_CLIP = row("charlm_lstm", CLIP, final=2.20, spread=0.09, steps=300)


def test_c3_supported_when_the_small_lr_is_stable_but_slower():
    small = row("charlm_lstm", SMALL, final=2.22, spread=0.07, steps=450)  # 1.5x the steps to target
    assert verdicts(CHAR_LARGE, small, CHAR_CLIP) == ("supported", "partly")  # C5: faster, not narrower
    stuck = row("charlm_lstm", SMALL, final=2.6, spread=0.05, steps=INF)  # never reaches it, ends worse
    assert verdicts(CHAR_LARGE, stuck, CHAR_CLIP) == ("supported", "partly")


def test_c3_partly_when_the_small_lr_is_as_good_as_clipping():
    small = row("charlm_lstm", SMALL, final=2.25, spread=0.07, steps=350)  # 1.17x the steps, 2.3 % worse
    assert verdicts(CHAR_LARGE, small, CHAR_CLIP) == ("partly", "not supported")  # C5: neither faster nor narrower


def test_c3_not_supported_when_the_small_lr_diverges_too():
    small = row("charlm_lstm", SMALL, diverged=1, final=2.3, steps=400)
    # C5 against that small lr (the better no-clip regime): 400 >= 1.25 x 300 steps, and fewer divergences
    assert verdicts(CHAR_LARGE, small, CHAR_CLIP) == ("not supported", "supported")


def test_c3_not_tested_when_the_large_lr_never_diverges():
    large = row("charlm_lstm", LARGE, final=2.3, steps=400)
    small = row("charlm_lstm", SMALL, final=2.5, steps=INF)
    assert verdicts(large, small, CHAR_CLIP) == ("not tested", "partly")  # C5: 400 >= 1.25 x 300 steps
    assert [v.verdict for v in exp.verdicts({})] == ["not tested", "not tested"]


def test_c3_mixed_setups_are_partly():
    slow = row("charlm_lstm", SMALL, final=2.22, steps=450)
    also_diverges = [row("regression_mlp", LARGE, diverged=5, final=INF, steps=INF),
                     row("regression_mlp", SMALL, diverged=2, final=12.0, steps=600),
                     row("regression_mlp", CLIP, final=10.0, steps=400)]
    # C5: partly on the char LSTM, supported on the MLP (faster than the small lr, which diverged on 2)
    assert verdicts(CHAR_LARGE, slow, CHAR_CLIP, *also_diverges) == ("partly", "partly")


def test_c5_supported_faster_and_more_predictable():
    small = row("charlm_lstm", SMALL, final=2.22, spread=0.20, steps=450)
    assert verdicts(CHAR_LARGE, small, CHAR_CLIP) == ("supported", "supported")


def test_c5_partly_and_not_supported():
    wide_clip = row("charlm_lstm", CLIP, final=2.20, spread=0.30, steps=300)
    small = row("charlm_lstm", SMALL, final=2.22, spread=0.07, steps=450)
    assert verdicts(CHAR_LARGE, small, wide_clip) == ("supported", "partly")  # faster, but a wider seed spread
    as_fast = row("charlm_lstm", SMALL, final=2.19, spread=0.07, steps=300)
    assert verdicts(CHAR_LARGE, as_fast, wide_clip) == ("partly", "not supported")
    # clip diverges more than the best no-clip regime: not more predictable, however narrow its spread
    div_clip = row("charlm_lstm", CLIP, diverged=1, final=2.2, spread=0.01, steps=300)
    assert verdicts(CHAR_LARGE, as_fast, div_clip) == ("partly", "not supported")


def test_c5_compares_with_the_better_no_clip_regime():
    # the large lr ends better than the small one here, so it is the one clipping has to beat
    large = row("digits_deep_mlp", LARGE, diverged=1, final=0.95, spread=0.02, steps=300)
    small = row("digits_deep_mlp", SMALL, final=0.80, spread=0.01, steps=INF)
    clip = row("digits_deep_mlp", CLIP, final=0.95, spread=0.01, steps=300)
    v3, v5 = verdicts(large, small, clip)
    assert v5 == "partly"  # fewer divergences than lr x1, but not faster
    assert v3 == "supported"  # the small lr does not diverge, but gets stuck at 0.80


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    folder = tmp_path_factory.mktemp("small_lr_sweep")
    specs = []
    for setup in ("charlm_lstm", "digits_deep_mlp"):
        higher = SETUPS[setup][1]
        for clip in ("none", "norm1"):
            for scale in (1.0, exp.SMALL_LR_SCALE):
                for seed in range(3):
                    diverged = clip == "none" and scale == 1.0 and seed < 2
                    reached = None if diverged or scale < 1 else 30
                    specs.append({"setup": setup, "clip": clip, "lr_scale": scale, "threshold": 1.0, "seed": seed,
                                  "diverged": diverged, "reached": reached, "spikes": seed,
                                  "final": (0.9 + 0.01 * seed) if higher else 2.2 + 0.01 * seed})
    return fake_sweep(folder, specs)


def test_tables_have_the_documented_columns(sweep):
    runs, steps = sweep
    tables = exp.tables(runs, steps)
    assert set(tables) == {"summary", "runs", "curves"}
    summary = tables["summary"]
    assert {"setup", "regime", "lr", "clip", "metric", "higher_is_better", "target", "runs", "diverged", "div_rate",
            "div_lo", "div_hi", "finished", "final_median", "final_lo", "final_hi", "final_min", "final_max",
            "spread", "score_median", "reached", "steps_to_target", "steps_to_target_reached", "loss_spikes_median",
            "loss_spikes_max", "clipped_pct_median"} == set(summary.columns)
    assert len(summary) == 8 and set(summary.regime) == {LARGE, SMALL, CLIP, exp.SMALL_CLIP}
    large = summary[(summary.setup == "charlm_lstm") & (summary.regime == LARGE)].iloc[0]
    assert (large.diverged, large.finished, large.reached) == (2, 1, 1)
    assert large.steps_to_target == INF and large.score_median == INF and large.spread == INF
    clip = summary[(summary.setup == "charlm_lstm") & (summary.regime == CLIP)].iloc[0]
    assert clip.steps_to_target == 30 and clip.spread == pytest.approx(0.02)
    assert list(tables["curves"].columns) == ["setup", "regime", "step", "loss_median", "loss_min", "loss_max",
                                              "seeds"]
    curves = tables["curves"]
    assert curves.loss_max.max() < 100  # the blow-up at the divergence step is left out
    assert {"setup", "regime", "seed", "diverged", "diverged_step", "final_metric", "steps_to_target"} <= set(
        tables["runs"].columns)
    # C3: the small lr never reaches the target in the fake runs; C5: clipping reaches it, but its spread equals
    # the small lr's (the same finals), so it is faster and not more predictable on both setups
    assert [v.verdict for v in exp.verdicts(tables)] == ["supported", "partly"]


def test_figures_are_written(sweep, tmp_path):
    runs, steps = sweep
    tables = {k: pd.read_csv(pd.io.common.StringIO(v.to_csv(index=False)))
              for k, v in exp.tables(runs, steps).items()}
    figures = exp.figures(tables, tmp_path)
    assert [f.name for f in figures] == ["small_lr_vs_clip_loss.png", "small_lr_vs_clip_final.png"]
    assert all((tmp_path / f.name).stat().st_size > 10_000 for f in figures)
    assert all("seeds" in f.caption for f in figures)
