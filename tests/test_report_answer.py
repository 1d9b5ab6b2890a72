"""The sweep report's first lines: the paired difference between two arms with its t-interval, divergence with
Newcombe's interval, n, and a warning when n is small."""

import math

import pandas as pd
from scipy import stats as scipy_stats

from gradclip.report import answer


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


def test_the_answer_names_the_clipped_arm_first_with_a_paired_t_interval():
    lines = answer(arms([2.6, 2.5, 2.7, None], [2.2, 2.2, 2.3, 2.2]))
    assert lines[0].startswith("**clip=norm1** vs **clip=none**, 4 seeds each, paired by seed")
    d = [2.2 - 2.6, 2.2 - 2.5, 2.3 - 2.7]
    half = scipy_stats.t.ppf(0.975, 2) * pd.Series(d).std() / math.sqrt(3)
    assert "on the 3 seeds where neither diverged" in lines[1] and "clip=norm1 better by 0.367" in lines[1]
    assert f"{sum(d) / 3 - half:+.3g} to {sum(d) / 3 + half:+.3g}" in lines[1]
    assert lines[2].startswith("Diverged: 0/4 runs with clip=norm1, 1/4 with clip=none (difference -25 points")
    assert any(line.startswith("Warning: n = 4 per arm") for line in lines)
    assert any("lr 16 was chosen so that no clipping fails here" in line for line in lines)


def test_no_warning_at_five_seeds_no_default_note_elsewhere_and_no_answer_for_three_arms():
    lines = answer(arms([2.6, 2.5, 2.7, 2.4, 2.5], [2.2, 2.2, 2.3, 2.2, 2.1], lr=4.0))
    assert not any(line.startswith("Warning") or "lr 16" in line for line in lines)
    three = pd.concat([arms([2.5], [2.2]), arms([2.5], [2.2]).assign(group="clip=value")])
    assert answer(three) == []


def test_one_seed_gives_no_interval_and_a_warning():
    lines = answer(arms([2.6], [2.2]))
    assert "no interval" in lines[1] and any(line.startswith("Warning: n = 1") for line in lines)
