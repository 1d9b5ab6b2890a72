"""docs/extending.md, run: its worked examples are copied into a copy of the repository, each component as the one
module and one yaml the page shows (nothing else edited), and trained through run.py."""

import json
import math
import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from conftest import ROOT

BLOCK = re.compile(r"```(?:python|yaml)\n# (file|append to): (\S+)\n(.*?)```", re.S)
EXPECTED = {"src/gradclip/clipping/normalize.py", "conf/clip/normalize.yaml", "src/gradclip/models/linear.py",
            "conf/model/linear.yaml", "src/gradclip/tasks/moons.py", "conf/task/moons.yaml", "conf/optim/radam.yaml",
            "experiments/clip_rate.py", "conf/experiment/clip_rate.yaml", "conf/setup/digits_mlp_narrow.yaml"}
APPENDED = ["experiments/tuned/design.py", "experiments/tuned/design.py"]  # one setup, one row: a line each


@pytest.fixture(scope="module")
def extended(tmp_path_factory):
    """A copy of the repository with the page's files written into it; the paths written."""
    copy = tmp_path_factory.mktemp("repo")
    for name in ("conf", "src", "experiments"):
        shutil.copytree(ROOT / name, copy / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / "run.py", copy / "run.py")
    written, appended = [], []
    for how, path, text in BLOCK.findall((ROOT / "docs" / "extending.md").read_text()):
        if how == "append to":
            assert len(text.strip().splitlines()) == 1, f"{path}: a declaration is one line"
            with open(copy / path, "a") as file:
                file.write("\n" + text)
            appended.append(path)
            continue
        assert not (copy / path).exists(), f"{path}: the example would overwrite a file of the repository"
        (copy / path).write_text(text)
        written.append(path)
    return copy, written, appended


def run(copy, *args):
    env = {**os.environ, "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy}", "CI": "true"}
    return subprocess.run([sys.executable, str(copy / "run.py"), *args, "logger=none"], cwd=copy, env=env,
                          text=True, capture_output=True, timeout=600)


def test_each_example_is_one_module_and_one_yaml(extended):
    """The counts the page states: clip, model, task and experiment 1 module + 1 yaml each, optimizer 1 yaml."""
    _, written, appended = extended
    assert sorted(written) == sorted(EXPECTED) and appended == APPENDED


def test_the_new_components_train_through_run_py(extended, tmp_path):
    copy, _, _ = extended
    sweep = tmp_path / "sweep"
    result = run(copy, "-m", "task=moons", "model=linear", "clip=normalize,none", "optim=radam", "optim.lr=0.05",
                 "seed=0", "steps=30", "eval_every=10", "diag_every=1", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    summaries = [json.loads((sweep / str(i) / "summary.json").read_text()) for i in range(2)]
    assert [(s["task"], s["model"], s["clip_method"], s["optim"], s["status"]) for s in summaries] == [
        ("moons", "linear", "normalize", "radam", "ok"), ("moons", "linear", "none", "radam", "ok")]
    assert summaries[0]["model_params"] == {"init_std": 0.01} and summaries[0]["clip_threshold"] == 1.0
    assert all(math.isfinite(s["final_metric"]) and s["final_metric"] > 0.7 for s in summaries)
    steps = pd.read_csv(sweep / "0" / "metrics.csv").query("step > 0")
    assert (steps.grad_norm_clipped - 1.0).abs().max() < 1e-6 and steps.cosine.min() > 1 - 1e-6
    assert (sweep / "report" / "report.md").is_file()


def test_a_bad_value_of_a_new_component_is_refused_on_one_line(extended, tmp_path):
    copy, _, _ = extended
    result = run(copy, "task=moons", "model=linear", "task.noise=-1", f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 2 and result.stderr.strip() == "error: task.noise=-1.0: must be a finite number >= 0"
    assert not (tmp_path / "run").exists()


def test_the_new_experiment_is_found_and_reports_its_claims(extended, tmp_path):
    copy, _, _ = extended
    sweep = tmp_path / "sweep"
    result = run(copy, "-m", "+experiment=clip_rate", "steps=20", "eval_every=10", f"hydra.sweep.dir={sweep}")
    assert result.returncode == 0, result.stderr[-2000:]
    report = (sweep / "report" / "report.md").read_text()
    assert "## Claims tested by `clip_rate`" in report and "digits_deep_mlp:" in report
    assert (sweep / "report" / "figures" / "clip_rate.png").stat().st_size > 5_000
    table = pd.read_csv(sweep / "report" / "tables" / "clip_rate.csv")
    assert list(table.setup_name) == ["digits_deep_mlp", "digits_mlp"] and list(table["count"]) == [3, 3]


def test_a_new_protocol_setup_and_row_are_one_yaml_and_one_line_each(extended, tmp_path):
    """The appended setup joins the rows whose arms it has, the appended row reaches every setup with its arms, and
    the setup's first tuning job trains through run.py."""
    copy, _, _ = extended
    env = {**os.environ, "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy}"}
    probe = ("import json; from experiments.tuned import design as d; r = {x.label: list(x.setups) for x in d.ROWS}; "
             "print(json.dumps({'rows': r, 'job': d.job('digits_mlp_narrow', d.cells('digits_mlp_narrow', 'norm1')[0][1], "
             "d.GRID[0], d.TUNING_SEEDS[0], 'validation')}))")
    found = json.loads(subprocess.run([sys.executable, "-c", probe], cwd=copy, env=env, text=True,
                                      capture_output=True, check=True).stdout)
    rows = found["rows"]
    assert "digits_mlp_narrow" in rows["norm-1 clipping is harmless on every network"]
    assert "digits_mlp_narrow" not in rows["clipping trains faster"]  # C5: only where clipping is used
    assert "digits_mlp_narrow" not in rows["threshold 1 is as good as a tuned one"]  # no tuned-threshold arm
    assert rows["norm-1 clipping trains no slower"] == ["charlm_lstm", "regression_mlp", "digits_deep_mlp", "digits_mlp",
                                                        "digits_mlp_adam", "charlm_gpt", "digits_mlp_narrow"]
    result = run(copy, *found["job"], "+experiment=tuned", "steps=20", "eval_every=10",
                 f"hydra.run.dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (summary["setup_name"], summary["clip"], summary["status"]) == ("digits_mlp_narrow", "norm1", "ok")
    assert summary["model_params"]["width"] == 16
