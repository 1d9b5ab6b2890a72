"""Shared fixtures: configs composed exactly as the CLI composes them (same conf/, same schemas)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from gradclip.config import register_schemas

ROOT = Path(__file__).resolve().parents[1]
os.environ["WANDB_MODE"] = "disabled"
os.environ["WANDB_ERROR_REPORTING"] = "false"


@pytest.fixture
def make_cfg():
    """compose(overrides) -> the config `python run.py <overrides>` would run, with W&B off by default."""
    register_schemas()

    def _compose(*overrides: str):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=["logger=none", *overrides])

    return _compose


def run_cli(*args: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python run.py ARGS` in a subprocess, as a user would type it (cwd decides where outputs land)."""
    env = {**os.environ, "CI": "true"}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=timeout)


def session_processes(sid: int, wait: float = 1.0) -> list[str]:
    """The command lines of the processes of session ``sid`` still alive after up to ``wait`` s (from /proc)."""
    deadline = time.time() + wait
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                state, _, _, session = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[:4]
                command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:  # gone meanwhile
                continue
            if int(session) == sid and state != "Z":
                found.append(command)
        if not found or time.time() > deadline:
            return found
        time.sleep(0.05)


def build(cfg, device: str = "cpu"):
    """The task (set up) and model a run of ``cfg`` trains, built as training builds them."""
    import torch

    from gradclip.config import parts

    task, model, _, _ = parts(cfg)
    task.setup(torch.device(device))
    return task, model.build(task)


def train_one(cfg, job_dir: Path, name: str = "run", overrides=()):
    """One job trained alone (a population of one); its RunSummary, or the failure dict."""
    from gradclip.sweep import Job
    from gradclip.training import run_jobs

    return run_jobs([Job(cfg, Path(job_dir), "g", name, list(overrides))])[0]


def run_summary(**fields):
    """A RunSummary with plain values for every field not given: fixtures for the experiments' tables."""
    import math

    from gradclip.summary import RunSummary
    from gradclip.sweep import stamp

    defaults = dict(
        setup_name="custom", task="t", model="m", model_params={}, clip="none", clip_method="none",
        clip_threshold=math.inf, clip_params={}, optim="sgd", lr=0.1, lr_scale=1.0, seed=0, steps=10, status="ok",
        diverged=False, diverged_step=None, diverged_reason=None, steps_run=10, metric="loss", higher_is_better=False,
        final_metric=1.0, final_eval={}, best_metric=1.0, best_step=10, target_metric="loss", target=None,
        steps_to_target=None, clipped_fraction=0.0, nonfinite_steps=0, loss_spikes=0, spike_factor=1.5,
        spike_window=50, initial_loss=3.0, grad_norm_median=1.0, grad_norm_max=1.0, cosine_median=None,
        final_train_loss=1.0, step_time_ms_median=1.0, group="g", name="n", overrides=[], device="cpu", threads=1,
        versions={}, data={}, wall_time_s=1.0, resumed_from_step=0, population=1, batched_steps=0, **stamp())
    return RunSummary(**{**defaults, **fields})
