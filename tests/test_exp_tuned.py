"""experiments/tuned.py end to end on a fake sweep: the grid grows until each arm's best lr is bracketed (at most
twice), ties are broken as written, the deciding block reuses shared configurations, and the verdicts follow."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments import tuned

METRIC = {"charlm_lstm": "bpc", "regression_mlp": "mse", "digits_deep_mlp": "accuracy", "digits_mlp": "accuracy",
          "digits_mlp_adam": "accuracy"}


def fake_sweep(best_k, effect=None, calls=None):
    """A sweep(stage, jobs) whose final metric is a bowl in k around ``best_k[config]`` (default 0), plus seed noise
    and ``effect[config]`` (in the metric's better direction); no clip diverges 2 half-decades above its best."""
    effect = effect or {}

    def value(setup, config, k, seed, split):
        metric, distance = METRIC[setup], k - best_k.get(config, 0)
        noise = np.random.default_rng([seed, hash(split) % 1000]).normal() * 0.01
        gain = effect.get("threshold" if "clip.threshold" in config else config, 0.0)
        if metric == "accuracy":
            return 0.9 - 0.03 * distance ** 2 + noise + gain
        if metric == "bpc":
            return 2.2 + 0.1 * distance ** 2 + noise - gain
        return 10 * math.exp(0.3 * distance ** 2 + noise - gain)

    def sweep(stage, jobs):
        if calls is not None:
            calls.append((stage, len(jobs)))
        runs, steps = [], []
        for i, job in enumerate(jobs):
            parsed = tuned.parse(job)
            split = next(o for o in job if o.startswith("task.split=")).split("=")[1]
            final = value(parsed["setup"], parsed["config"], parsed["k"], parsed["seed"], split)
            metric = METRIC[parsed["setup"]]
            diverged = parsed["config"] == "clip=none" and parsed["k"] - best_k.get("clip=none", 0) >= 2
            runs.append({"run": str(i), "overrides": job, "lr": 10 ** (parsed["k"] / 2), "metric": metric,
                         "higher_is_better": metric == "accuracy", "diverged": diverged,
                         "final_metric": None if diverged else final, "steps": 500, "grad_norm_median": 1.0})
            start = {"accuracy": 0.1, "bpc": 6.0, "mse": 1e4}[metric]
            middle = (start + final) / 2
            steps += [{"run": str(i), "step": s, f"val_{metric}": v} for s, v in ((0, start), (250, middle),
                                                                                 (500, final))]
        return pd.DataFrame(runs), pd.DataFrame(steps)

    return sweep


def test_the_grid_grows_until_the_best_lr_is_bracketed_at_most_twice():
    calls = []
    tuning = tuned.tune(fake_sweep({"clip=none": -3, "clip=autoclip": -6}, calls=calls))
    choices = tuned.choose(tuning).set_index(["setup", "arm"])
    assert [stage for stage, _ in calls] == ["tune-1", "tune-2", "tune-3"]
    none = choices.loc[("digits_mlp", "none")]
    assert none.k == -3 and none.bracketed and none.extensions == 2  # grid -2..1, then -3, then -4 (worse)
    stuck = choices.loc[("regression_mlp", "autoclip")]
    assert stuck.k == -4 and not stuck.bracketed  # its best (-6) lies beyond two extensions
    assert choices.loc[("digits_mlp", "norm1")].k == 0 and choices.loc[("digits_mlp", "norm1")].bracketed
    assert choices.loc[("charlm_lstm", "norm_tuned")].trials == 3 * 4 * len(tuned.TUNING_SEEDS)


def test_selection_breaks_ties_by_divergence_then_by_the_smaller_lr():
    rows = [{"setup": "digits_mlp", "config": "clip=none", "k": k, "seed": s, "metric": "accuracy", "higher": True,
             "final": 0.9, "diverged": (k == -1 and s == 0)} for k in (-2, -1, 0, 1) for s in (0, 1, 2)]
    rows += [{**r, "config": "clip=norm1", "diverged": False} for r in rows]
    choices = tuned.choose(pd.DataFrame(rows)).set_index("arm")
    assert choices.loc["norm1", "k"] == -2  # all tied: the smallest lr
    assert choices.loc["none", "k"] == -2 and not choices.loc["none", "bracketed"]  # -1 diverged once; -3 not run
    assert choices.loc["norm1", "extend"] == [-3, 2]  # a flat optimum: both sides of the plateau are run next


@pytest.fixture(scope="module")
def made():
    sweep = fake_sweep({"clip=none": -2}, effect={"clip=norm1": 0.05, "threshold": -0.2})
    tables = tuned.reproduce(sweep)
    return sweep, tables


def test_deciding_block_runs_every_choice_on_fresh_seeds_and_the_test_split(made):
    _, tables = made
    decided, choices = tables["decided"], tables["choices"]
    assert set(decided.seed) == set(tuned.BLOCKS["decide"]) and not set(decided.seed) & set(tuned.TUNING_SEEDS)
    cliff = decided[decided.setup == "charlm_lstm"]
    assert set(cliff.arm) == {"none", "norm1", "norm_tuned", "none_at_clip_lr"}
    tuned_arm = choices[(choices.setup == "charlm_lstm") & (choices.arm == "norm_tuned")].iloc[0]
    assert tuned_arm.threshold == 1.0  # the other thresholds are worse here, so it shares norm 1's runs
    assert (cliff[cliff.arm == "norm_tuned"].final.to_numpy() == cliff[cliff.arm == "norm1"].final.to_numpy()).all()
    at_clip_lr = cliff[cliff.arm == "none_at_clip_lr"]
    assert at_clip_lr.k.iloc[0] == choices[(choices.setup == "charlm_lstm") & (choices.arm == "norm1")].k.iloc[0]
    assert at_clip_lr.diverged.all() and not cliff[cliff.arm == "none"].diverged.any()


def test_verdicts_follow_the_rows(made):
    _, tables = made
    rows = tables["rows"]
    found = {(r.row, r.setup): r.verdict for r in tuned.final_rows(rows).itertuples()}
    harmless = "norm-1 clipping is harmless on every network"
    assert found[(harmless, "digits_mlp")] == "supported"  # norm 1 better by 0.05 on every seed
    assert found[("threshold 1 is as good as a tuned one", "charlm_lstm")] == "supported"  # the same runs
    assert found[("a small lr avoids divergence", "charlm_lstm")] == "supported"  # 10/10 diverge at norm 1's lr
    words = {v.statement.split(" (")[0]: v.verdict for v in tuned.verdicts(tables)}
    assert words[harmless] == "supported"
    assert words["clipping needs less lr trial and error"] == "undecided"  # 3 tuning seeds cannot decide
    assert any(v.verdict == "check passed" for v in tuned.verdicts(tables))


def test_blocks_that_disagree_are_undecided():
    base = {"row": "r", "setup": "s", "note": ""}
    rows = pd.DataFrame([{**base, "block": "decide", "verdict": "supported"},
                         {**base, "block": "verify", "verdict": "contradicted"},
                         {**base, "block": "pooled", "verdict": "supported"}])
    assert tuned.final_rows(rows).verdict.iloc[0] == "undecided"
    rows.loc[1, "verdict"] = "undecided"
    assert tuned.final_rows(rows).verdict.iloc[0] == "supported"


def test_verify_adds_a_second_block_and_figures_draw(made, tmp_path):
    sweep, tables = made
    stored = {k: v for k, v in tables.items() if k != "rows"}
    again = tuned.verify(sweep, stored)
    assert set(again["decided"].block) == {"decide", "verify"}
    assert set(again["decided"][again["decided"].block == "verify"].seed) == set(tuned.BLOCKS["verify"])
    assert "pooled" in set(again["rows"].block)
    for figure in tuned.figures(again, tmp_path):
        assert (tmp_path / figure.name).stat().st_size > 10_000


@pytest.mark.parametrize("kind,low,high,word", [
    ("superiority", 0.01, 0.2, "supported"), ("superiority", -0.2, -0.01, "contradicted"),
    ("superiority", -0.01, 0.01, "no detectable effect"), ("superiority", -0.1, 0.2, "undecided"),
    ("noninferiority", -0.04, 0.2, "supported"), ("noninferiority", -0.3, -0.06, "contradicted"),
    ("noninferiority", -0.06, 0.01, "undecided")])
def test_verdict_words(kind, low, high, word):
    iv = tuned.stats.Interval((low + high) / 2, low, high, 10, "sign-flip")
    assert tuned.word(iv, 0.05, kind) == word
