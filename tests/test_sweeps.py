"""Sweeps that survive: resume, refusal to mix results, crashed jobs, unwritable folders, escaping, kills, launchers.

Every test runs `python run.py -m ...` in a subprocess, as a user would; the slow ones kill sweeps and compare
launchers (make test-slow).
"""

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli, session_processes

TINY = ["task=regression", "model=mlp", "optim.lr=0.001", "steps=20", "eval_every=10", "logger=none"]


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))}


def test_rerun_skips_finished_jobs_and_refuses_another_config(tmp_path):
    sweep = tmp_path / "sweep"
    first = run_cli("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert f"hydra.sweep.dir={sweep} to resume" in first.stdout
    written = {p: p.stat().st_mtime_ns for p in sweep.glob("[0-9]*/*.*")}
    again = run_cli("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "2 of 2 jobs finished before" in again.stdout  # one line for the sweep, none per job
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("[0-9]*/*.*")} == written  # nothing rerun or rewritten
    other = run_cli("-m", "seed=0,1", *TINY, "steps=30", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert other.stderr.startswith(f"error: {sweep / '0'} holds a run of a different config") and "start fresh" in other.stderr
    assert {p: p.stat().st_mtime_ns for p in sweep.glob("[0-9]*/*.*")} == written


@pytest.mark.parametrize("tamper,message", [
    (lambda sweep: (sweep / "sweep.json").write_text('{"code_version": "0.0.1+abc", "schema_version": 2}'),
     "holds results of code version 0.0.1+abc"),
    (lambda sweep: ((sweep / "sweep.json").unlink(), (sweep / "1" / "summary.json").write_text('{"status": "ok"}')),
     "holds results of code version unknown"),
])
def test_refuses_results_of_other_code_or_schema(tmp_path, tamper, message):
    sweep = tmp_path / "sweep"
    assert run_cli("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path).returncode == 0
    tamper(sweep)
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()}
    result = run_cli("-m", "seed=0,1", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert message in result.stderr and f"delete {sweep} to start fresh" in result.stderr
    assert {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file()} == before


@pytest.mark.parametrize("mode", ["-m", None])
def test_unwritable_output_folder_is_refused(tmp_path, mode):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = [mode] if mode else []
    result = run_cli(*args, *TINY, f"hydra.sweep.dir={blocker}/sweep", f"hydra.run.dir={blocker}/run", cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "cannot write there" in result.stderr and "is a file, not a folder" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


BUGGY_RUN = """
import runpy, sys, torch
import gradclip.training as training
original = training.Run.clip_and_update
def clip_and_update(self):
    if self.cfg.seed == 1 and self.step == 5:
        raise ZeroDivisionError("injected bug")
    return original(self)
training.Run.clip_and_update = clip_and_update
sys.argv[0] = {run!r}
runpy.run_path({run!r}, run_name="__main__")
"""


def test_a_crashing_job_is_recorded_and_the_sweep_and_report_complete(tmp_path):
    """Job 1 hits a bug: jobs 0 and 2 finish, the report lists the failure, the exit code is 1; a rerun without the
    bug reruns only job 1 and exits 0."""
    script = tmp_path / "buggy_run.py"
    script.write_text(BUGGY_RUN.format(run=str(ROOT / "run.py")))
    sweep = tmp_path / "sweep"
    args = ["-m", "seed=0,1,2", *TINY, "hydra/launcher=basic", f"hydra.sweep.dir={sweep}"]  # the bug: this process
    result = subprocess.run([sys.executable, str(script), *args], cwd=tmp_path, text=True, capture_output=True,
                            env={**os.environ, "CI": "true"}, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "error: 1 job(s) failed or did not finish: 1" in result.stderr
    status = {job: s["status"] for job, s in summaries(sweep).items()}
    assert status == {"0": "ok", "1": "failed", "2": "ok"}
    assert summaries(sweep)["1"]["error"] == "ZeroDivisionError: injected bug"
    md = (sweep / "report" / "report.md").read_text()
    assert "## Failed or unfinished runs" in md and "| 1 | seed=1 " in md and "ZeroDivisionError: injected bug" in md
    assert "ZeroDivisionError: injected bug" in (sweep / "report" / "report.html").read_text()
    assert "| all runs | 2 |" in md  # the two finished runs are reported as usual

    fixed = run_cli(*args, cwd=tmp_path)
    assert fixed.returncode == 0, fixed.stderr
    assert "2 of 3 jobs finished before" in fixed.stdout
    assert {job: s["status"] for job, s in summaries(sweep).items()} == {"0": "ok", "1": "ok", "2": "ok"}
    assert "Failed or unfinished" not in (sweep / "report" / "report.md").read_text()


def test_config_strings_are_text_in_the_report(tmp_path):
    sweep = tmp_path / "sweep"
    evil = "<script>alert(1)</script>"
    result = run_cli("-m", f"setup_name='{evil}',plain", "seed=0", *TINY, f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    page = (sweep / "report" / "report.html").read_text()
    assert "<script" not in page and "setup_name=&#x27;&lt;script&gt;alert(1)&lt;/script&gt;&#x27;" in page
    md = (sweep / "report" / "report.md").read_text()
    assert "<script" not in md and "setup_name='&lt;script>alert(1)&lt;/script>'" in md


def test_population_launcher_gives_each_run_its_numbers_alone(tmp_path):
    """Deep MLPs trained as populations (batched products) by 2 workers: the files of a plain one-by-one sweep."""
    args = ["-m", "setup=digits_deep_mlp", "steps=30", "eval_every=10", "seed=0,1,2,3", "clip=none,norm1",
            "logger=none"]
    plain = run_cli(*args, "hydra/launcher=basic", f"hydra.sweep.dir={tmp_path / 'plain'}", "report=false",
                    cwd=tmp_path)
    fast = run_cli(*args, "hydra/launcher=population", "hydra.launcher.n_jobs=2",
                   f"hydra.sweep.dir={tmp_path / 'fast'}", cwd=tmp_path)
    assert plain.returncode == 0 and fast.returncode == 0, fast.stderr
    threads = max(1, (os.cpu_count() or 1) // 2)  # the machine's cores shared by the 2 workers
    assert f"8 jobs in 2 populations (4, 4 runs), 2 workers x {threads} threads" in fast.stderr + fast.stdout
    for job, summary in summaries(tmp_path / "fast").items():
        assert summary["population"] == 4 and summary["batched_steps"] > 0
        assert (tmp_path / "fast" / job / "metrics.csv").read_bytes() == (tmp_path / "plain" / job / "metrics.csv").read_bytes()
        for name in ("config.yaml", "overrides.yaml"):  # Hydra's record of the job, as its basic launcher writes it
            fast_cfg, plain_cfg = (yaml.safe_load((tmp_path / side / job / ".hydra" / name).read_text())
                                   for side in ("fast", "plain"))
            if name == "config.yaml":
                assert fast_cfg.pop("report") and not plain_cfg.pop("report")  # the one option the sweeps differ in
            assert fast_cfg == (plain_cfg if name == "config.yaml" else [o for o in plain_cfg if o != "report=False"])
        hydra_cfg = yaml.safe_load((tmp_path / "fast" / job / ".hydra" / "hydra.yaml").read_text())["hydra"]
        assert hydra_cfg["runtime"]["output_dir"] == str((tmp_path / "fast" / job).absolute())
    report = (tmp_path / "fast" / "report" / "report.md").read_text()
    assert "populations of up to 4" in report and "a run's wall time is its population's" in report


def interrupt(args: list[str], started: Path, cwd: Path, group: bool) -> tuple[int, str]:
    """Start `python run.py ARGS`, send it Ctrl-C's SIGINT once ``started`` exists (to its process group, as a
    terminal does, with ``group``); its exit status and stderr."""
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env={**os.environ, "CI": "true"},
                               start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not started.exists():
        assert process.poll() is None and time.time() < deadline, "training never started"
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT) if group else process.send_signal(signal.SIGINT)
    try:
        _, stderr = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail("still running a minute after Ctrl-C")
    assert session_processes(process.pid) == []  # the population launcher's workers and their server are gone
    return process.returncode, stderr


def test_ctrl_c_prints_the_command_that_resumes_the_run(tmp_path):
    """Ctrl-C: one line with the command to run again (the same, with hydra.run.dir), exit 130; it resumes."""
    folder = tmp_path / "run"
    args = ["task=digits", "model=mlp", "optim.lr=0.1", "steps=2000", "checkpoint_every=20", "logger=none",
            f"hydra.run.dir={folder}"]
    code, stderr = interrupt(args, folder / "checkpoint.pt", tmp_path, group=False)
    assert code == 130 and len(stderr.strip().splitlines()) == 1, stderr
    command = shlex.join([sys.executable, str(ROOT / "run.py"), *args])
    assert stderr.strip() == f"interrupted; resume with: {command}"
    resumed = subprocess.run(shlex.split(command), cwd=tmp_path, env={**os.environ, "CI": "true"}, timeout=300)
    assert resumed.returncode == 0
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["status"] == "ok" and summary["resumed_from_step"] >= 20


@pytest.mark.parametrize("group", [True, False], ids=["terminal", "command-only"])
def test_ctrl_c_stops_a_population_sweep_at_once_with_one_line(tmp_path, group):
    """Three populations on two workers. From a terminal the SIGINT reaches every process; sent to the command
    alone, the command passes it on. Either way: one line, no traceback from a worker, no population started after."""
    sweep = tmp_path / "sweep"
    args = ["-m", "model.width=25,26,27", "seed=0", "task=digits", "model=mlp", "optim.lr=0.1", "steps=100000",
            "checkpoint_every=20", "logger=none", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}"]
    code, stderr = interrupt(args, sweep / "0" / "checkpoint.pt", tmp_path, group)
    assert code == 130 and len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.strip() == f"interrupted; resume with: {shlex.join([sys.executable, str(ROOT / 'run.py'), *args])}"
    assert not list(sweep.glob("*/summary.json"))


def planned_jobs(*overrides: str) -> list[list[str]]:
    """The jobs `python run.py -m OVERRIDES` launches (the list the sweeper and the callback share)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.types import RunMode

    from gradclip.callbacks import sweep_job_overrides
    from gradclip.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = GlobalHydra.instance().config_loader().load_configuration("config", list(overrides), RunMode.MULTIRUN)
        return sweep_job_overrides(cfg)


def test_a_sweep_runs_seeds_0_to_3_per_arm_unless_it_names_its_seeds(tmp_path):
    """The mission's command runs 4 seeds per arm (the order `make run` had with seed=0,1,2,3); any seed= given
    wins; experiments (their own params) and jobs files keep exactly their jobs."""
    assert planned_jobs("clip=none,norm1") == [[f"clip={clip}", f"seed={seed}"]
                                               for clip in ("none", "norm1") for seed in range(4)]
    assert planned_jobs("clip=none,norm1", "seed=7") == [["clip=none", "seed=7"], ["clip=norm1", "seed=7"]]
    assert len(planned_jobs("clip=none,norm1", "seed=1,2")) == 4
    assert len(planned_jobs("clip=none,norm1", 'hydra.sweeper.params={optim.lr:"1,2"}')) == 4  # params: no defaults
    counts = {name: len(planned_jobs(f"+experiment={name}"))
              for name in ("calibration", "cliff", "direction", "exploding", "smoothness", "tuned")}
    assert counts == {"calibration": 10, "cliff": 18, "direction": 60, "exploding": 16, "smoothness": 18, "tuned": 1}
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text(yaml.safe_dump([["seed=3"], ["clip=norm1"]]))
    assert planned_jobs(f"hydra.sweeper.jobs_file={jobs}") == [["seed=3"], ["clip=norm1"]]
    assert planned_jobs("+experiment=tuned", f"hydra.sweeper.jobs_file={jobs}") == [
        ["+experiment=tuned", "seed=3"], ["+experiment=tuned", "clip=norm1"]]


def test_slurm_example_config_composes(monkeypatch):
    """conf/hydra/launcher/slurm.yaml extends submitit's SLURM launcher with populations per array task; each job gets
    cpus_per_task torch threads; with sbatch and srun on PATH it is accepted, unless SLURM's time-out warning would
    come as each task starts."""
    from hydra import compose, initialize_config_dir
    from hydra.utils import get_class

    import gradclip.callbacks as callbacks
    from gradclip.callbacks import check_launcher, launcher_threads
    from gradclip.config import ConfigError, register_schemas

    def config(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=["hydra/launcher=slurm", *overrides], return_hydra_config=True)

    register_schemas()
    cfg = config("hydra.launcher.partition=gpu")
    launcher = cfg.hydra.launcher
    assert "SlurmLauncher" in [c.__name__ for c in get_class(launcher._target_).__mro__]
    assert launcher.partition == "gpu"
    assert launcher.max_population == 4 and launcher.max_num_timeout == 3
    assert launcher_threads(cfg.hydra) == launcher.cpus_per_task == 1
    monkeypatch.setattr(callbacks.shutil, "which", lambda command: f"/usr/bin/{command}")
    check_launcher(cfg)
    with pytest.raises(ConfigError, match=r"^hydra.launcher.signal_delay_s=120: with timeout_min=1 .* use "
                                          r"signal_delay_s < 30 or a longer timeout_min$"):
        check_launcher(config("hydra.launcher.timeout_min=1"))


def test_slurm_launcher_without_slurm_is_refused_before_anything_is_written(tmp_path):
    """No sbatch or srun on PATH: one line, exit 2, no folder (submitit's own error was a 41-line traceback)."""
    path = os.pathsep.join(d for d in os.environ["PATH"].split(os.pathsep)
                           if not (Path(d, "sbatch").exists() or Path(d, "srun").exists()))
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=slurm", "seed=0,1", *TINY],
                            cwd=tmp_path, env={**os.environ, "CI": "true", "PATH": path}, text=True,
                            capture_output=True, timeout=300)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stderr.startswith("error: hydra/launcher=slurm: no SLURM here (sbatch and srun not found on PATH)")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- slow: kills and launchers
LSTM = ["steps=240", "eval_every=40", "checkpoint_every=20", "model.hidden=64", "task.eval_tokens=2048",
        "logger=none", "report=true"]
SEEDS = "seed=0,1,2,3"


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The sweep never interrupted, with Hydra's basic launcher (one job after another)."""
    folder = tmp_path_factory.mktemp("reference")
    result = run_cli("-m", SEEDS, *LSTM, "hydra/launcher=basic", f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder,
                     timeout=600)
    assert result.returncode == 0, result.stderr
    return folder / "sweep"


def assert_same_runs(sweep: Path, reference: Path) -> None:
    """Every job once, complete, and its metrics.csv byte-identical to the reference's; no leftovers."""
    assert sorted(summaries(sweep)) == sorted(summaries(reference)) == ["0", "1", "2", "3"]
    for job in summaries(reference):
        assert (sweep / job / "metrics.csv").read_bytes() == (reference / job / "metrics.csv").read_bytes(), job
    assert not list(sweep.rglob("*.tmp")) and not list(sweep.rglob("checkpoint.pt"))


@pytest.mark.slow
def test_sigkill_mid_sweep_then_rerun_matches_a_sweep_never_killed(tmp_path, reference):
    sweep = tmp_path / "sweep"
    command = [sys.executable, str(ROOT / "run.py"), "-m", SEEDS, *LSTM, "hydra/launcher=joblib",
               f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "CI": "true"}
    process = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once one job is done and another has a checkpoint but no summary
        done = {p.parent for p in sweep.glob("*/summary.json")}
        if done and any(p.parent not in done for p in sweep.glob("*/checkpoint.pt")):
            break
        time.sleep(0.05)
    else:
        pytest.fail("the sweep never reached a finished job and a checkpointed one")
    os.killpg(process.pid, signal.SIGKILL)  # the launcher and its joblib workers, with no chance to clean up
    process.wait()
    finished = {job: (sweep / job / "summary.json").stat().st_mtime_ns for job in summaries(sweep)}
    assert 1 <= len(finished) < 4 and not (sweep / "report").exists()

    result = subprocess.run(command, cwd=tmp_path, env=env, text=True, capture_output=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 4 jobs finished before" in result.stdout
    assert {job: (sweep / job / "summary.json").stat().st_mtime_ns for job in finished} == finished  # not rerun
    resumed = [s["resumed_from_step"] for job, s in summaries(sweep).items() if job not in finished]
    assert any(step > 0 for step in resumed), resumed  # at least one job went on from its checkpoint
    assert_same_runs(sweep, reference)
    assert (sweep / "report" / "report.md").read_text().count("\n| ") >= 4


@pytest.mark.slow
@pytest.mark.parametrize("launcher", ["joblib", "submitit_local", "population"])
def test_parallel_launchers_give_the_same_results_and_one_report(tmp_path, reference, launcher):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", SEEDS, *LSTM, f"hydra/launcher={launcher}", f"hydra.sweep.dir={sweep}", cwd=tmp_path,
                     timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("report: ") == 1
    built = (sweep / "report" / "report.md").stat().st_mtime_ns
    assert all(built > (sweep / job / "summary.json").stat().st_mtime_ns for job in summaries(sweep))
    assert_same_runs(sweep, reference)
    threads = {s["threads"] for s in summaries(sweep).values()}
    assert threads == {1}
