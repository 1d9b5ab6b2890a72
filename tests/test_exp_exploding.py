"""experiments/exploding/: its rules both ways on synthetic tables, its tables on a synthetic sweep, its figures."""

import numpy as np
import pandas as pd
import pytest

from experiments import exploding


def synthetic_sweep(n_steps=200, eval_every=25):
    """Two setups x 2 seeds as load_runs gives them: 'spiky' has a 50x gradient spike at step 110 that sends the
    held-out metric back to where it started; 'calm' has a smoothly decaying gradient and a noisy loss."""
    runs, rows = [], []
    for setup, metric, higher in [("spiky", "bpc", False), ("calm", "accuracy", True)]:
        for seed in (0, 1):
            run = f"{setup}{seed}"
            rng = np.random.default_rng(seed)
            rows.append({"run": run, "seed": seed, "step": 0, f"val_{metric}": 0.1 if higher else 6.0})
            for step in range(1, n_steps + 1):
                g = 1.0 + 0.1 * rng.random() + (3.0 if step < 5 else 0.0)
                loss = 4.0 * np.exp(-step / 80) + 0.05 * rng.random()
                if setup == "spiky" and step == 110:
                    g = 50.0
                if setup == "spiky" and step == 111:
                    loss = 10.0
                row = {"run": run, "seed": seed, "step": step, "loss": loss, "grad_norm": g, "skipped": 0,
                       "clipped": 0}
                if step % eval_every == 0:
                    progress = 1 - np.exp(-step / 60)
                    if setup == "spiky" and step == 125:
                        progress = 0.0
                    row[f"val_{metric}"] = (0.1 + 0.8 * progress) if higher else 6.0 - 4.0 * progress
                rows.append(row)
            runs.append({"run": run, "seed": seed, "setup_name": f"{setup}_setup", "task": setup, "metric": metric,
                         "higher_is_better": higher, "steps": n_steps, "diverged": False, "diverged_step": None,
                         "diverged_reason": None, "lr": 1.0, "best_metric": 0.0, "final_metric": 0.0,
                         "spike_factor": 1.5, "spike_window": 50, "clip": "none", "group": setup,
                         "overrides": [f"setup={setup}_setup", f"seed={seed}"]})
    runs = pd.DataFrame(runs)
    steps = pd.DataFrame(rows).merge(runs[["run", "group", "task"]], on="run")
    return runs, steps


@pytest.fixture(scope="module")
def synthetic_tables():
    return exploding.tables(*synthetic_sweep())


def test_tables_have_the_documented_columns(synthetic_tables):
    t = synthetic_tables
    assert set(t) == {"runs", "tails", "traces", "episodes"}
    assert {"setup", "seed", "grad_norm_median", "max_over_median", "share_above_tail", "sudden_spikes",
            "diverged", "loss_spikes"} <= set(t["runs"])
    assert {"quantile", "ratio_to_median"} <= set(t["tails"])
    assert {"step", "grad_norm_max", "grad_norm_median", "loss"} <= set(t["traces"])
    assert len(t["traces"]) <= 4 * exploding.TRACE_BINS
    assert {"first_spike_step", "grad_spike", "eval_step", "metric_after", "metric_best_before", "undone",
            "progress", "undone_share", "diverged_here", "train_undone_share"} <= set(t["episodes"])
    runs = t["runs"].set_index("run")
    assert runs.loc["spiky0", "sudden_spikes"] >= 1 and runs.loc["calm0", "sudden_spikes"] == 0
    spike = t["episodes"].query("run == 'spiky0' and first_spike_step == 110").iloc[0]
    assert spike.eval_step == 125 and spike.undone_share == pytest.approx(1.0)  # back to the start


def test_verdicts_on_the_synthetic_sweep(synthetic_tables):
    c1, c2 = exploding.verdicts(synthetic_tables)
    assert (c1.claim, c1.verdict) == ("C1", "partly")  # cliffs in 'spiky', not in 'calm'
    assert (c2.claim, c2.verdict) == ("C2", "supported")  # both spiky seeds lose all progress at step 110
    assert "calm_setup" in c1.numbers and "n=" in c1.numbers


def runs_row(setup, seed, sudden=0, **kw):
    return {"run": f"{setup}{seed}", "setup": setup, "seed": seed, "sudden_spikes": sudden,
            "sudden_spikes_after_10pct": sudden, "max_over_median": 20.0 if sudden else 2.0,
            "share_above_tail": 0.01 if sudden else 0.0, "max_at_step": 7, "diverged": False, **kw}


@pytest.mark.parametrize("sudden,expected", [
    ({"a": [1, 1, 0], "b": [2, 1, 1]}, "supported"),
    ({"a": [1, 1, 0], "b": [0, 0, 1]}, "partly"),
    ({"a": [1, 0, 0], "b": [0, 0, 0]}, "not supported"),
])
def test_c1_rule(sudden, expected):
    runs = pd.DataFrame([runs_row(s, i, v) for s, values in sudden.items() for i, v in enumerate(values)])
    assert exploding.verdict_c1(runs).verdict == expected


def episode(setup, seed, share, grad=True, progress=1.0, diverged=False):
    return {"run": f"{setup}{seed}", "setup": setup, "seed": seed, "grad_spike": grad, "progress": progress,
            "undone_share": share, "diverged_here": diverged, "train_undone_share": share}


RUNS = pd.DataFrame([runs_row(s, i) for s in "ab" for i in range(3)])


@pytest.mark.parametrize("episodes,expected", [
    ([episode("a", 0, 0.8), episode("a", 1, np.inf, diverged=True)], "supported"),  # 2/3 seeds of a
    ([episode("a", 0, 0.8), episode("b", 1, 0.1)], "partly"),  # only 1/3 seeds
    ([episode("a", 0, 0.2), episode("a", 1, -0.1), episode("a", 2, 0.3)], "not supported"),
    ([episode("a", 0, 0.9, grad=False), episode("a", 1, 0.9, grad=False)], "not tested"),  # loss spikes only
    ([episode("a", 0, np.nan, progress=0.0)], "not tested"),  # before any progress
    ([], "not tested"),
])
def test_c2_rule(episodes, expected):
    frame = pd.DataFrame(episodes, columns=["run", "setup", "seed", "grad_spike", "progress", "undone_share",
                                            "diverged_here", "train_undone_share"])
    assert exploding.verdict_c2(frame, RUNS).verdict == expected


def test_missing_tables_are_not_tested():
    assert [v.verdict for v in exploding.verdicts({})] == ["not tested", "not tested"]
    assert [v.verdict for v in exploding.verdicts({"runs": pd.DataFrame()})] == ["not tested", "not tested"]


def test_tables_survive_a_csv_round_trip(synthetic_tables, tmp_path):
    for name, frame in synthetic_tables.items():
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    reread = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in synthetic_tables}
    assert [v.verdict for v in exploding.verdicts(reread)] == ["partly", "supported"]


def test_figures_are_written(synthetic_tables, tmp_path):
    figures = exploding.figures(synthetic_tables, tmp_path)
    assert [f.name for f in figures] == ["exploding_traces.png", "exploding_tails.png", "exploding_undone.png"]
    assert all((tmp_path / f.name).stat().st_size > 10_000 and f.caption for f in figures)


def test_sudden_spike_definition():
    decay = pd.Series([100, 80, 40, 20, 10, 9, 9, 8, 9, 9, 8, 9.0])  # a huge gradient at init that falls: no spike
    assert not exploding.sudden_spikes(decay, decay.median()).any()
    noise = pd.Series(np.random.default_rng(0).uniform(0.1, 0.6, 200))  # batch noise around the median: no spike
    assert not exploding.sudden_spikes(noise, noise.median()).any()
    rise = pd.Series([1, 1, 1, 1, 12, 1, 1, np.inf, 1.0])  # a tenfold jump, and a non-finite norm
    assert exploding.sudden_spikes(rise, 1.0).tolist() == [False] * 4 + [True, False, False, True, False]
