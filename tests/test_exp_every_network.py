"""experiments/every_network.py: the Caffe semantics check, its rule both ways, its tables and figures."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments import every_network as en


def fake_sweep(spec, seeds=(0, 1, 2, 3, 4)):
    """runs/steps as load_runs gives them. spec: {(setup, optim, clip): (finals per seed, clipped fraction)}."""
    runs, rows = [], []
    for (setup, optim, clip), (finals, share) in spec.items():
        for seed, final in zip(seeds, finals):
            run = str(len(runs))
            diverged = final is None
            runs.append({"run": run, "setup_name": setup, "optim": optim, "lr": 0.1 if optim == "sgd" else 1e-3,
                         "clip": clip, "clip_method": "none" if clip == "none" else "norm",
                         "clip_threshold": None if clip == "none" else 1.0, "seed": seed, "diverged": diverged,
                         "final_metric": 1e9 if diverged else final, "metric": "accuracy",
                         "higher_is_better": True, "steps_to_target": None if diverged or final < 0.95 else 400,
                         "clipped_fraction": share if clip != "none" else 0.0, "grad_norm_median": 0.5,
                         "grad_norm_max": 3.0, "target_metric": "error_rate", "target": 0.05, "task": "digits",
                         "group": f"setup={setup}, clip={clip}",
                         "overrides": [f"setup={setup}", f"clip={clip}", f"seed={seed}"]})
            rows += [{"run": run, "step": s, "seed": seed, "loss": 1.0} for s in range(3)]
    runs = pd.DataFrame(runs)
    return runs, pd.DataFrame(rows).merge(runs[["run", "group", "task"]], on="run")


SPEC = {("digits_mlp", "sgd", "none"): ([0.95, 0.96, 0.94, 0.95, 0.96], 0.0),
        ("digits_mlp", "sgd", "norm1"): ([0.97, 0.975, 0.97, 0.98, 0.97], 0.05),  # median above every no-clip seed
        ("digits_mlp_adam", "adam", "none"): ([0.95, 0.96, 0.94, 0.95, 0.96], 0.0),
        ("digits_mlp_adam", "adam", "norm1"): ([0.955, 0.95, 0.96, 0.94, 0.95], 0.08)}


@pytest.fixture(scope="module")
def made():
    return en.tables(*fake_sweep(SPEC))


def test_semantics_match_caffe_and_the_controls_differ(made):
    sem = made["semantics"]
    assert {"grad_scale", "threshold", "weight_decay", "momentum", "steps", "clipped", "clip_max_abs_diff",
            "update_max_abs_diff", "control_other_order_diff", "control_per_tensor_diff"} <= set(sem)
    assert sem.clip_max_abs_diff.max() < en.SEMANTICS_TOL and sem.update_max_abs_diff.max() < en.SEMANTICS_TOL
    clipped_wd = sem[sem.clipped & (sem.weight_decay > 0)]
    assert (clipped_wd.control_other_order_diff > 100 * en.SEMANTICS_TOL).all()  # the check can tell the order
    assert (sem[sem.clipped].control_per_tensor_diff > 100 * en.SEMANTICS_TOL).all()
    assert not sem[sem.grad_scale < 0.1].clipped.any()


def test_caffe_clip_formula():
    grads = [np.array([3.0, 0.0]), np.array([[4.0]])]
    clipped = en.caffe_clip(grads, 1.0)
    assert np.allclose(clipped[0], [0.6, 0.0]) and np.allclose(clipped[1], [[0.8]])
    assert en.caffe_clip(grads, 10.0)[0] is not grads[0] and np.allclose(en.caffe_clip(grads, 10.0)[0], grads[0])


def test_tables_have_the_documented_columns(made):
    assert set(made) == {"outcomes", "runs", "semantics"}
    out = made["outcomes"]
    assert {"network", "optim", "arm", "runs", "diverged", "final_median", "final_lo", "final_hi", "score_median",
            "score_best", "score_worst", "steps_to_target", "reached", "clipped_pct_median", "clipped_pct_max",
            "metric", "higher_is_better"} <= set(out)
    assert sorted(out.arm.unique()) == ["none", "norm 1"] and len(out) == 4
    assert {"network", "optim", "arm", "seed", "final_metric", "score", "clipped_pct", "steps_to_target"} <= set(
        made["runs"])


def verdict(tables):
    (v,) = en.verdicts(tables)
    assert v.claim == "C7"
    return v


def test_supported_when_it_helps_somewhere_and_hurts_nowhere(made):
    assert en.effect(made["outcomes"][made["outcomes"].network == "digits_mlp"]) == "helps"
    assert en.effect(made["outcomes"][made["outcomes"].network == "digits_mlp_adam"]) == "no effect"
    v = verdict(made)
    assert v.verdict == "supported" and "max abs difference" in v.numbers and "(n=5)" in v.numbers


@pytest.mark.parametrize("finals, share, expected, verdict_expected", [
    ([0.90, 0.91, 0.90, 0.92, 0.90], 0.05, "hurts", "not supported"),  # worse than every no-clip seed
    ([0.95, 0.95, 0.95, 0.95, 0.95], 0.05, "no effect", "partly"),
    ([0.95, 0.96, 0.94, 0.95, 0.96], 0.0, "does nothing", "partly"),  # never fired
    ([None, None, 0.95, 0.95, None], 0.05, "hurts", "not supported"),  # diverged seeds count as worst
])
def test_each_effect(finals, share, expected, verdict_expected):
    spec = {k: v for k, v in SPEC.items() if k[0] == "digits_mlp_adam"}
    spec |= {("digits_mlp", "sgd", "none"): SPEC[("digits_mlp", "sgd", "none")],
             ("digits_mlp", "sgd", "norm1"): (finals, share)}
    made = en.tables(*fake_sweep(spec))
    assert en.effect(made["outcomes"][made["outcomes"].network == "digits_mlp"]) == expected
    assert verdict(made).verdict == verdict_expected


def test_not_tested_when_semantics_differ_or_data_missing(made):
    sem = made["semantics"].copy()
    sem.loc[0, "update_max_abs_diff"] = 1e-3
    assert verdict({**made, "semantics": sem}).verdict == "not tested"
    assert verdict({}).verdict == "not tested"
    one_arm = made["outcomes"][made["outcomes"].arm == "none"]
    assert verdict({**made, "outcomes": one_arm}).verdict == "not tested"


def test_figures_from_csv_round_trip(made, tmp_path):
    for name, frame in made.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    loaded = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in made}
    assert verdict(loaded).verdict == "supported"
    figures = en.figures(loaded, tmp_path)
    assert [f.name for f in figures] == ["every_network_final.png"]
    assert (tmp_path / "every_network_final.png").stat().st_size > 10_000
    assert not math.isnan(loaded["outcomes"].final_median.iloc[0])
