"""experiments/direction.py: its rule both ways on synthetic tables, its tables on fake runs, its figures."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments import direction

COSINE = {"none": math.nan, "norm": 1.0, "value": 0.6, "per_tensor": 0.85, "random": 0.0}


def fake_sweep(spec, n_steps=30, seeds=(0, 1, 2)):
    """runs/steps as load_runs gives them. spec: {(setup, method): (clip share, final metric, diverged)}."""
    runs, rows = [], []
    for (setup, method), (share, final, diverged) in spec.items():
        metric, higher = ("mse", False) if setup.startswith("regression") else ("accuracy", True)
        threshold = None if method == "none" else 1.0
        for seed in seeds:
            run = str(len(runs))
            rng = np.random.default_rng(len(runs))
            last = n_steps // 2 if diverged else n_steps
            rows.append({"run": run, "step": 0, "seed": seed, "loss": math.nan})
            for step in range(1, last + 1):
                clipped = int(method != "none" and step <= share * n_steps)
                pre = 5.0 if clipped else 0.5
                post = {"norm": 1.0, "random": 1.0, "value": 3.0, "per_tensor": 1.7}.get(method, pre)
                post = post if clipped else pre
                cos = COSINE[method] + 0.01 * rng.standard_normal() * (method in ("value", "per_tensor"))
                rows.append({"run": run, "step": step, "seed": seed, "loss": 1.0, "grad_norm": pre,
                             "grad_norm_clipped": post, "clip_scale": post / pre, "clipped": clipped, "skipped": 0,
                             "update_norm": 0.1, "cosine": cos if clipped else 1.0 + 1e-7 * rng.standard_normal()})
            if diverged:
                rows.append({"run": run, "step": last + 1, "seed": seed, "loss": math.inf})
            runs.append({"run": run, "setup_name": setup, "clip": "norm1" if method == "norm" else method,
                         "clip_method": method, "clip_threshold": threshold, "seed": seed, "diverged": diverged,
                         "diverged_step": last + 1 if diverged else None,
                         "final_metric": 1e9 if diverged else final + 0.001 * seed, "metric": metric,
                         "higher_is_better": higher, "clipped_fraction": share if method != "none" else 0.0,
                         "task": setup, "group": f"setup={setup}, clip={method}",
                         "overrides": [f"setup={setup}", f"clip={method}", f"seed={seed}"]})
    runs = pd.DataFrame(runs)
    steps = pd.DataFrame(rows).merge(runs[["run", "group", "task"]], on="run")
    return runs, steps


SPEC = {("regression_mlp", "none"): (0, 0, True), ("regression_mlp", "norm"): (1.0, 20.0, False),
        ("regression_mlp", "value"): (1.0, 40.0, False), ("regression_mlp", "per_tensor"): (1.0, 25.0, False),
        ("regression_mlp", "random"): (1.0, 21.0, False),
        ("digits_mlp", "none"): (0, 0.95, False), ("digits_mlp", "norm"): (0.05, 0.95, False),
        ("digits_mlp", "value"): (0.0, 0.95, False), ("digits_mlp", "per_tensor"): (0.03, 0.95, False),
        ("digits_mlp", "random"): (0.3, 0.5, False)}


@pytest.fixture(scope="module")
def made():
    runs, steps = fake_sweep(SPEC)
    return direction.tables(runs, steps)


def test_tables_have_the_documented_columns(made):
    assert set(made) == {"outcomes", "runs", "direct"}
    out = made["outcomes"]
    assert {"setup", "method", "threshold", "runs", "diverged", "final_median", "final_lo", "final_hi",
            "score_median", "clipped_pct_median", "clipped_steps", "cos_steps", "cos_min", "cos_median", "cos_q05",
            "cos_q95", "post_over_threshold_max", "unclipped_cos_noise"} <= set(out)
    assert len(out) == len(SPEC)
    assert list(out[out.setup == "digits_mlp"].method) == direction.METHODS  # fixed order
    norm = out[(out.setup == "regression_mlp") & (out.method == "norm")].iloc[0]
    assert norm.cos_min == 1.0 and norm.clipped_steps == 90 and math.isclose(norm.post_over_threshold_max, 1.0)
    assert out[(out.setup == "digits_mlp") & (out.method == "value")].iloc[0].cos_steps == 0
    assert {"setup", "method", "seed", "diverged", "final_metric", "score", "clipped_pct", "cos_median",
            "cos_min"} <= set(made["runs"])
    direct = made["direct"]
    assert {"case", "grad_scale", "method", "pre_norm", "post_norm", "fired", "cosine", "logged_cosine"} <= set(direct)
    fired = direct[direct.fired & (direct.method == "norm")]
    assert len(fired) >= 2 and (fired.one_minus_cos.abs() < 1e-9).all() and (fired.post_norm < 1 + 1e-5).all()
    assert (direct[direct.fired & (direct.method == "value")].cosine < 0.999).all()


def verdict(tables):
    (v,) = direction.verdicts(tables)
    assert v.claim == "C4"
    return v


def test_check_passes(made):
    v = verdict(made)
    assert v.verdict == "check passed"
    assert "random-direction clipping was as good as norm clipping on 1/2 setups" in v.numbers


def test_check_fails_when_the_contrast_keeps_the_direction(made):
    out = made["outcomes"].copy()
    out.loc[out.method == "per_tensor", ["cos_median", "cos_min"]] = 1.0
    assert verdict({**made, "outcomes": out}).verdict == "check failed"
    out = made["outcomes"].copy()
    out.loc[out.method == "value", "cos_steps"] = 0  # value never clipped anywhere
    assert verdict({**made, "outcomes": out}).verdict == "check failed"


@pytest.mark.parametrize("column, value", [("cos_min", 0.999), ("post_over_threshold_max", 1.5)])
def test_check_fails_when_norm_turns_or_oversteps(made, column, value):
    out = made["outcomes"].copy()
    out.loc[(out.method == "norm") & (out.setup == "digits_mlp"), column] = value
    assert verdict({**made, "outcomes": out}).verdict == "check failed"


def test_check_fails_when_the_direct_check_fails(made):
    direct = made["direct"].copy()
    direct.loc[direct.method == "norm", "cosine"] = 0.9
    assert verdict({**made, "direct": direct}).verdict == "check failed"


def test_not_tested_without_data(made):
    assert verdict({}).verdict == "not tested"
    out = made["outcomes"].copy()
    out["cos_steps"] = 0  # clipped, but no cosine logged (e.g. diag_every larger than the run)
    assert verdict({**made, "outcomes": out}).verdict == "not tested"
    direct = made["direct"].assign(fired=False)  # the direct check must have fired
    assert verdict({**made, "direct": direct}).verdict == "check failed"


def test_figures_from_csv_round_trip(made, tmp_path):
    for name, frame in made.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    loaded = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in made}
    assert verdict(loaded).verdict == "check passed"
    figures = direction.figures(loaded, tmp_path / "figs")
    assert [f.name for f in figures] == ["direction_cosine.png", "direction_final.png"]
    for f in figures:
        assert (tmp_path / "figs" / f.name).stat().st_size > 10_000 and f.name.startswith("direction_")
