"""experiments/adaptive.py: arm labels, its rule both ways on synthetic runs, its tables and figures."""

import math

import pandas as pd
import pytest

from experiments import adaptive

ARMS = {  # arm -> (clip_method, clip_threshold, clip_params)
    "none": ("none", None, {}),
    "norm 0.1": ("norm", 0.1, {"threshold": 0.1}), "norm 1": ("norm", 1.0, {"threshold": 1.0}),
    "norm 10": ("norm", 10.0, {"threshold": 10.0}),
    "autoclip": ("autoclip", None, {"percentile": 10.0}), "agc": ("agc", None, {"clip_factor": 0.01}),
    "agc 0.16": ("agc", None, {"clip_factor": 0.16}), "zclip": ("zclip", None, {"z_thresh": 2.5, "alpha": 0.97, "max_grad_norm": 1.0}),
}


def fake_sweep(spec, seeds=(0, 1, 2)):
    """runs/steps as load_runs gives them. spec: {(setup, arm): finals per seed (None = diverged)}."""
    runs, rows = [], []
    for (setup, arm), finals in spec.items():
        method, threshold, params = ARMS[arm]
        metric, higher = ("mse", False) if setup.startswith("regression") else ("accuracy", True)
        for seed, final in zip(seeds, finals):
            run = str(len(runs))
            diverged = final is None
            runs.append({"run": run, "setup_name": setup, "clip": method, "clip_method": method,
                         "clip_threshold": threshold, "clip_params": {"name": method, "method": method, **params},
                         "seed": seed, "lr": 0.01, "diverged": diverged, "diverged_step": 5 if diverged else None,
                         "final_metric": 1e9 if diverged else final, "metric": metric, "higher_is_better": higher,
                         "steps_to_target": None if diverged else 300,
                         "clipped_fraction": 0.0 if arm == "none" else 0.5,
                         "target_metric": metric, "target": 20.0, "task": setup, "group": f"setup={setup}, {arm}",
                         "overrides": [f"setup={setup}", f"clip={method}", f"seed={seed}"]})
            rows += [{"run": run, "step": s, "seed": seed, "loss": 1.0} for s in range(3)]
    runs = pd.DataFrame(runs)
    return runs, pd.DataFrame(rows).merge(runs[["run", "group", "task"]], on="run")


def spec(regression=None, deep=None):
    """Fixed thresholds: best is norm 10 (MSE 10) and norm 1 (accuracy 0.9); adaptive arms as given."""
    base = {("regression_mlp", "none"): [None] * 3, ("regression_mlp", "norm 0.1"): [100, 110, 120],
            ("regression_mlp", "norm 1"): [30, 31, 32], ("regression_mlp", "norm 10"): [10, 10.5, 9.5],
            ("digits_deep_mlp", "none"): [None] * 3, ("digits_deep_mlp", "norm 0.1"): [0.5, 0.5, 0.5],
            ("digits_deep_mlp", "norm 1"): [0.9, 0.91, 0.89], ("digits_deep_mlp", "norm 10"): [None, None, 0.3]}
    for arm in ("autoclip", "agc", "agc 0.16", "zclip"):
        base[("regression_mlp", arm)] = (regression or {}).get(arm, [50, 50, 50])
        base[("digits_deep_mlp", arm)] = (deep or {}).get(arm, [0.6, 0.6, 0.6])
    return base


def made(s):
    return adaptive.tables(*fake_sweep(s))


def verdict(tables):
    (v,) = adaptive.verdicts(tables)
    assert v.claim == "B2"
    return v


def test_arm_labels():
    assert adaptive.arm_of("none", None, {})[:2] == ("none", "none")
    assert adaptive.arm_of("norm", math.inf, {})[:2] == ("none", "none")  # threshold inf never clips
    assert adaptive.arm_of("norm", 0.1, {})[:2] == ("norm 0.1", "fixed")
    assert adaptive.arm_of("agc", None, {"clip_factor": 0.16}) == ("AGC λ 0.16", "adaptive", 0.16, False)
    assert adaptive.arm_of("autoclip", None, {"percentile": 10.0})[3] is True
    assert adaptive.arm_of("zclip", float("nan"), {"z_thresh": 2.5, "max_grad_norm": 1.0})[::3] == ("ZClip z 2.5", True)
    assert adaptive.arm_of("zclip", None, {"z_thresh": 2.5, "max_grad_norm": None})[::3] == ("ZClip z 2.5 no cap", False)


def test_tables_have_the_documented_columns():
    t = made(spec())
    assert set(t) == {"outcomes", "runs", "comparison"}
    out = t["outcomes"]
    assert {"setup", "arm", "family", "method", "setting", "default_setting", "tuning_cost", "runs", "diverged",
            "final_median", "final_lo", "final_hi", "score_median", "steps_to_target", "reached",
            "clipped_pct_median", "metric", "higher_is_better"} <= set(out)
    assert len(out) == 16
    assert set(out[out.family == "fixed"].tuning_cost) == {3} and set(out[out.family == "adaptive"].tuning_cost) == {1}
    reg = out[out.setup == "regression_mlp"]
    assert list(reg.arm)[:4] == ["none", "norm 0.1", "norm 1", "norm 10"]
    comp = t["comparison"]
    assert {"setup", "arm", "best_fixed", "best_fixed_score", "gap_text", "as_good", "matches"} <= set(comp)
    assert set(comp[comp.setup == "regression_mlp"].best_fixed) == {"norm 10"}
    assert set(comp[comp.setup == "digits_deep_mlp"].best_fixed) == {"norm 1"}


def test_supported_when_a_default_method_matches_everywhere():
    t = made(spec(regression={"agc": [10.8, 10.5, 11.0]}, deep={"agc": [0.89, 0.9, 0.88]}))
    v = verdict(t)
    assert v.verdict == "supported" and "best default method's: AGC λ 0.01" in v.numbers


def test_partly_when_it_matches_on_some_setups():
    assert verdict(made(spec(regression={"zclip": [10, 10, 10]}))).verdict == "partly"


def test_not_supported_when_no_method_matches():
    v = verdict(made(spec()))
    assert v.verdict == "not supported"


def test_a_diverged_seed_breaks_a_match():
    t = made(spec(regression={"autoclip": [10, 10, None]}, deep={"autoclip": [0.9, 0.9, 0.9]}))
    comp = t["comparison"].set_index(["setup", "arm"])
    assert comp.loc[("regression_mlp", "AutoClip p10"), "as_good"]  # median 10 is as good as 10
    assert not comp.loc[("regression_mlp", "AutoClip p10"), "matches"]
    assert verdict(t).verdict == "partly"


def test_a_non_default_setting_does_not_decide_the_verdict():
    t = made(spec(regression={"agc 0.16": [10, 10, 10]}, deep={"agc 0.16": [0.9, 0.9, 0.9]}))
    v = verdict(t)
    assert v.verdict == "not supported" and "AGC λ 0.16: supported" in v.numbers


def test_not_tested_without_fixed_thresholds_or_runs():
    assert verdict({}).verdict == "not tested"
    t = made(spec())
    only_adaptive = t["outcomes"][t["outcomes"].family != "fixed"]
    assert verdict({"outcomes": only_adaptive}).verdict == "not tested"


def test_figures_from_csv_round_trip(tmp_path):
    t = made(spec(regression={"agc": [10.8, 10.5, 11.0]}, deep={"agc": [0.89, 0.9, 0.88]}))
    for name, frame in t.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    loaded = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in t}
    assert verdict(loaded).verdict == "supported"
    figures = adaptive.figures(loaded, tmp_path)
    assert [f.name for f in figures] == ["adaptive_final.png"]
    assert (tmp_path / "adaptive_final.png").stat().st_size > 10_000


@pytest.mark.parametrize("arm", ["autoclip", "zclip"])
def test_each_default_method_can_win(arm):
    t = made(spec(regression={arm: [10, 10, 10]}, deep={arm: [0.9, 0.9, 0.9]}))
    v = verdict(t)
    assert v.verdict == "supported" and adaptive.NAMES[arm] in v.numbers.split("best default method's: ")[1][:12]


def test_an_arm_identical_to_a_fixed_threshold_is_named_as_such():
    """ZClip at its default cap of 1 can be norm-1 clipping in disguise: the verdict says so when every seed ended
    with exactly norm 1's final metric (finished runs only), and not when one seed differs."""
    same = verdict(made(spec(deep={"zclip": [0.9, 0.91, 0.89]})))
    assert "ZClip z 2.5 0.9" in same.numbers and "seed for seed the same final metric as norm 1" in same.numbers
    differs = verdict(made(spec(deep={"zclip": [0.9, 0.91, 0.88]})))
    assert "seed for seed" not in differs.numbers
