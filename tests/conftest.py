"""Shared fixtures: configs composed exactly as the CLI composes them (same conf/, same schemas)."""

import os
import subprocess
import sys
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
