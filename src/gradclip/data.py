"""Tasks: where the batches come from, how they are scored, and what "reached the target" means. All offline.

Each task exposes the same small interface: ``batch(generator)`` for one training batch, ``loss(output, y)``,
``evaluate(model)`` for the held-out metrics, the shapes a model needs (``vocab_size`` or ``input_dim``,
``output_dim``, ``readout``), and ``info`` for the run summary. ``metric`` is the headline held-out number;
``target_metric`` (lower is better) is the one ``task.target`` is compared with.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from pathlib import Path

import torch
import torch.nn.functional as F

# torchtext is not used on purpose (see README): its last release is built for torch 2.3 and fails to import with
# newer ones. The tokenizer and vocabulary below are all a character or word model needs.


class Vocab:
    """Token <-> id map built from the training text; tokens unseen in training map to <unk>."""

    UNK = "<unk>"

    def __init__(self, tokens: list[str]):
        self.itos = [self.UNK] + sorted(Counter(tokens))
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]) -> torch.Tensor:
        return torch.tensor([self.stoi.get(t, 0) for t in tokens], dtype=torch.long)


def tokenize(text: str, level: str) -> list[str]:
    """Characters, or whitespace-separated words with <eos> at each line end (as in word_language_model)."""
    if level == "char":
        return list(text)
    return [w for line in text.splitlines() for w in line.split() + ["<eos>"]]


def load_corpus(data_dir: str | None) -> tuple[dict[str, str], dict]:
    """Train/valid/test texts and a description (source, size, sha256) of what was read.

    A ``data_dir`` corpus is read by ``config.read_corpus``: ConfigError for a file that validate would refuse.
    """
    if data_dir is None:
        from pydoc_data import topics

        text = "\n\n".join(topics.topics[key] for key in sorted(topics.topics))
        n = len(text)
        splits = {"train": text[: int(0.9 * n)], "valid": text[int(0.9 * n) : int(0.95 * n)], "test": text[int(0.95 * n) :]}
        source = f"pydoc_data.topics (CPython {sys.version.split()[0]}), split 90/5/5"
    else:
        from gradclip.config import read_corpus

        splits = read_corpus(data_dir)
        source = str(Path(data_dir).expanduser().resolve())
    digest = hashlib.sha256()
    for name in sorted(splits):
        digest.update(splits[name].encode("utf-8"))
    info = {"source": source, "chars": {k: len(v) for k, v in splits.items()}, "sha256": digest.hexdigest()}
    return splits, info


class CharLM:
    """Next-token prediction on random windows of the training text; held-out score in bits/char (or perplexity)."""

    readout = "all"
    input_dim = None

    def __init__(self, cfg, device):
        self.cfg, self.device, self.level = cfg, device, cfg.level.value
        splits, corpus = load_corpus(cfg.data_dir)
        train_tokens = tokenize(splits["train"], self.level)
        self.vocab = Vocab(train_tokens)
        self.train_ids = self.vocab.encode(train_tokens)
        valid = self.vocab.encode(tokenize(splits["valid"], self.level))[: cfg.eval_tokens + 1]
        window = cfg.bptt + 1
        chunks = [valid[i : i + window] for i in range(0, len(valid) - 1, cfg.bptt)]
        self.valid_chunks = [c.to(device) for c in chunks if len(c) >= 2]
        self.vocab_size = self.output_dim = len(self.vocab)
        self.metric = "bpc" if self.level == "char" else "ppl"
        self.target_metric = self.metric
        self.info = {"corpus": corpus, "vocab_size": len(self.vocab), "train_tokens": len(self.train_ids)}

    def batch(self, gen: torch.Generator):
        starts = torch.randint(0, len(self.train_ids) - self.cfg.bptt - 1, (self.cfg.batch_size,), generator=gen)
        windows = self.train_ids[starts[:, None] + torch.arange(self.cfg.bptt + 1)].to(self.device)
        return windows[:, :-1], windows[:, 1:]

    def loss(self, out, y):
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        total, count = 0.0, 0
        for chunk in self.valid_chunks:
            out = model(chunk[None, :-1])
            total += F.cross_entropy(out[0], chunk[1:], reduction="sum").item()
            count += len(chunk) - 1
        nats = total / count
        score = nats / math.log(2) if self.level == "char" else math.exp(min(nats, 700.0))
        return {"loss": nats, self.metric: score}


class Synthetic:
    """A generated sequence task: fresh training batches from the run's generator, a fixed held-out set."""

    readout, vocab_size = "last", None

    def __init__(self, cfg, device):
        self.cfg, self.device = cfg, device
        gen = torch.Generator().manual_seed(cfg.data_seed)
        self.eval_batches = [self._sample(gen, min(100, cfg.eval_size - i)) for i in range(0, cfg.eval_size, 100)]
        self.info = {"generator": f"Pascanu et al. 2013 {cfg.name}", "seq_len": cfg.seq_len}

    def batch(self, gen):  # subclasses define _sample(gen, n) -> (x, y)
        return self._sample(gen, self.cfg.batch_size)


class Adding(Synthetic):
    """Pascanu et al.'s adding problem: inputs (value in [0,1], marker); target = mean of the two marked values."""

    input_dim, output_dim = 2, 1
    metric, target_metric = "mse", "error_rate"

    def _sample(self, gen, n):
        length = self.cfg.seq_len + int(torch.randint(0, self.cfg.seq_len // 10 + 1, (1,), generator=gen))
        values = torch.rand(n, length, generator=gen)
        first = torch.randint(0, max(1, length // 10), (n,), generator=gen)
        second = torch.randint(max(1, length // 10), length // 2, (n,), generator=gen)
        markers = torch.zeros(n, length)
        rows = torch.arange(n)
        markers[rows, first] = 1.0
        markers[rows, second] = 1.0
        x = torch.stack([values, markers], dim=-1)
        y = (values[rows, first] + values[rows, second])[:, None] / 2
        return x.to(self.device), y.to(self.device)

    def loss(self, out, y):
        return F.mse_loss(out, y)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        errors = torch.cat([((model(x) - y) ** 2).flatten() for x, y in self.eval_batches])
        mse = errors.mean().item()
        return {"loss": mse, "mse": mse, "error_rate": (errors > 0.04).float().mean().item()}


class TemporalOrder(Synthetic):
    """Pascanu et al.'s temporal order problem: 6 one-hot symbols; A/B at two early spots decide 1 of 4 classes."""

    input_dim, output_dim = 6, 4
    metric, target_metric = "accuracy", "error_rate"

    def _sample(self, gen, n):
        length = self.cfg.seq_len
        symbols = torch.randint(2, 6, (n, length), generator=gen)  # distractors: symbols 2..5
        relevant = torch.randint(0, 2, (n, 2), generator=gen)  # A = 0, B = 1
        rows = torch.arange(n)
        first = torch.randint(int(0.1 * length), max(int(0.2 * length), int(0.1 * length) + 1), (n,), generator=gen)
        second = torch.randint(int(0.5 * length), max(int(0.6 * length), int(0.5 * length) + 1), (n,), generator=gen)
        symbols[rows, first] = relevant[:, 0]
        symbols[rows, second] = relevant[:, 1]
        x = F.one_hot(symbols, 6).float()
        y = relevant[:, 0] * 2 + relevant[:, 1]  # AA=0, AB=1, BA=2, BB=3
        return x.to(self.device), y.to(self.device)

    def loss(self, out, y):
        return F.cross_entropy(out, y)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        outs = [(model(x), y) for x, y in self.eval_batches]
        loss = sum(F.cross_entropy(o, y, reduction="sum").item() for o, y in outs) / self.cfg.eval_size
        accuracy = sum((o.argmax(-1) == y).sum().item() for o, y in outs) / self.cfg.eval_size
        return {"loss": loss, "accuracy": accuracy, "error_rate": 1 - accuracy}


class Tabular:
    """A fixed train/held-out split of a scikit-learn data set that ships with the package (no download)."""

    readout, vocab_size = "last", None

    def __init__(self, cfg, device):
        from sklearn.datasets import load_digits, make_regression
        from sklearn.model_selection import train_test_split

        self.cfg, self.device, self.classify = cfg, device, cfg.name == "digits"
        if self.classify:
            x, y = load_digits(return_X_y=True)
            test_fraction, source = cfg.test_fraction, "sklearn.datasets.load_digits (1797 x 64, bundled)"
        else:
            x, y = make_regression(n_samples=cfg.samples, n_features=cfg.features, noise=cfg.noise,
                                   random_state=cfg.data_seed)
            test_fraction, source = 0.5, f"sklearn.datasets.make_regression ({cfg.samples} x {cfg.features})"
        x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=test_fraction, random_state=cfg.data_seed)
        if self.classify:  # standardise pixels with the training statistics; regression targets stay unscaled
            mean, std = x_train.mean(0), x_train.std(0) + 1e-8
            x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
        as_y = (lambda a: torch.tensor(a, dtype=torch.long)) if self.classify else (
            lambda a: torch.tensor(a, dtype=torch.float32)[:, None])
        self.x_train = torch.tensor(x_train, dtype=torch.float32).to(device)
        self.y_train = as_y(y_train).to(device)
        self.x_test = torch.tensor(x_test, dtype=torch.float32).to(device)
        self.y_test = as_y(y_test).to(device)
        self.input_dim = x.shape[1]
        self.output_dim = 10 if self.classify else 1
        self.metric = "accuracy" if self.classify else "mse"
        self.target_metric = "error_rate" if self.classify else "mse"
        self.info = {"data": source, "train": len(x_train), "held_out": len(x_test)}

    def batch(self, gen):
        rows = torch.randint(0, len(self.x_train), (self.cfg.batch_size,), generator=gen).to(self.device)
        return self.x_train[rows], self.y_train[rows]

    def loss(self, out, y):
        return F.cross_entropy(out, y) if self.classify else F.mse_loss(out, y)

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        out = model(self.x_test)
        loss = self.loss(out, self.y_test).item()
        if not self.classify:
            return {"loss": loss, "mse": loss}
        accuracy = (out.argmax(-1) == self.y_test).float().mean().item()
        return {"loss": loss, "accuracy": accuracy, "error_rate": 1 - accuracy}


class Cliff:
    """Pascanu et al.'s cliff (Eq. 8): no data; the loss E = (sigmoid(x_T) - goal)^2 depends on (w, b) alone."""

    readout = vocab_size = input_dim = output_dim = None
    metric = target_metric = "error"

    def __init__(self, cfg, device):
        self.cfg = cfg
        self.info = {"model": "Pascanu et al. 2013, Eq. 8", "length": cfg.length, "x0": cfg.x0, "goal": cfg.goal}

    def batch(self, gen):
        return None, None  # full-batch: the same loss every step

    def loss(self, out, y):
        return (torch.sigmoid(out) - self.cfg.goal) ** 2

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        error = float(self.loss(model(), None))
        return {"loss": error, "error": error}


TASKS = {"charlm": CharLM, "adding": Adding, "temporal_order": TemporalOrder, "digits": Tabular, "regression": Tabular,
         "cliff": Cliff}


def build_task(cfg, device):
    return TASKS[cfg.name](cfg, device)
