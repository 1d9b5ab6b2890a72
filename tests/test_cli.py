"""The command line as a user types it: bad input is refused on one line, a sweep yields runs and a report."""

import glob
import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from gradclip.config import ConfigError, one_line_error, validate
from gradclip.report import build_report, main as report_main

from conftest import ROOT, run_cli, session_processes, train_one

BAD = [  # (overrides, text the one-line message must contain)
    (["clip=nope"], "clip=nope: no such option; the options of 'clip' are: adagc, agc, autoclip, none, norm, norm1, "
                     "per_tensor, random, skip_step, value, zclip"),
    (["optim=nope"], "optim=nope: no such option"),
    (["clip=norm", "clip.threshold=0"], "clip.threshold=0.0: must be a number > 0 (inf = never clip)"),
    (["clip=norm1", "clip.threshold=-1"], "clip.threshold=-1.0"),
    (["optim.lr=0"], "optim.lr=0: must be a number > 0"),
    (["optim.lr=-3"], "optim.lr=-3: must be a number > 0"),
    (["optim.lr=abc"], "optim.lr='abc': must be a number > 0"),
    (["steps=ten"], "steps='ten': must be an integer >= 1"),
    (["seed=abc"], "seed='abc': must be an integer in [0, 4294967295]"),
    (["clip=none", "clip.threshold=0"], "clip.threshold: clip=none has no setting 'threshold' (its settings: name)"),
    (["task.batchsize=8"], "task.batchsize: task=charlm has no setting 'batchsize' (its settings: data_dir, level, bptt, "
                           "batch_size,"),
    (["steps=0"], "steps=0: must be an integer >= 1"),
    (["task.data_dir=/no/such/folder"], "task.data_dir=/no/such/folder: no such folder"),
    (["model=mlp"], "model=mlp: needs a vector task"),
    (["task.level=morse"], "task.level: Invalid value 'morse', expected one of [char, word]"),
    (["nosuchkey=1"], "nosuchkey: Key 'nosuchkey' not in 'Config'"),
]


@pytest.mark.parametrize("overrides,message", BAD)
def test_bad_input_message(make_cfg, overrides, message):
    try:
        validate(make_cfg(*overrides))
    except Exception as exc:  # composition errors come from Hydra, range errors from validate
        text = one_line_error(exc)
        assert text is not None and "\n" not in text and message in text
    else:
        pytest.fail("accepted")


def test_data_dir_without_train_txt(make_cfg, tmp_path):
    (tmp_path / "valid.txt").write_text("x")
    with pytest.raises(ConfigError, match="no train.txt"):
        validate(make_cfg(f"task.data_dir={tmp_path}"))


@pytest.mark.parametrize("args,message", [
    (["-m", "clip=none,nope"], "error: clip=nope: no such option"),
    (["-m", "optim.lr=1,0"], "error: optim.lr=0: must be a number > 0"),
    (["optim.lr=-1"], "error: optim.lr=-1: must be a number > 0"),
    (["seed=abc"], "error: seed='abc': must be an integer"),
    (["clip=none", "clip.threshold=0"], "error: clip.threshold: clip=none has no setting 'threshold'"),
])
def test_cli_refuses_before_any_work_and_touches_nothing(tmp_path, args, message):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "keep.txt").write_text("earlier results")
    result = run_cli(*args, "logger=none", f"hydra.sweep.dir={sweep}", f"hydra.run.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert [p.name for p in sweep.iterdir()] == ["keep.txt"] and (sweep / "keep.txt").read_text() == "earlier results"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep"]


def test_help_lists_every_option_on_disk_and_the_preset_syntax(tmp_path):
    result = run_cli("--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("gradclip: ")
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("  ") and "=" in line.split()[0]}
    conf = ROOT / "conf"
    on_disk = {f"{'+' if p.parts[0] == 'experiment' else ''}{p.parts[0]}={Path(*p.parts[1:]).with_suffix('').as_posix()}"
               for p in (q.relative_to(conf) for q in conf.glob("*/**/*.yaml")) if p.parts[0] != "hydra"}
    assert "clip=norm/10" in on_disk and "clip=zclip/nocap" in on_disk and on_disk <= listed
    assert "GROUP=FOLDER/OPTION" in result.stdout
    options = [line.split(maxsplit=1) for line in result.stdout.splitlines() if line.split()[:1] and "=" in line.split()[0]
               and line.startswith("  ")]
    assert [o[0] for o in options if len(o) < 2 or o[1] == "(default)"] == []  # every option says what it is
    assert [line.endswith("(default)") for line in result.stdout.splitlines() if line.split()[:1] == ["clip=none"]] == [True]


@pytest.mark.parametrize("bad", ["clip=nope", "optim.lr=1,0"])  # refused while Hydra composes; by validate
def test_refused_sweep_leaves_no_process_behind(tmp_path, bad):
    """The population launcher's worker server starts with the command; a refusal stops it (it holds 200-300 MB
    for seconds otherwise, importing torch). stderr is not a pipe here: the server would hold it open."""
    process = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", bad, "logger=none"], cwd=tmp_path,
                               env={**os.environ, "CI": "true"}, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert process.wait(timeout=60) == 2
    assert session_processes(process.pid) == []


class _Collect(HTMLParser):
    def __init__(self):
        super().__init__()
        self.text, self.images = [], 0

    def handle_data(self, data):
        self.text.append(data)

    def handle_starttag(self, tag, attrs):
        self.images += tag == "img" and dict(attrs)["src"].startswith("data:image/png;base64,")


def test_main_job_end_to_end(tmp_path):
    """`python run.py -m clip=none,norm1` with a few steps and one seed (not the default 4): job dirs, report.md/html,
    an offline W&B run per job."""
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "clip=none,norm1", "seed=0", "steps=12", "eval_every=4", "logger.mode=offline",
                     f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for job in ("0", "1"):
        for name in ("config.yaml", "metrics.csv", "summary.json"):
            assert (sweep / job / name).is_file()
        assert len(list((sweep / job / "wandb").glob("offline-run-*"))) == 1
    assert json.loads((sweep / "1" / "summary.json").read_text())["clip"] == "norm1"
    assert OmegaConf.load(sweep / "0" / "config.yaml").clip.name == "none"
    report = sweep / "report"
    assert f"report: {(report / 'report.md').resolve()}" in result.stdout
    md = (report / "report.md").read_text()
    assert "clip=none" in md and "clip=norm1" in md
    parser = _Collect()
    parser.feed((report / "report.html").read_text())
    text = " ".join(parser.text)
    assert "clip=none" in text and "clip=norm1" in text and parser.images == 4
    assert md.splitlines()[3] == "## The answer" and "Warning: n = 1 per arm" in md  # one seed: said plainly
    assert md.startswith("# clip=norm1 vs clip=none on charlm / lstm, 1 seed each\n*How to read this: ")
    hint = next(line for line in result.stdout.splitlines() if line.startswith("W&B runs are offline"))
    runs = sorted(glob.glob(hint.split("wandb sync ")[1]))  # the printed pattern finds every job's offline run
    assert len(runs) == 2 and all(Path(run).name.startswith("offline-run-") for run in runs)
    assert sorted(p.name for p in (report / "figures").iterdir()) == [
        "final.png", "grad_norm.png", "heldout.png", "loss.png"]


def test_diverging_sweep_still_gets_its_report(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli("-m", "task=regression", "model=mlp", "optim.lr=1000,0.0001", "steps=15", "eval_every=5",
                     "seed=0", "logger=none", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads((sweep / "0" / "summary.json").read_text())["diverged"] is True
    assert json.loads((sweep / "1" / "summary.json").read_text())["diverged"] is False
    md = (sweep / "report" / "report.md").read_text()
    assert "| optim.lr=1000 | 1 |" in md and "1/1 (" in md


def test_report_rebuilds_from_files_alone(tmp_path, make_cfg, capsys):
    for i, clip in enumerate(["none", "norm1"]):
        overrides = ["task=digits", "model=mlp", "steps=10", "eval_every=5", "optim.lr=0.1", f"clip={clip}"]
        train_one(make_cfg(*overrides), tmp_path / str(i), name=clip, overrides=overrides)
    first = build_report(tmp_path).read_text()
    (tmp_path / "report" / "report.md").unlink()
    report_main([str(tmp_path)])
    assert (tmp_path / "report" / "report.md").read_text() == first
    assert "report.md" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no finished runs"):
        report_main([str(tmp_path / "empty")])
    with pytest.raises(SystemExit, match="no such folder"):
        report_main([str(tmp_path / "missing")])
