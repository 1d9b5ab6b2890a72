"""hydra.sweeper.jobs_file: a sweep of an explicit job list (its jobs, in order; resumed; refused on one line), and
experiments/reproduce.py's run_sweep: a rerun resumes its folder, a folder of other code is moved aside."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import run_cli

from experiments.runner import run_sweep

PLAIN = ["setup=regression_mlp", "steps=2", "logger=none", "report=false"]
JOBS = [["seed=3", "clip=norm1"], ["seed=4"], ["steps=3", "optim.lr_scale=0.1"]]


def write_jobs(tmp_path: Path, jobs, name: str = "jobs.yaml") -> Path:
    path = tmp_path / name
    path.write_text(jobs if isinstance(jobs, str) else yaml.safe_dump(jobs))
    return path


def mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.glob("[0-9]*/*.*")}


def test_jobs_file_runs_exactly_its_jobs_in_order_and_a_rerun_skips_them(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", *PLAIN, f"hydra.sweeper.jobs_file={write_jobs(tmp_path, JOBS)}", f"hydra.sweep.dir={sweep}"]
    first = run_cli(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1", "2"]
    summaries = [json.loads((sweep / str(num) / "summary.json").read_text()) for num in range(3)]
    assert [(s["seed"], s["steps"], s["clip"], s["lr_scale"]) for s in summaries] == [
        (3, 2, "norm1", 1.0), (4, 2, "none", 1.0), (0, 3, "none", 0.1)]  # the job's overrides come last and win
    assert [s["overrides"] for s in summaries] == [PLAIN + job for job in JOBS]
    assert [yaml.safe_load((sweep / str(num) / "config.yaml").read_text())["seed"] for num in range(3)] == [3, 4, 0]
    written = mtimes(sweep)
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert "3 of 3 jobs finished before" in again.stdout
    assert mtimes(sweep) == written


@pytest.mark.parametrize("jobs,extra,message", [
    (JOBS, ["seed=0,1"], "the sweep override seed=0,1 cannot go with it"),
    (JOBS, ['hydra.sweeper.params={seed:"0,1"}'], "hydra.sweeper.params (seed) cannot go with it"),
    (None, [], "cannot read it (No such file or directory)"),
    ("[[", [], "not valid YAML"),
    ({"seed": 0}, [], "expected a non-empty list of jobs"),
    ([], [], "expected a non-empty list of jobs"),
    ([["seed=0,1"]], [], "job 0: seed=0,1 is a sweep"),
])
def test_jobs_file_refusals_are_one_line_and_create_nothing(tmp_path, jobs, extra, message):
    path = tmp_path / "missing.yaml" if jobs is None else write_jobs(tmp_path, jobs)
    result = run_cli("-m", *PLAIN, *extra, f"hydra.sweeper.jobs_file={path}", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                     cwd=tmp_path)
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert result.stderr.startswith(f"error: hydra.sweeper.jobs_file={path}: ") and message in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ([] if jobs is None else ["jobs.yaml"])


def test_run_sweep_resumes_its_folder_and_moves_other_code_aside(tmp_path, capsys):
    jobs = write_jobs(tmp_path, JOBS[:2])
    folder, _ = run_sweep("tiny", tmp_path, 1, PLAIN, jobs_file=jobs)
    assert folder == tmp_path / "runs" / "tiny" and len(list(folder.glob("*/summary.json"))) == 2
    written = mtimes(folder)
    assert run_sweep("tiny", tmp_path, 1, PLAIN, jobs_file=jobs)[0] == folder and mtimes(folder) == written

    (folder / "sweep.json").write_text('{"code_version": "0.0.1+abc", "schema_version": 3}')
    old = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    capsys.readouterr()
    assert run_sweep("tiny", tmp_path, 1, PLAIN, jobs_file=jobs)[0] == folder
    [stale] = (tmp_path / "runs").glob("tiny.stale-*")
    assert {p.relative_to(stale): p.read_bytes() for p in stale.rglob("*") if p.is_file()} == old
    assert f"{folder}: results of other code, moved to {stale}; starting fresh" in capsys.readouterr().out
    assert json.loads((folder / "sweep.json").read_text())["code_version"] != "0.0.1+abc"
    assert len(list(folder.glob("*/summary.json"))) == 2


def test_run_sweep_moves_a_folder_of_the_former_layout_aside(tmp_path):
    jobs, former = write_jobs(tmp_path, JOBS[:1]), tmp_path / "sweep" / "2026-01-01_00-00-00" / "0"
    former.mkdir(parents=True)
    (former / "summary.json").write_text("{}")
    assert run_sweep("tiny", tmp_path, 1, PLAIN, folder=tmp_path / "sweep", jobs_file=jobs)[0] == tmp_path / "sweep"
    [stale] = tmp_path.glob("sweep.stale-*")
    assert (stale / "2026-01-01_00-00-00" / "0" / "summary.json").read_text() == "{}"
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir()) == ["0"]


def test_code_version_covers_what_trains_not_what_reports(tmp_path):
    """Editing what reports (the statistics) leaves finished runs valid; editing training code does not."""
    import shutil

    from gradclip import sweep

    package = shutil.copytree(Path(sweep.__file__).parent, tmp_path / "gradclip")
    before = sweep.code_version.__wrapped__(package)
    (package / "stats.py").write_text((package / "stats.py").read_text() + "\n# edited\n")
    assert sweep.code_version.__wrapped__(package) == before
    (package / "training.py").write_text((package / "training.py").read_text() + "\n# edited\n")
    assert sweep.code_version.__wrapped__(package) != before
