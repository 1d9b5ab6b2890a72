"""`hydra/launcher=slurm` on a real one-node SLURM cluster (tests/slurm/setup.sh, as root): `make test-slurm`."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli

pytestmark = pytest.mark.slurm

# 4 runs of 15000 steps (~0.5 ms each unloaded): long enough to cancel one mid-run (1500 steps ended before the
# scancel on a fresh clone at a load of 3), two populations of 2 runs (array tasks)
SWEEP = ["seed=0,1,2,3", "setup=digits_mlp", "steps=15000", "checkpoint_every=50", "logger=none",
         "hydra.launcher.max_population=2"]
SLURM = ["-m", "hydra/launcher=slurm", *SWEEP]


@pytest.fixture(scope="module")
def cluster():
    """slurmctld, slurmd and munged started (SLURM installed first if missing), and stopped after the tests."""
    script = ROOT / "tests" / "slurm" / "setup.sh"
    started = subprocess.run(["bash", str(script), "start"], text=True, capture_output=True, timeout=600)
    if started.returncode == 3:
        pytest.skip(f"no SLURM here: {started.stderr.strip()}")
    assert started.returncode == 0, started.stdout + started.stderr
    conf = re.search(r"^SLURM_CONF=(.+)$", started.stdout, re.M).group(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SLURM_CONF", conf)
        yield
    stopped = subprocess.run(["bash", str(script), "stop"], text=True, capture_output=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same sweep on this machine, under the population launcher."""
    folder = tmp_path_factory.mktemp("reference")
    result = run_cli("-m", *SWEEP, f"hydra.sweep.dir={folder / 'sweep'}", cwd=folder, timeout=600)
    assert result.returncode == 0, result.stderr
    return folder / "sweep"


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/summary.json")}


def assert_same_runs(sweep: Path, reference: Path) -> None:
    assert sorted(summaries(sweep)) == ["0", "1", "2", "3"]
    for job in summaries(reference):
        assert (sweep / job / "metrics.csv").read_bytes() == (reference / job / "metrics.csv").read_bytes(), job
    assert not list(sweep.glob("*/checkpoint.pt"))


def test_a_sweep_through_sbatch_gives_the_local_results_and_a_report(cluster, reference, tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(*SLURM, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert re.search(r"SLURM launcher: 4 jobs in 2 array tasks of job \d+ \(2, 2 runs\)", result.stdout)
    assert_same_runs(sweep, reference)
    assert {s["population"] for s in summaries(sweep).values()} == {2}  # packed: two runs per array task
    assert len(list(sweep.glob(".submitit/*/*_result.pkl"))) == 2
    assert result.stdout.count("report: ") == 1 and (sweep / "report" / "report.md").is_file()


def test_scancel_one_task_then_the_same_command_reruns_only_its_jobs_from_their_checkpoints(cluster, reference,
                                                                                          tmp_path):
    sweep, log = tmp_path / "sweep", tmp_path / "first.log"
    command = [sys.executable, str(ROOT / "run.py"), *SLURM, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "CI": "true"}
    with open(log, "w") as out:
        first = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
        deadline, task = time.time() + 300, None
        while time.time() < deadline and first.poll() is None:
            found = re.search(r"\t(\d+_0): jobs (.+)$", log.read_text(), re.M)
            if found and any((sweep / job / "checkpoint.pt").exists() for job in found.group(2).split(", ")):
                task, jobs = found.group(1), found.group(2).split(", ")
                break
            time.sleep(0.05)
        assert task, "task 0 never reached a checkpoint:\n" + log.read_text()
        subprocess.run(["scancel", task], check=True)
        assert first.wait(timeout=300) == 1, log.read_text()
    assert f"{len(jobs)} job(s) failed or did not finish" in log.read_text()
    finished = {job: (sweep / job / "summary.json").stat().st_mtime_ns for job in summaries(sweep)}
    assert sorted(finished) == sorted({"0", "1", "2", "3"} - set(jobs))

    result = run_cli(*SLURM, f"hydra.sweep.dir={sweep}", cwd=tmp_path, timeout=600)
    assert result.returncode == 0, result.stderr
    assert f"{len(finished)} of 4 jobs finished before" in result.stdout
    assert f"SLURM launcher: {len(jobs)} jobs in 1 array tasks" in result.stdout
    assert {job: (sweep / job / "summary.json").stat().st_mtime_ns for job in finished} == finished  # not rerun
    assert any(summaries(sweep)[job]["resumed_from_step"] > 0 for job in jobs)
    assert_same_runs(sweep, reference)


def test_a_timed_out_task_is_requeued_and_its_run_finishes_from_its_checkpoint(cluster, tmp_path):
    """A task with a 5-minute limit gets SLURM's time-out warning (USR2, submitit's signal) once its run has a
    checkpoint: submitit requeues it (one of max_num_timeout=3 requeues), the task starts again ~30 s later and its
    run goes on from the checkpoint to the end.

    The test sends the warning itself (`scancel --signal=USR2`, as submitit's own tests do): slurmctld checks limits
    every 30 s and warns up to 30 s early, i.e. 25-55 s into a 1-minute task, which on a loaded machine (load 10-14
    on 2 cores, measured) came before the task's first checkpoint, attempt after attempt; the 5-minute limit leaves
    every attempt at least 265 s. submitit counts it as a time-out (not a preemption) whatever the limit."""
    sweep, log = tmp_path / "sweep", tmp_path / "sweep.log"
    command = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=slurm", "seed=0", "setup=digits_mlp",
               "steps=1500", "checkpoint_every=50", "logger=none", "hydra.launcher.timeout_min=5",
               "hydra.launcher.signal_delay_s=5", "hydra.launcher.max_num_timeout=3", f"hydra.sweep.dir={sweep}"]
    with open(log, "w") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "CI": "true"}, stdout=out,
                                   stderr=subprocess.STDOUT)
        deadline = time.time() + 300
        while not (sweep / "0" / "checkpoint.pt").exists() and time.time() < deadline and process.poll() is None:
            time.sleep(0.05)
        try:
            task = re.search(r"\t(\d+(?:_0)?): jobs 0$", log.read_text(), re.M).group(1)
            subprocess.run(["scancel", "--signal=USR2", task], check=True)
            assert process.wait(timeout=900) == 0, log.read_text()
        finally:  # a failed test leaves no command behind waiting for its task
            process.kill()
    (summary,) = summaries(sweep).values()
    assert summary["status"] == "ok" and summary["steps_run"] == 1500 and summary["resumed_from_step"] > 0
    (task_log,) = sweep.glob(".submitit/*/*_log.out")
    assert "this job is timed-out" in task_log.read_text() and "(2 remaining timeouts)" in task_log.read_text()
