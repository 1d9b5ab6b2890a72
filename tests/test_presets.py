"""Every preset in conf/preset/ (`+preset=NAME`) composes and validates, says in its header what it needs, and
`make reproduce SCALE=paper` passes reproduce.py overrides that compose in the experiments it runs."""

import subprocess
from pathlib import Path

import pytest

from gradclip.config import validate

from conftest import ROOT

PRESETS = sorted(path.stem for path in (ROOT / "conf" / "preset").glob("*.yaml"))
WORDS = "the cat sat on the mat and the dog ran after it\n" * 40  # a corpus of a few hundred words


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A tiny corpus as train/valid/test.txt (a folder holds one layout; input.txt alone is tested in test_gpt)."""
    for name in ("train.txt", "valid.txt", "test.txt"):
        (tmp_path / name).write_text(WORDS)
    return tmp_path


def test_there_are_presets():
    assert {"word_lm", "charlm_lstm_paper"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_preset_composes_validates_and_documents_itself(make_cfg, corpus, name):
    text = (ROOT / "conf" / "preset" / f"{name}.yaml").read_text()
    header = [line for line in text.splitlines()[1:] if line.startswith("#")]
    assert text.startswith("# @package _global_\n") and len(header) >= 3, "a header comment says what it needs"
    assert f"+preset={name}" in text, "the header shows the command"
    validate(make_cfg(f"+preset={name}", f"task.data_dir={corpus}"))


def test_word_lm_is_the_pytorch_example(make_cfg, corpus):
    cfg = make_cfg("+preset=word_lm", f"task.data_dir={corpus}")
    assert (cfg.task.level, cfg.task.bptt, cfg.task.batch_size) == ("word", 35, 20)
    assert (cfg.model.cell, cfg.model.embedding, cfg.model.hidden, cfg.model.layers, cfg.model.dropout) == (
        "lstm", 200, 200, 2, 0.2)
    assert (cfg.optim.lr, cfg.optim.momentum, cfg.clip._target_, cfg.clip.threshold) == (
        20.0, 0.0, "gradclip.clipping.norm.Norm", 0.25)


def test_word_lm_trains_with_dropout_on_a_word_corpus(make_cfg, corpus, tmp_path):
    """Two steps on the tiny corpus: perplexity is scored, and dropout (training only) changes the training loss."""
    import pandas as pd

    from conftest import train_one

    losses = {}
    for dropout in (0.0, 0.2):
        overrides = ["+preset=word_lm", f"task.data_dir={corpus}", "steps=2", "eval_every=2", "task.eval_tokens=50",
                     "model.hidden=16", "model.embedding=8", f"model.dropout={dropout}"]
        summary = train_one(make_cfg(*overrides), tmp_path / str(dropout), overrides=overrides)
        assert summary.metric == "ppl" and summary.final_metric > 1
        losses[dropout] = pd.read_csv(tmp_path / str(dropout) / "metrics.csv").loss
    assert losses[0.0][0] != losses[0.2][0]


def test_make_reproduce_scale_paper_overrides_compose(make_cfg):
    """The overrides `make reproduce SCALE=paper` gives reproduce.py, on each experiment it names."""
    command = subprocess.run(["make", "--no-print-directory", "-n", "reproduce", "SCALE=paper"], cwd=ROOT, text=True,
                             capture_output=True,
                             check=True).stdout.splitlines()[-1].split()
    assert command[1].endswith("experiments/reproduce.py")
    options = next(i for i, arg in enumerate(command) if arg.startswith("--"))
    names = command[2:options]
    overrides = [command[i + 1] for i, arg in enumerate(command) if arg == "--override"]
    assert names == ["exploding", "smoothness"] and "+preset=charlm_lstm_paper" in overrides
    assert command[command.index("--results") + 1] == "results/paper"  # never mixed with the default scale's
    for name in names:
        cfg = make_cfg(f"+experiment={name}", "setup=charlm_lstm", *overrides)
        assert (cfg.model.hidden, cfg.steps, cfg.setup_name) == (512, 20000, "charlm_lstm")
        validate(cfg)
