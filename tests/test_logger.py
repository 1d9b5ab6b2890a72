"""W&B trouble never stops a job: online without a key or a server falls back offline, exceptions are one warning."""

import json
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import wandb

from gradclip import logger
from gradclip.logger import RunLogger
from gradclip.component import typed

from conftest import train_one


@pytest.fixture(autouse=True)
def isolated_wandb(tmp_path, monkeypatch):
    """No credentials, no user settings, a fresh wandb singleton (it reads the environment once) and no warning yet."""
    home = tmp_path / "home"
    home.mkdir()
    (home / ".netrc").write_text("machine example.com login user password secret\n")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("NETRC", str(home / ".netrc"))
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(home / "wandb"))
    for name in ["WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "WANDB_BASE_URL"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "disabled")  # RunLogger sets these two; monkeypatch restores them
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(logger, "_warned", False)
    wandb.teardown()
    yield
    wandb.teardown()


@pytest.fixture
def unreachable(monkeypatch):
    """A well-formed API key and a W&B server address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", url)
    return url


def stderr_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def one_job(cfg, job_dir) -> RunLogger:
    run_logger = RunLogger(cfg, str(job_dir), group="g", name=job_dir.name, config={"lr": 0.1})
    run_logger.log({"loss": 1.0, "cosine": float("nan")}, step=0)
    run_logger.finish({"status": "ok", "data": {"n": 1}})
    assert run_logger.run is None
    return run_logger


def test_online_without_api_key_warns_once_and_logs_offline(make_cfg, tmp_path, capsys):
    cfg = typed("logger", make_cfg("logger=wandb", "logger.mode=online").logger)
    started = time.perf_counter()
    for job in ["a", "b"]:
        one_job(cfg, tmp_path / job)
        assert len(list((tmp_path / job / "wandb").glob("offline-run-*"))) == 1
    assert time.perf_counter() - started < 15
    assert stderr_lines(capsys) == ["warning: W&B online mode: no API key (set WANDB_API_KEY or run `wandb login`); "
                                    f"logging offline to {tmp_path / 'a' / 'wandb'} instead"]


@pytest.mark.parametrize("key_in", ["env", "netrc"])
def test_online_with_unreachable_server_logs_offline_quickly(make_cfg, tmp_path, capsys, monkeypatch, unreachable,
                                                             key_in):
    if key_in == "netrc":
        monkeypatch.delenv("WANDB_API_KEY")
        (tmp_path / "home" / ".netrc").write_text(f"machine {unreachable[7:]} login user password {'y' * 40}\n")
    started = time.perf_counter()
    one_job(typed("logger", make_cfg("logger=wandb", "logger.mode=online").logger), tmp_path / "job")
    assert time.perf_counter() - started < 10
    assert len(list((tmp_path / "job" / "wandb").glob("offline-run-*"))) == 1
    assert stderr_lines(capsys) == [f"warning: W&B online mode: cannot connect to {unreachable}; "
                                    f"logging offline to {tmp_path / 'job' / 'wandb'} instead"]


@pytest.mark.parametrize("mode", ["offline", "online"])
def test_init_failure_leaves_a_working_logger(make_cfg, tmp_path, capsys, monkeypatch, mode):
    """Online retries offline once; when that fails too, there is no run and log/finish do nothing."""
    calls = []

    def broken_init(**kwargs):
        calls.append(kwargs["mode"])
        raise RuntimeError("no service\nsecond line")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setattr(logger, "_online_problem", lambda: None)
    one_job(typed("logger", make_cfg("logger=wandb", f"logger.mode={mode}").logger), tmp_path / "job")
    assert calls == ([mode] if mode == "offline" else ["online", "offline"])
    [line] = stderr_lines(capsys)
    assert line.startswith("warning: W&B init failed (RuntimeError: no service); ") and "second line" not in line


def test_interrupt_is_not_swallowed(make_cfg, tmp_path, monkeypatch):
    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(wandb, "init", interrupted)
    with pytest.raises(KeyboardInterrupt):
        RunLogger(typed("logger", make_cfg("logger=wandb").logger), str(tmp_path), group="g", name="n", config={})


def test_log_failure_warns_once(make_cfg, tmp_path, capsys, monkeypatch):
    run_logger = RunLogger(typed("logger", make_cfg("logger=wandb").logger), str(tmp_path), group="g", name="n",
                           config={})

    def broken_log(row, step):
        raise ValueError("cannot log")

    monkeypatch.setattr(run_logger.run, "log", broken_log)
    for step in range(3):
        run_logger.log({"loss": 1.0}, step=step)
    run_logger.finish({"status": "ok"})
    assert stderr_lines(capsys) == ["warning: W&B log failed (ValueError: cannot log); continuing without it"]
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 1


def test_finish_failures_are_warnings(make_cfg, tmp_path, capsys):
    def broken(*args):
        raise OSError("disk full")

    run_logger = RunLogger(typed("logger", make_cfg().logger), str(tmp_path), group="g", name="n", config={})
    run_logger.run = SimpleNamespace(summary=SimpleNamespace(update=broken), finish=broken)
    run_logger.finish({"status": "ok"})
    assert run_logger.run is None
    assert stderr_lines(capsys) == ["warning: W&B summary failed (OSError: disk full); continuing without it"]


def test_training_writes_its_files_when_wandb_is_unreachable(make_cfg, tmp_path, capsys, unreachable):
    cfg = make_cfg("logger=wandb", "logger.mode=online", "steps=5", "task=regression", "model=mlp", "eval_every=5")
    summary = train_one(cfg, tmp_path / "job", name="n")
    job = tmp_path / "job"
    assert (job / "metrics.csv").exists() and json.loads((job / "summary.json").read_text())["name"] == "n"
    assert summary.steps_run > 0 and len(list((job / "wandb").glob("offline-run-*"))) == 1
    assert [line for line in stderr_lines(capsys) if line.startswith("warning:")] == [
        f"warning: W&B online mode: cannot connect to {unreachable}; logging offline to {job / 'wandb'} instead"]


def test_runs_of_a_population_each_log_to_their_own_run(make_cfg, tmp_path, capsys):
    """Two runs stepped together: two W&B runs open side by side, neither finished by the other's start."""
    from gradclip.sweep import Job
    from gradclip.training import run_jobs

    overrides = ["logger=wandb", "logger.mode=offline", "task=digits", "model=mlp", "steps=5", "eval_every=5",
                 "optim.lr=0.1"]
    jobs = [Job(make_cfg(*overrides, f"seed={s}"), tmp_path / str(s), "g", f"r{s}", []) for s in range(2)]
    assert [s.status for s in run_jobs(jobs)] == ["ok", "ok"]
    assert stderr_lines(capsys) == []  # "W&B log failed (... Run is finished ...)" before create_new
    assert all(len(list((tmp_path / str(s) / "wandb").glob("offline-run-*"))) == 1 for s in range(2))


def test_wandb_runs_get_sections_tags_and_short_names(make_cfg, tmp_path, monkeypatch):
    """What W&B receives: keys in train/ val/ grad/ sections, the run's task, model, clip, optimizer and setup as tags,
    and a name made of the overrides that tell runs apart."""
    import wandb

    from gradclip.sweep import job_labels

    seen = {}

    class FakeRun:
        summary = SimpleNamespace(update=lambda values: None)

        def log(self, row, step):
            seen.setdefault("keys", set()).update(row)

        def finish(self):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kwargs: seen.update(kwargs) or FakeRun())
    cfg = make_cfg("logger=wandb", "logger.mode=offline", "task=digits", "model=mlp", "clip=norm1", "steps=3",
                   "eval_every=3")
    train_one(cfg, tmp_path / "job", name="n")
    assert {"train/loss", "val/accuracy", "grad/grad_norm", "grad/clipped"} <= seen["keys"]
    assert not {k for k in seen["keys"] if "/" not in k}
    assert seen["tags"] == ["digits", "mlp", "norm1", "sgd", "custom"]
    assert job_labels(Path("multirun/2026-12-02/10-00-00"), "+experiment=tuned,clip=norm1,logger=none,seed=3,"
                      "task.split=test,threads=1") == ("2026-12-02_10-00-00", "clip=norm1,seed=3")
