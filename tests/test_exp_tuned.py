"""experiments/tuned end to end on a fake sweep: the grid grows until each arm's best lr is bracketed (at most
twice), ties are broken as written, the C3 length and the targets are fixed from tuning, the deciding block reuses
shared configurations, identical configurations are not compared, and the verdicts follow."""

import math

import numpy as np
import pandas as pd
import pytest

from experiments import tuned
from experiments.tuned import design, rules, stages

METRIC = {"charlm_lstm": "bpc", "regression_mlp": "mse", "digits_deep_mlp": "accuracy", "digits_mlp": "accuracy",
          "digits_mlp_adam": "accuracy", "charlm_gpt": "bpc", "charlm_gpt_spiky": "bpc"}


def job_facts(job):
    values = dict(o.split("=", 1) for o in job if not o.startswith("clip"))
    clip = " ".join(o for o in job if o.startswith(("clip", "optim=")))
    return {"setup": values["setup"], "config": clip, "k": round(2 * math.log10(float(values["optim.lr_scale"]))),
            "seed": int(values["seed"]), "split": values["task.split"], "steps": int(values.get("steps", 500))}


def fake_sweep(best_k, effect=None, calls=None):
    """A sweep(stage, jobs) whose final metric is a bowl in k around ``best_k[config]`` (default 0), plus seed noise
    and ``effect[config]`` (in the metric's better direction); no clip diverges 2 half-decades above its best. The
    training loss falls as 1 / (1 + lr x step); skip-step skips step 100 and AdaGC clips a fifth of the tensors
    on even seeds."""
    effect = effect or {}

    def value(f):
        metric, distance = METRIC[f["setup"]], f["k"] - best_k.get(f["config"], 0)
        noise = np.random.default_rng([f["seed"], hash(f["split"]) % 1000]).normal() * 0.01
        gain = effect.get("threshold" if "clip.threshold" in f["config"] else f["config"], 0.0)
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
            f = job_facts(job)
            final, metric = value(f), METRIC[f["setup"]]
            diverged = f["config"] == "clip=none" and f["k"] - best_k.get("clip=none", 0) >= 2
            lr = 10 ** (f["k"] / 2)
            runs.append({"run": str(i), "overrides": job, "lr": lr, "metric": metric,
                         "higher_is_better": metric == "accuracy", "diverged": diverged,
                         "final_metric": None if diverged else final, "steps": f["steps"], "grad_norm_median": 1.0})
            start = {"accuracy": 0.1, "bpc": 6.0, "mse": 1e4}[metric]
            n = f["steps"]
            evals = [(0, start), (n // 2, (start + final) / 2), (int(0.8 * n), final + 0.001), (n, final)]
            steps += [{"run": str(i), "step": s, f"val_{metric}": v, "loss": math.nan} for s, v in evals]
            losses = 3.0 / (1 + lr * np.arange(1, n + 1) / 50) * (1 + 0.01 * (f["seed"] % 3))
            if diverged:
                losses[5:] = 100.0
                losses = losses[:6]
            steps += [{"run": str(i), "step": s + 1, "loss": v} for s, v in enumerate(losses)]
            if f["seed"] % 2 == 0 and "skip_step" in f["config"] and not diverged:
                steps.append({"run": str(i), "step": 100, "skipped_spike": 1})
            if f["seed"] % 2 == 0 and "adagc" in f["config"]:
                steps.append({"run": str(i), "step": 1, "tensor_clip_share": 0.2})
        return pd.DataFrame(runs), pd.DataFrame(steps)

    return sweep


def test_the_grid_grows_until_the_best_lr_is_bracketed_at_most_twice():
    calls = []
    tuning = stages.tune(fake_sweep({"clip=none": -3, "clip=autoclip": -6}, calls=calls))
    choices = stages.choose(tuning).set_index(["setup", "arm"])
    assert [stage for stage, _ in calls] == ["tune-1", "tune-2", "tune-3"]
    none = choices.loc[("digits_mlp", "none")]
    assert none.k == -3 and none.bracketed and none.extensions == 2  # grid -2..1, then -3, then -4 (worse)
    stuck = choices.loc[("regression_mlp", "autoclip")]
    assert stuck.k == -4 and not stuck.bracketed  # its best (-6) lies beyond two extensions
    assert choices.loc[("digits_mlp", "norm1")].k == 0 and choices.loc[("digits_mlp", "norm1")].bracketed
    assert choices.loc[("charlm_lstm", "norm_tuned")].trials == 3 * 4 * len(design.TUNING_SEEDS)


def test_selection_breaks_ties_by_divergence_then_by_the_smaller_lr():
    rows = [{"setup": "digits_mlp", "config": "clip=none", "k": k, "seed": s, "metric": "accuracy", "higher": True,
             "final": 0.9, "start": 0.1, "diverged": (k == -1 and s == 0)} for k in (-2, -1, 0, 1) for s in (0, 1, 2)]
    rows += [{**r, "config": "clip=norm1", "diverged": False} for r in rows]
    choices = stages.choose(pd.DataFrame(rows)).set_index("arm")
    assert choices.loc["norm1", "k"] == -2  # all tied: the smallest lr
    assert choices.loc["none", "k"] == -2 and not choices.loc["none", "bracketed"]  # -1 diverged once; -3 not run
    assert choices.loc["norm1", "extend"] == [-3, 2]  # a flat optimum: both sides of the plateau are run next


@pytest.fixture(scope="module")
def made():
    sweep = fake_sweep({"clip=none": -2}, effect={"clip=norm1": 0.05, "threshold": -0.2})
    return sweep, tuned.reproduce(sweep)


def test_deciding_block_runs_every_arm_on_fresh_seeds_the_test_split_and_the_c3_length(made):
    _, tables = made
    decided, choices, plan = tables["decided"], tables["choices"], tables["plan"].set_index("setup")
    for setup, seeds in decided.groupby("setup").seed:
        assert set(seeds) == set(design.SETUPS[setup].blocks["decide"]) and not set(seeds) & set(design.TUNING_SEEDS)
    assert set(decided[decided.setup == "charlm_lstm"].seed) == set(design.BLOCKS["decide"])
    spiky = design.SETUPS["charlm_gpt_spiky"].blocks  # B3 redeclared: seeds no earlier declaration ran
    assert not {s for b in spiky.values() for s in b} & {s for b in design.BLOCKS.values() for s in b}
    cliff = decided[decided.setup == "charlm_lstm"]
    assert set(cliff.arm) == {"none", "norm1", "norm_tuned", *design.C3_ARMS}
    assert (cliff[cliff.arm == "norm_tuned"].run.to_numpy() == cliff[cliff.arm == "norm1"].run.to_numpy()).all()
    chosen = choices.set_index(["setup", "arm"])
    none_k = chosen.loc[("charlm_lstm", "none"), "k"]
    assert set(cliff[cliff.arm == "none_small"].k) == {none_k - 2}
    assert set(cliff[cliff.arm == "none_smaller"].k) == {none_k - 3}
    assert set(cliff[cliff.arm == "none_at_clip_lr"].k) == {chosen.loc[("charlm_lstm", "norm1"), "k"]}
    assert set(cliff[cliff.arm.isin(design.C3_ARMS)].steps) == {plan.loc["charlm_lstm", "c3_steps"]}
    assert set(cliff[~cliff.arm.isin(design.C3_ARMS)].steps) == {500}
    assert cliff[cliff.arm == "none_at_clip_lr"].diverged.all() and not cliff[cliff.arm == "none"].diverged.any()
    # every tuning run of tuned no clip and norm 1 reaches the target; the deciding runs are measured against it
    targeted = plan[plan.target.notna()]  # setups without no clip and norm 1 have no steps-to-target row
    assert set(plan.index) - set(targeted.index) == {"charlm_gpt_spiky"}
    assert (targeted.reached_by.str.split("/").str[0] == targeted.reached_by.str.split("/").str[1]).all()
    assert np.isfinite(cliff[cliff.arm.isin(["none", "norm1"])].reached).mean() >= 0.9


def test_verdicts_follow_the_rows(made):
    _, tables = made
    final = rules.final_rows(tables["rows"])
    found = {(r.row, r.setup): r.verdict for r in final.itertuples()}
    harmless = "norm-1 clipping is harmless on every network"
    assert found[(harmless, "digits_mlp")] == "supported"  # norm 1 better by 0.05 on every seed
    # tuning picked threshold 1 on the char LSTM: the same runs, so no evidence either way
    assert found[("threshold 1 is as good as a tuned one", "charlm_lstm")] == "not tested"
    assert found[("a very small lr avoids divergence", "charlm_lstm")] == "supported"  # 10/10 diverge at norm 1's lr
    words = {v.statement.split(" (")[0]: v.verdict for v in tuned.verdicts(tables)}
    assert words[harmless] == "supported"
    assert any(v.verdict == "check passed" for v in tuned.verdicts(tables))
    assert not any("P(" in str(unit) for unit in tables["rows"].unit)  # one scale per row, never switched


def test_the_pooled_seeds_decide_and_the_blocks_are_shown_as_a_replication():
    base = {"row": "r", "setup": "s", "note": "", "claim": "C", "estimate": 0.1}
    rows = pd.DataFrame([{**base, "block": "decide", "verdict": "supported"},
                         {**base, "block": "verify", "verdict": "no detectable effect"},
                         {**base, "block": "pooled", "verdict": "supported"}])
    pick = rules.final_rows(rows).iloc[0]
    assert pick.verdict == "supported" and pick.blocks == "decide + verify, pooled"
    assert "same direction" in pick.replication


def test_verify_adds_a_second_block_and_figures_draw(made, tmp_path):
    sweep, tables = made
    stored = {k: v for k, v in tables.items() if k != "rows"}
    again = tuned.verify(sweep, stored)
    assert set(again["decided"].block) == {"decide", "verify"}
    for setup, seeds in again["decided"][again["decided"].block == "verify"].groupby("setup").seed:
        assert set(seeds) == set(design.SETUPS[setup].blocks["verify"])
    assert "pooled" in set(again["rows"].block)
    for figure in tuned.figures(again, tmp_path):
        assert (tmp_path / figure.name).stat().st_size > 10_000
    assert "tuned_B3_curves.png" in {figure.name for figure in tuned.figures(again, tmp_path)}


def test_the_spike_remedies_diagnostics_are_kept_per_run(made):
    """B3's runs keep where the remedy acted (skip-step's skipped steps) and its per-step shares (AdaGC's tensors
    clipped), and every run its binned training loss curve."""
    decided = made[1]["decided"]
    spiky = decided[decided.setup == "charlm_gpt_spiky"].set_index("seed")
    skip, adagc = spiky[spiky.arm == "skip_step"], spiky[spiky.arm == "adagc"]
    assert set(skip.arm) and (skip.events[skip.index % 2 == 0] == "100:skipped_spike").all()
    assert (skip.events[skip.index % 2 == 1] == "").all()
    assert (adagc.tensor_clip_share[adagc.index % 2 == 0] == 0.2).all()
    assert adagc.tensor_clip_share[adagc.index % 2 == 1].isna().all()
    points = stages.curve_points(decided.train_curve.iloc[0])
    assert len(points) == stages.CURVE_POINTS and points[-1][0] == decided.steps.iloc[0]


@pytest.mark.parametrize("kind,low,high,word", [
    ("superiority", 0.01, 0.2, "supported"), ("superiority", -0.2, -0.01, "contradicted"),
    ("superiority", -0.01, 0.01, "no detectable effect"), ("superiority", -0.1, 0.2, "undecided"),
    ("noninferiority", -0.04, 0.2, "supported"), ("noninferiority", -0.3, -0.06, "contradicted"),
    ("noninferiority", -0.06, 0.01, "undecided")])
def test_verdict_words(kind, low, high, word):
    iv = rules.stats.Interval((low + high) / 2, low, high, 10, "sign-flip")
    assert rules.word(iv, 0.05, kind) == word


@pytest.mark.parametrize("words,quantifier,expected", [
    (["supported", "undecided", "undecided"], "some", "supported"),
    (["supported", "undecided", "undecided"], "every", "undecided"),
    (["contradicted", "undecided", "undecided"], "some", "undecided"),  # "can get stuck": one counterexample is none
    (["contradicted", "undecided", "undecided"], "every", "contradicted"),
    (["contradicted", "contradicted"], "some", "contradicted"),
    (["supported", "contradicted"], "every", "setup-dependent")])
def test_aggregation_follows_the_rows_quantifier(words, quantifier, expected):
    assert rules.across(words, quantifier) == expected


def test_holm_runs_over_every_test_of_a_claim_not_per_row():
    """Two rows of one claim on two setups: four tests in one family. p = 0.02 passes 0.05 alone but not Holm's
    0.05 / 4 for the smallest; another claim's tests are a family of their own."""
    rows = pd.DataFrame([{"claim": "C5", "row": r, "setup": s, "block": "decide", "verdict": "supported", "p": 0.02,
                          "note": ""} for r in ("r1", "r2") for s in ("s1", "s2")]
                        + [{"claim": "C6", "row": "r3", "setup": "s1", "block": "decide", "verdict": "supported",
                            "p": 0.02, "note": ""}])
    found = rules.holm(rows)
    assert (found[found.claim == "C5"].verdict == "undecided").all()
    assert "Holm over the claim's 4 tests" in found.note.iloc[0]
    assert found[found.claim == "C6"].verdict.iloc[0] == "supported"


def test_divergence_is_read_at_three_factors(made):
    _, tables = made
    rows = tables["rows"]
    note = rows[(rows.row == "a very small lr avoids divergence") & (rows.setup == "charlm_lstm")].note.iloc[0]
    assert note.startswith("diverged a/b at 3 x:") and "5 x:" in note and "10 x:" in note


def test_a_stuck_verdict_says_why_when_its_interval_alone_would_not():
    """Clipping ends far better, yet the small-lr arm is still improving: contradicted, and the figure says why."""
    from experiments.tuned import plots
    from gradclip import stats

    rng = np.random.default_rng(0)
    values = 5 + rng.normal(0, 0.1, 20)
    m = {"smallest": 0.05, "values": values, "gain_a": np.full(20, 0.01), "gain_b": 0.3 + rng.normal(0, 0.01, 20),
         "interval": lambda confidence: stats.paired_interval(values, confidence)}
    verdict, _, note = rules._stuck(m, m["interval"](0.95), 0.95)
    assert verdict == "contradicted" and rules.B_IMPROVING in note
    assert plots.reason(pd.Series({"a": "norm1_long", "b": "none_small", "note": note})) == \
        "no clip at 0.1 x its lr still improving"
    assert plots.reason(pd.Series({"a": "norm1_long", "b": "none_small", "note": "late gain ..."})) == ""


def test_a_new_setup_runs_only_its_own_jobs(tmp_path, monkeypatch):
    """The stages' sweeps are found by what they ran: jobs some part already lists are not run again, whatever
    their order; only the others run, as a new part; each run comes back once."""
    import yaml

    import experiments.runner

    ran = []

    def fake_run_sweep(name, results, jobs, extra, folder, jobs_file):
        listed = yaml.safe_load(jobs_file.read_text())
        ran.append((folder.name, len(listed)))
        for i in range(len(listed)):
            (folder / str(i)).mkdir(parents=True, exist_ok=True)
            (folder / str(i) / "summary.json").write_text("{}")

    def fake_load_runs(folder):
        listed = yaml.safe_load((folder.parent / f"{folder.name}.jobs.yaml").read_text())
        runs = pd.DataFrame({"run": [str(i) for i in range(len(listed))], "overrides": listed})
        return runs, pd.DataFrame({"run": runs.run, "loss": 1.0})

    monkeypatch.setattr(experiments.runner, "run_sweep", fake_run_sweep)
    monkeypatch.setattr(experiments.runner, "load_runs", fake_load_runs)
    sweep = tuned.sweeper(tmp_path, 2, [])
    old = [["setup=charlm_lstm", f"seed={s}"] for s in range(3)]
    new = [["setup=charlm_gpt", f"seed={s}"] for s in range(2)]
    runs, steps = sweep("tune-1", old)
    assert ran == [("tune-1", 3)] and len(runs) == 3
    runs, steps = sweep("tune-1", new + old)  # the new setup sorts first
    assert ran[1:] == [("tune-1+2", 2)]
    assert sorted(map(tuple, runs.overrides)) == sorted(map(tuple, new + old)) and set(steps.run) == set(runs.run)
    runs, _ = sweep("tune-1", old[:2])
    assert len(ran) == 2 and sorted(map(tuple, runs.overrides)) == sorted(map(tuple, old[:2]))  # nothing ran


@pytest.mark.parametrize("args, said", [
    (("bpc", 0.055, 0.044, 0.067, "norm 1", "no clip"), "norm 1 better by 0.055 bpc [0.044, 0.067]"),
    (("bpc", -0.055, -0.067, -0.044, "norm 1", "no clip"), "no clip better by 0.055 bpc [0.044, 0.067]"),
    (("decade", 0.2, -4.99e-10, 0.417, "norm 1", "no clip", "wider"), "norm 1 wider by 0.2 decade [0, 0.417]"),
    (("decade", 0.2, -0.01, 0.417, "norm 1", "no clip", "wider"), "norm 1 wider by 0.2 decade [-0.01, 0.417]"),
])
def test_an_effect_is_said_with_its_direction_and_a_bound_at_zero_as_zero(args, said):
    from experiments.tuned.wording import effect_words

    assert effect_words(*args) == said
