"""Every task scores the held-out split ``task.split`` names: validation to tune on, test to decide on."""

import math

import pytest
import torch
import torch.nn.functional as F

from gradclip.config import ConfigError, validate
from gradclip.tasks.charlm import load_corpus, tokenize

from conftest import build


def rows(x) -> set:
    return {tuple(row) for row in x.tolist()}


@pytest.mark.parametrize("name,sizes", [("digits", (1078, 359, 360)), ("regression", (500, 250, 250))])
def test_sklearn_validation_and_test_are_disjoint_and_fixed_across_run_seeds(make_cfg, name, sizes):
    task = {(split, seed): build(make_cfg(f"task={name}", "model=mlp", f"task.split={split}", f"seed={seed}"))[0]
            for split in ("validation", "test") for seed in (0, 7)}
    valid, test = task["validation", 0], task["test", 0]
    assert torch.equal(valid.x_eval, task["validation", 7].x_eval) and torch.equal(test.y_eval, task["test", 7].y_eval)
    assert (len(valid.x_train), len(valid.x_eval), len(test.x_eval)) == sizes
    assert not rows(valid.x_eval) & rows(test.x_eval) and not rows(valid.x_train) & rows(test.x_eval)
    assert torch.equal(valid.x_train, test.x_train)  # the split scored leaves training alone
    assert test.info == {**valid.info, "scored": "test"} and valid.info["validation"] == sizes[1]


@pytest.mark.parametrize("name", ["adding", "temporal_order"])
def test_generated_sequences_differ_between_splits(make_cfg, name):
    (valid, _), (test, _), (again, _) = (build(make_cfg(f"task={name}", "model=rnn", f"task.split={split}"))
                                         for split in ("validation", "test", "test"))
    assert sum(len(x) for x, _ in test.eval_batches) == test.eval_size == 1000
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(test.eval_batches, again.eval_batches))
    assert not any(torch.equal(a[:, :40], b[:, :40]) for (a, _), (b, _) in zip(valid.eval_batches, test.eval_batches))


def scored_tokens(task) -> list[int]:
    """The held-out token ids ``evaluate`` scores, read back from its batches of overlapping chunks."""
    ids = torch.cat([chunks[:, :-1].flatten() for chunks in task.eval_batches])
    return ids.tolist() + [int(task.eval_batches[-1][-1, -1])]


def test_charlm_test_split_reads_the_test_text(make_cfg):
    splits, _ = load_corpus(None)
    for split, text in (("validation", splits["valid"]), ("test", splits["test"])):
        task, _ = build(make_cfg(f"task.split={split}", "task.eval_tokens=1000"))
        assert scored_tokens(task) == task.vocab.encode(tokenize(text, task.level))[:1001].tolist()


def test_charlm_data_dir_test_split(make_cfg, tmp_path):
    for name, text in {"train.txt": "abcd" * 100, "valid.txt": "aaaa\n", "test.txt": "bbbb\n"}.items():
        (tmp_path / name).write_text(text)
    task, _ = build(make_cfg(f"task.data_dir={tmp_path}", "task.split=test", "task.bptt=2"))
    assert scored_tokens(task) == task.vocab.encode(list("bbbb\n")).tolist()
    assert [tuple(b.shape) for b in task.eval_batches] == [(2, 3)]  # 5 tokens: two full chunks, no shorter one


def test_batched_charlm_evaluate_equals_one_chunk_at_a_time(make_cfg):
    torch.manual_seed(0)
    task, model = build(make_cfg("task.eval_tokens=1000", "task.bptt=64", "model.embedding=8", "model.hidden=16"))
    assert [len(b) for b in task.eval_batches] == [15, 1]  # 15 full chunks, then one of 41 tokens
    held = torch.tensor(scored_tokens(task))
    model.eval()
    with torch.no_grad():
        total, count = 0.0, 0
        for i in range(0, len(held) - 1, 64):  # the evaluation before batching
            chunk = held[i : i + 65]
            total += F.cross_entropy(model(chunk[None, :-1])[0], chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
        scores = task.evaluate(model)
    assert count == 1000 and scores["loss"] == pytest.approx(total / count, abs=1e-5)
    assert scores["bpc"] == pytest.approx(total / count / math.log(2), abs=1e-5)


@pytest.mark.parametrize("overrides,message", [
    (["task.split=train"], "task.split: Invalid value 'train', expected one of [validation, test]"),
    (["task=digits", "model=mlp", "task.split=1"], "task.split: Invalid value '1', expected one of [validation, test]"),
])
def test_bad_split_is_refused_on_one_line(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as refused:
        validate(make_cfg(*overrides))
    assert str(refused.value) == message


def test_test_split_without_test_txt_is_refused_on_one_line(make_cfg, tmp_path):
    (tmp_path / "train.txt").write_text("the cat sat on the mat\n" * 5)
    (tmp_path / "valid.txt").write_text("the dog sat\n")
    validate(make_cfg(f"task.data_dir={tmp_path}"))  # validation needs no test.txt
    with pytest.raises(ConfigError) as refused:
        validate(make_cfg(f"task.data_dir={tmp_path}", "task.split=test"))
    message = f"task.split=test: task.data_dir={tmp_path} has no test.txt (split=validation scores valid.txt)"
    assert str(refused.value) == message


def test_cliff_accepts_either_split(make_cfg):
    for split in ("validation", "test"):
        assert validate(make_cfg("setup=cliff", f"task.split={split}")).task.split.value == split
