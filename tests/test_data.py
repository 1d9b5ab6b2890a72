import hashlib

import pytest
import torch

from gradclip.tasks.charlm import Level, Vocab, load_corpus, tokenize

from conftest import build


def test_adding_labels_are_the_mean_of_the_two_marked_values(make_cfg):
    task, _ = build(make_cfg("task=adding", "model=rnn", "task.seq_len=40"))
    x, y = task.batch(torch.Generator().manual_seed(0))
    assert x.shape[0] == 20 and 40 <= x.shape[1] <= 44 and x.shape[2] == 2
    markers = x[..., 1]
    assert torch.equal(markers.sum(1), torch.full((20,), 2.0))
    positions = markers.nonzero()[:, 1].view(20, 2)
    length = x.shape[1]
    assert (positions[:, 0] < length // 10).all() and (positions[:, 1] >= length // 10).all()
    assert (positions[:, 1] < length // 2).all()
    expected = (x[..., 0] * markers).sum(1, keepdim=True) / 2
    assert torch.allclose(y, expected)


def test_temporal_order_labels_follow_the_two_relevant_symbols(make_cfg):
    task, _ = build(make_cfg("task=temporal_order", "model=rnn", "task.seq_len=60"))
    x, y = task.batch(torch.Generator().manual_seed(0))
    assert x.shape == (20, 60, 6) and torch.equal(x.sum(-1), torch.ones(20, 60))  # one-hot
    symbols = x.argmax(-1)
    for row, label in zip(symbols, y):
        relevant = (row < 2).nonzero().flatten()
        assert len(relevant) == 2
        assert 6 <= relevant[0] < 12 and 30 <= relevant[1] < 36  # [0.1L, 0.2L) and [0.5L, 0.6L)
        assert int(label) == int(row[relevant[0]]) * 2 + int(row[relevant[1]])
    assert set(y.tolist()) == {0, 1, 2, 3}


def test_heldout_sets_are_fixed_and_training_batches_follow_the_seed(make_cfg):
    cfg = make_cfg("task=adding", "model=rnn")
    (a, _), (b, _) = build(cfg), build(cfg)
    assert all(torch.equal(xa, xb) for (xa, _), (xb, _) in zip(a.eval_batches, b.eval_batches))
    batch = lambda seed: a.batch(torch.Generator().manual_seed(seed))[0]  # noqa: E731
    assert torch.equal(batch(3), batch(3)) and not torch.equal(batch(3)[:, :40], batch(4)[:, :40])


def test_vocab_and_tokenizer():
    vocab = Vocab(tokenize("abca", Level.char))
    assert len(vocab) == 4 and vocab.encode(list("abz")).tolist() == [1, 2, 0]  # unseen -> <unk> (0)
    assert tokenize("a b\nc", Level.word) == ["a", "b", "<eos>", "c", "<eos>"]


def test_default_corpus_is_pythons_own_and_hashed():
    splits, info = load_corpus(None)
    from pydoc_data import topics

    text = "\n\n".join(topics.topics[k] for k in sorted(topics.topics))
    assert "".join(splits[k] for k in ("train", "valid", "test")) == text
    assert info["sha256"] == hashlib.sha256("".join(splits[k] for k in sorted(splits)).encode()).hexdigest()
    assert sum(info["chars"].values()) == len(text) > 100_000


def test_data_dir_word_level(make_cfg, tmp_path):
    (tmp_path / "train.txt").write_text("the cat sat\non the mat\n" * 50)
    (tmp_path / "valid.txt").write_text("the dog sat\n" * 20)
    task, _ = build(make_cfg(f"task.data_dir={tmp_path}", "task.level=word", "task.bptt=4"))
    assert task.metric == "ppl" and task.info["corpus"]["source"] == str(tmp_path.resolve())
    assert "dog" not in task.vocab.stoi  # the vocabulary comes from train.txt only
    x, y = task.batch(torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (32, 4) and torch.equal(x[:, 1:], y[:, :-1])


def test_empty_corpus_is_refused(make_cfg, tmp_path):
    (tmp_path / "train.txt").write_text("")
    (tmp_path / "valid.txt").write_text("x")
    with pytest.raises(ValueError, match="empty"):
        build(make_cfg(f"task.data_dir={tmp_path}"))


@pytest.mark.parametrize("name", ["digits", "regression"])
def test_tabular_tasks_need_no_download(make_cfg, name):
    task, _ = build(make_cfg(f"task={name}", "model=mlp"))
    x, y = task.batch(torch.Generator().manual_seed(0))
    assert x.shape == (32, task.input_dim) and len(y) == 32
    if name == "regression":
        assert float(task.y_train.std()) > 50  # unscaled targets: the exploding-MLP case
