"""The sweep report's first lines: divergence first (Newcombe interval), each arm's score, the paired effect in words
with its direction and t-interval, n, and a warning when n is small; the title and plain numbers."""

import math

import pandas as pd
from scipy import stats as scipy_stats

from gradclip.report import answer
from gradclip.report.answer import how_to_read, title
from gradclip.report.tables import num


def arms(none, norm1, lr=16.0):
    """runs as load_runs gives them; None = diverged."""
    rows = []
    for clip, finals in (("none", none), ("norm1", norm1)):
        for seed, final in enumerate(finals):
            rows.append({"group": f"clip={clip}", "clip_method": "none" if clip == "none" else "norm", "seed": seed,
                         "metric": "bpc", "higher_is_better": False, "diverged": final is None,
                         "final_metric": 30.0 if final is None else final, "task": "charlm", "model": "lstm",
                         "lr": lr})
    return pd.DataFrame(rows)


def test_divergence_comes_first_then_each_arms_score_then_the_effect_with_its_direction():
    lines = answer(arms([2.6, 2.5, 2.7, None], [2.2, 2.2, 2.3, 2.2]))
    assert lines[0].startswith("**Diverged: 0 of 4 runs with clip=norm1, 1 of 4 with clip=none** — clip=norm1 "
                               "diverged in 1 fewer runs of 4 (rate difference clip=norm1 − clip=none: −25 points [")
    assert "clip=norm1 2.2 [2.2, 2.3] (4 runs); clip=none 2.6 [2.5, 2.7] (3 runs)" in lines[1]
    d = [2.2 - 2.6, 2.2 - 2.5, 2.3 - 2.7]
    half = scipy_stats.t.ppf(0.975, 2) * pd.Series(d).std() / math.sqrt(3)
    assert "on the 3 seeds where neither diverged: **clip=norm1 better by 0.367 bpc**" in lines[2]
    gain = -sum(d) / 3  # clip=norm1's advantage: the interval is oriented as the words are
    assert f"[+{num(gain - half)}, +{num(gain + half)}]" in lines[2]
    assert "includes 0" not in lines[2]  # both ends positive
    assert any(line.startswith("Warning: n = 4 per arm") for line in lines)
    assert any("lr 16 was chosen so that no clipping fails here" in line for line in lines)


def test_without_divergence_the_effect_leads_and_divergence_is_said_after():
    lines = answer(arms([2.6, 2.5, 2.7, 2.4, 2.5], [2.2, 2.2, 2.3, 2.2, 2.1], lr=4.0))
    assert lines[0].startswith("Final held-out bpc (lower is better), median of the seeds' values")
    assert lines[2] == "Diverged: none of the 10 runs."
    assert not any(line.startswith("Warning") or "lr 16" in line for line in lines)
    three = pd.concat([arms([2.5], [2.2]), arms([2.5], [2.2]).assign(group="clip=value")])
    assert answer(three) == []


def test_an_interval_across_zero_is_said_to_leave_the_direction_open():
    lines = answer(arms([2.6, 2.1, 2.7], [2.2, 2.5, 2.3]))
    assert "clip=norm1 better by" in lines[1] and "it includes 0, so the direction is not established" in lines[1]


def test_one_seed_gives_no_interval_and_a_warning():
    lines = answer(arms([2.6], [2.2]))
    assert "no interval" in lines[1] and any(line.startswith("Warning: n = 1") for line in lines)


def test_title_names_the_comparison_and_how_to_read_says_what_a_median_is():
    runs = arms([2.6, None], [2.2, 2.3])
    assert title(runs) == "clip=norm1 vs clip=none on charlm / lstm, 2 seeds each"
    three = pd.concat([runs, runs[runs.group == "clip=none"].assign(group="clip=value")])
    assert title(three) == "3 groups over clip on charlm / lstm, 2 seeds each"
    how = how_to_read(runs)
    assert how.startswith("How to read this: lower bpc is better") and "clip=norm1 − clip=none" in how


def test_numbers_are_plain():
    assert [num(250.4, 2), num(0.1234), num(2.50), num(12345.6), num(7)] == ["250", "0.123", "2.5", "12346", "7"]


def test_tables_give_a_diverged_run_no_score_and_plain_numbers():
    from dataclasses import asdict

    from conftest import run_summary
    from gradclip.report import group_table, run_table

    runs = pd.DataFrame([{**asdict(run_summary(seed=s, diverged=s == 1, diverged_step=4 if s == 1 else None,
                                                diverged_reason="loss > 5 x initial loss" if s == 1 else None,
                                                final_metric=34.8 if s == 1 else 2.5 + s, best_metric=6.7 if s == 1
                                                else 2.4 + s, wall_time_s=250.4)), "run": str(s), "group": "g"}
                         for s in range(3)])
    row = group_table(runs).iloc[0]
    assert row["final loss (runs that did not diverge)"] == "3.5 [2.5, 4.5]"
    assert row["best loss (median of the seeds' best, runs that did not diverge)"] == "3.4 [2.4, 4.4]"
    assert row["wall time (s)"] == "250 [250, 250]"
    assert list(run_table(runs).final) == ["2.5", "– (diverged; 34.8 there)", "4.5"]
