"""experiments/lr_sensitivity: its measures against formulas written out here (and mutants of them caught), its grids
against the tuned lrs they were placed from, its job list, and the whole path on a fake sweep and on a tiny real one."""

import math
import re
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

from conftest import ROOT
from experiments import lr_sensitivity
from experiments.lr_sensitivity import design, rules
from experiments.tuned import design as tuned_design


# ---------------------------------------------------------------- the measures, step by step
def reference_sensitivity(losses, untrained, clamp_best=True, clamp_each=True):
    """Wortsman et al.'s LR sensitivity of one seed, in plain loops on losses (lower is better)."""
    clamped = [min(x, untrained) if clamp_each else x for x in losses]
    best = min(clamped) if clamp_best else min(losses)
    return sum(x - best for x in clamped) / len(losses)


def reference_width(losses, diverged, reference, smallest, count_diverged=False):
    good = 0
    for loss, gone in zip(losses, diverged):
        if (count_diverged or not gone) and loss <= reference + smallest:
            good += 1
    return 0.25 * good


def random_seeds(rng, seeds=6, lrs=9):
    losses = 2 + rng.exponential(1.5, (seeds, lrs))
    diverged = rng.random((seeds, lrs)) < 0.25
    losses[diverged] = 9.0  # what a diverged run scores: its untrained model
    return losses, diverged, np.full(seeds, 6.0)


@pytest.mark.parametrize("mutant", [{}, {"clamp_each": False}, {"clamp_best": False}])
def test_sensitivity_is_wortsmans_formula(mutant):
    losses, _, untrained = random_seeds(np.random.default_rng(0))
    losses[0] = 7.0  # a seed on which no lr beats its untrained model: L* clamped, sensitivity 0
    found = rules.sensitivity(-losses, -untrained)  # the score scale: higher is better
    expected = np.array([reference_sensitivity(row, u, **mutant) for row, u in zip(losses, untrained)])
    assert found[0] == 0
    assert np.allclose(found, expected) == (mutant == {})  # the formula agrees; each mutant is caught


@pytest.mark.parametrize("mutant", [{}, {"count_diverged": True}])
def test_width_counts_the_good_lrs_that_did_not_diverge(mutant):
    losses, diverged, _ = random_seeds(np.random.default_rng(1))
    losses[diverged[:, 0], 0] = 2.0  # a diverged run that ends low (a spike near the end) never counts
    found = rules.width(-losses, diverged, -2.5, 0.3)
    expected = np.array([reference_width(row, gone, 2.5, 0.3, **mutant) for row, gone in zip(losses, diverged)])
    assert np.allclose(found, expected) == (mutant == {})


def test_sensitivity_and_width_broadcast_over_tables_and_seeds():
    losses, diverged, untrained = random_seeds(np.random.default_rng(2), seeds=12)
    stacked = rules.sensitivity(-losses.reshape(3, 4, -1), -untrained.reshape(3, 4))
    assert np.array_equal(stacked.ravel(), rules.sensitivity(-losses, -untrained))
    assert rules.width(-losses.reshape(3, 4, -1), diverged.reshape(3, 4, -1), -2.5, 0.3).shape == (3, 4)


def test_a_run_is_read_with_the_protocols_divergence_rule():
    """Diverged: a batch loss above 5 x the first (even where the run went on), or the run ended as diverged
    (non-finite gradients); its final metric is then NaN, and its untrained score is its first evaluation."""
    runs = pd.DataFrame({"run": ["0", "1", "2"], "overrides": [["x=0"], ["x=1"], ["x=2"]], "lr": 0.1,
                         "metric": "bpc", "higher_is_better": False, "diverged": [False, False, True],
                         "final_metric": [2.0, 2.1, None], "clipped_fraction": [0.0, 0.5, 1.0], "steps": 3})
    steps = pd.DataFrame([{"run": r, "step": 0, "val_bpc": 6.5 + i, "loss": math.nan} for i, r in enumerate("012")]
                         + [{"run": r, "step": s + 1, "loss": loss, "grad_norm": 1.0} for r, losses in
                            {"0": (2.0, 12.1, 1.0), "1": (2.0, 9.9, 1.0), "2": (2.0, 2.0)}.items()
                            for s, loss in enumerate(losses)])
    found = rules.read_runs(runs, steps, {("x=0",): {"seed": 0}, ("x=1",): {"seed": 1}, ("x=2",): {"seed": 2}})
    assert found.diverged.tolist() == [True, False, True]
    assert found.final.isna().tolist() == [True, False, True] and found.start.tolist() == [6.5, 7.5, 8.5]
    assert found.loss_ratio.tolist() == pytest.approx([6.05, 4.95, 1.0]) and found.seed.tolist() == [0, 1, 2]


# ---------------------------------------------------------------- the declarations
def test_each_grid_is_placed_around_the_tuned_lrs_it_was_read_from():
    """The tuned lrs of results/tuned/choices.csv (k half-decades) lie at least 0.75 decade inside the declared grid
    of quarter-decades spanning 3 decades; the runs cover 0.5 decade more on each side."""
    choices = pd.read_csv(ROOT / "results" / "tuned" / "choices.csv").set_index(["setup", "arm"])
    for name, setup in design.SETUPS.items():
        declared, runs = design.grid(name), design.runs_grid(name)
        assert (declared.stop - 1 - declared.start) * design.STEP >= 3
        assert runs.start == declared.start - 2 and runs.stop == declared.stop + 2  # 0.5 decade either side
        tuned = [2 * int(choices.loc[(name, arm), "k"]) for arm in ("none", "norm1") if (name, arm) in choices.index]
        assert sorted(tuned) == sorted(setup.optima) or name not in {s for s, _ in choices.index}
        for j in setup.optima:
            assert min(j - declared.start, declared.stop - 1 - j) >= design.MIN_INSIDE, (name, j)
    for j in (-1, 0, 3):
        assert float(design.lr_scale(j)) == pytest.approx(10 ** (j / 4), rel=1e-3)


def test_the_block_is_fresh_and_every_run_is_scored_on_the_test_split(monkeypatch):
    """... and an arm that needs a tuned threshold runs only where one is declared, never invented."""
    used = set(tuned_design.TUNING_SEEDS) | {s for block in tuned_design.BLOCKS.values() for s in block}
    assert len(design.BLOCK) >= 10 and not set(design.BLOCK) & used
    jobs = lr_sensitivity.plan()
    assert all("task.split=test" in o and not any(x.startswith("steps=") for x in o) for _, o in jobs)
    per_setup = pd.DataFrame([meta for meta, _ in jobs]).groupby(["setup", "arm"]).size()
    assert (per_setup == 17 * len(design.BLOCK)).all()
    assert set(per_setup.index) == {(s, a) for s, spec in design.SETUPS.items() for a in spec.arms}
    gpt_tuned = [o for meta, o in jobs if meta["arm"] == "norm_tuned"]  # its threshold, the tuned protocol's choice
    assert len(gpt_tuned) == 17 * len(design.BLOCK) and all("clip.threshold=0.41" in o for o in gpt_tuned)
    monkeypatch.setitem(design.SETUPS, "charlm_gpt", replace(design.SETUPS["charlm_gpt"], threshold=None))
    assert ("charlm_gpt", "norm_tuned") not in {(m["setup"], m["arm"]) for m, _ in lr_sensitivity.plan()}


@pytest.mark.parametrize("setup", list(design.SETUPS))
def test_a_run_evaluates_only_what_the_measures_read(setup, make_cfg, tmp_path):
    """Every run of the experiment evaluates at step 0 (L0) and at its last step, nothing between; and evaluating
    changes nothing the run computes: a run evaluated every 2 steps has the same losses, norms and final metric."""
    from conftest import train_one

    overrides = [*design.EXTRA, *design.job(setup, "norm1", 0, design.BLOCK[0])]
    assert make_cfg(*overrides).eval_every == make_cfg(*overrides).steps
    short = [*overrides, "steps=6"]
    runs = {every: train_one(make_cfg(*short, *([f"eval_every={every}"] if every else [])), tmp_path / str(every))
            for every in (None, 2)}
    metrics = {every: pd.read_csv(tmp_path / str(every) / "metrics.csv") for every in runs}
    assert metrics[None].dropna(subset=["val_loss"]).step.tolist() == [0, 6]
    assert metrics[2].dropna(subset=["val_loss"]).step.tolist() == [0, 2, 4, 6]
    assert runs[None].final_metric == runs[2].final_metric
    columns = ["loss", "grad_norm", "grad_norm_clipped"]
    pd.testing.assert_frame_equal(metrics[None][columns], metrics[2][columns])

def test_a_new_arm_is_one_line(monkeypatch):
    """An arm declared in ARMS and named by a setup runs on its grid and joins the rows that name it."""
    assert "qk_z" not in design.ARMS
    both = ("clip=none", "model.qk_norm=true", "model.z_loss=1e-3")
    monkeypatch.setitem(design.ARMS, "qk_z", design.Arm("qk-layernorm and z-loss 1e-3", both))
    gpt = design.SETUPS["charlm_gpt"]
    monkeypatch.setitem(design.SETUPS, "charlm_gpt", replace(gpt, arms=gpt.arms + ("qk_z",), threshold=0.5))
    jobs = [o for meta, o in lr_sensitivity.plan() if meta["setup"] == "charlm_gpt"]
    assert sum("model.z_loss=1e-3" in o for o in jobs) == 17 * len(design.BLOCK)
    assert sum("clip.threshold=0.5" in o for o in jobs) == 17 * len(design.BLOCK)
    assert design.Row("C5", "qk and z", "qk_z", "none", "width").setups == ("charlm_gpt",)


# ---------------------------------------------------------------- the whole path on a fake sweep
def facts(job):
    values = dict(o.split("=", 1) for o in job)
    j = round(4 * math.log10(float(values["optim.lr_scale"])))
    return values["setup"], values["clip"], j, int(values["seed"])


def fake_sweep(effect: float):
    """sweep(stage, jobs) -> (runs, steps): the final metric a bowl in j around the grid's centre, norm 1's bowl
    ``effect`` quarter-decades wider on each side; with an effect, no clip diverges from 3 quarter-decades above the
    centre on."""
    def sweep(stage, jobs):
        runs, steps = [], []
        for i, job in enumerate(jobs):
            setup, clip, j, seed = facts(job)
            metric = {"charlm_lstm": "bpc", "charlm_gpt": "bpc", "regression_mlp": "mse"}.get(setup, "accuracy")
            distance = max(0.0, abs(j - design.SETUPS[setup].centre) - (effect if clip == "norm1" else 0) - 1)
            noise = np.random.default_rng([seed, j + 100, len(clip)]).normal() * 0.01
            reference = design.SETUPS[setup].reference
            final, start = {"bpc": (reference + 0.1 * distance ** 2 + noise, 6.7),
                            "mse": (reference * math.exp(0.3 * distance ** 2 + noise), 2e4),
                            "accuracy": (reference - 0.05 * distance ** 2 + noise, 0.1)}[metric]
            diverged = clip == "none" and effect > 0 and j - design.SETUPS[setup].centre >= 3
            runs.append({"run": str(i), "overrides": job, "lr": 10 ** (j / 4), "metric": metric, "steps": 20,
                         "higher_is_better": metric == "accuracy", "diverged": diverged, "grad_norm_median": 1.0,
                         "final_metric": None if diverged else final, "clipped_fraction": 0.5 * (clip != "none")})
            steps += [{"run": str(i), "step": 0, f"val_{metric}": start, "loss": math.nan},
                      {"run": str(i), "step": 1, "loss": 3.0, "grad_norm": 1.0},
                      {"run": str(i), "step": 2, "loss": 30.0 if diverged else 2.0, "grad_norm": 1.0}]
            steps += [] if diverged else [{"run": str(i), "step": 20, f"val_{metric}": final, "loss": 1.0,
                                           "grad_norm": 1.0}]
        return pd.DataFrame(runs), pd.DataFrame(steps)

    return sweep


@pytest.fixture(scope="module")
def made():
    return lr_sensitivity.reproduce(fake_sweep(effect=2))


def test_a_wide_clipped_optimum_is_supported_in_words_with_its_direction(made):
    final = rules.final_rows(made["rows"])
    found = final.set_index(["row", "setup"])
    wider = found.loc[("clipping widens the range of good lrs", "charlm_lstm")]
    assert wider.verdict == "supported" and wider.estimate == pytest.approx(1.0)  # 2 lrs more on each side
    assert wider.shifts == "-0.5: supported · 0: supported · +0.5: supported"
    assert found.loc[("a tuned threshold widens the range of good lrs", "charlm_gpt")].verdict != "not tested"
    verdicts = {v.statement.split(" (")[0]: v for v in lr_sensitivity.verdicts(made)}
    card = verdicts["clipping widens the range of good lrs"]
    assert card.claim == "C5" and card.verdict == "supported"
    assert "norm 1 wider by 1 decade [1, 1]" in card.numbers
    assert re.match(r"norm 1: width [\d.]+ \[", card.table.a.iloc[0])
    assert verdicts["a tuned threshold widens the range of good lrs"].verdict != "not tested"
    assert "less sensitive by" in verdicts["clipping makes the final loss less sensitive to the lr"].numbers


def test_no_effect_gives_no_supported_verdict():
    """With every arm alike, no 'better than' row is supported, and the 'as good as' rows (B4) are."""
    tables = lr_sensitivity.reproduce(fake_sweep(effect=0))
    words = {kind: {v.verdict for row, v in zip(design.ROWS, lr_sensitivity.verdicts(tables)) if row.kind == kind}
             for kind in ("superiority", "noninferiority")}
    assert "supported" not in words["superiority"] and words["noninferiority"] == {"supported"}


def test_figures_draw_from_the_tables(made, tmp_path):
    for figure in lr_sensitivity.figures(made, tmp_path):
        assert (tmp_path / figure.name).stat().st_size > 10_000 and "log axis" in figure.caption


def test_a_verdict_that_a_shifted_grid_decides_otherwise_becomes_undecided():
    base = {"claim": "C5", "row": "r", "setup": "s", "note": "", "estimate": 0.5}
    rows = pd.DataFrame([{**base, "block": "-0.5", "verdict": "no detectable effect"},
                         {**base, "block": "0", "verdict": "supported"},
                         {**base, "block": "+0.5", "verdict": "undecided"}])
    pick = rules.final_rows(rows).iloc[0]
    assert pick.verdict == "undecided" and "no detectable effect on the grid shifted by -0.5" in pick.note
    kept = rules.final_rows(rows.assign(verdict=["undecided", "supported", "supported"])).iloc[0]
    assert kept.verdict == "supported"


@pytest.mark.slow
def test_a_tiny_real_run_goes_the_whole_way(tmp_path):
    """`python experiments/reproduce.py lr_sensitivity` at 4 steps: every run, the tables, the report's C5 card."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, str(ROOT / "experiments" / "reproduce.py"), "lr_sensitivity", "--results",
                           str(tmp_path), "--override", "steps=4", "--override", "eval_every=2"], cwd=ROOT, text=True,
                          capture_output=True, timeout=3600)
    assert done.returncode == 0, done.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "lr_sensitivity" / "runs.csv")
    assert len(runs) == len(lr_sensitivity.plan())
    assert {"runs", "measures", "clipped", "rows"} <= {p.stem for p in (tmp_path / "lr_sensitivity").glob("*.csv")}
    report = (tmp_path / "REPORT.md").read_text()
    assert "lr_sensitivity.png" in report and "clipping widens the range of good lrs" in report


@pytest.mark.slow  # four real runs: 30-70 s, most of it building the tasks
def test_the_cost_is_measured_per_setup_and_printed(capsys):
    """One real run per setup (here 3 steps), its CPU seconds, and the whole experiment's cost from them."""
    cost = lr_sensitivity.estimate(2, ["steps=3", "eval_every=3"]).set_index("setup")
    assert list(cost.index) == list(design.SETUPS) and (cost.steps == 3).all()
    arms = pd.Series({name: len(setup.arms) for name, setup in design.SETUPS.items()})
    lrs = 2 * (design.CORE + design.SHIFT) + 1
    assert (cost.cpu_seconds_per_run > 0).all() and (cost.runs == lrs * len(design.BLOCK) * arms).all()
    total = (cost.cpu_seconds_per_run * cost.runs).sum() / 3600
    assert f"{cost.runs.sum()} runs, at most {total:.2g} core-hours: about {total / 2:.2g} h on 2 free cores" in \
        capsys.readouterr().out


def test_spikes_after_warm_up_are_counted_by_both_rules():
    """Written out: a loss spike is a loss above the median of the 50 before it by 6 x 1.4826 x their MAD; a norm
    spike a norm more than 6 SDs from the mean of up to 128 before it (64 at least); neither counts in the first
    10 % of steps. Mutants: no warm-up cut, a window that includes the current step."""
    rng = np.random.default_rng(0)
    loss, norm = 2 + 0.01 * rng.standard_normal(400), 1 + 0.01 * rng.standard_normal(400)
    loss[[20, 200]] += 1.0  # one spike in warm-up (step 21 of 400), one after
    norm[[30, 250, 251]] += 1.0  # the first in warm-up (and before 64 norms are stored)
    steps = pd.DataFrame({"run": "r", "step": np.arange(1, 401), "loss": loss, "grad_norm": norm})
    found = rules.spikes(steps).loc["r"]
    assert found.loss_spikes == 1
    assert found.norm_spikes == 2  # step 252 too: 6 SDs from a window that now holds one spike
    counted = [(i + 1) for i in range(64, 400) if abs(norm[i] - norm[max(0, i - 128):i].mean())
               > 6 * norm[max(0, i - 128):i].std(ddof=1) and i + 1 > 40]
    assert counted == [251, 252] and found.norm_spikes == len(counted)
