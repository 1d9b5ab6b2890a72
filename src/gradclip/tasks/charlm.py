"""Character- (or word-) level language modelling: next-token prediction on random windows of the training text;
the held-out score is bits per character (perplexity at ``level=word``) on the validation text (``split=validation``)
or the test text (``split=test``). All offline.

The default corpus is the English help text inside this CPython (``pydoc_data.topics``), split 90/5/5 into
train/validation/test; ``data_dir=DIR`` reads DIR/train.txt, valid.txt[, test.txt] (the WikiText-2 / PTB
layout), or DIR/input.txt split as nanoGPT splits it: the first 90 % train, the last 10 % validation, which is also
the test split then (there is no third part). Nothing is downloaded.
torchtext is not used on purpose (README): its last release is built for torch 2.3 and fails to import with newer
ones; the tokenizer and vocabulary below are all a character or word model needs.
"""

from __future__ import annotations

import hashlib
import math
import sys
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Optional

from omegaconf import MISSING

from gradclip.component import ConfigError, rule
from gradclip.tasks import AT_LEAST_ONE, Split, Task


class Level(Enum):
    char = "char"
    word = "word"


def tokenize(text: str, level: Level) -> list[str]:
    """Characters, or whitespace-separated words with <eos> at each line end (as in word_language_model)."""
    if level == Level.char:
        return list(text)
    return [w for line in text.splitlines() for w in line.split() + ["<eos>"]]


class Vocab:
    """Token <-> id map built from the training text; tokens unseen in training map to <unk>."""

    UNK = "<unk>"

    def __init__(self, tokens: list[str]):
        self.itos = [self.UNK] + sorted(Counter(tokens))
        self.stoi = {tok: i for i, tok in enumerate(self.itos)}

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str]):
        import torch

        return torch.tensor([self.stoi.get(t, 0) for t in tokens], dtype=torch.long)


def _read_text(path: Path) -> str | None:
    """The text of a regular, readable, non-blank UTF-8 file; None if there is no such path, else ValueError why not."""
    try:
        if not path.exists():
            return None
        if not path.is_file():
            raise ValueError(f"{path.name} is not a regular file")
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # newlines as read_text
    except PermissionError:
        raise ValueError(f"{path.name} is not readable (permission denied)") from None
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
                         ) from None
    if not text.strip():
        raise ValueError(f"{path.name} is empty" + (" (whitespace only)" if text else ""))
    return text


def read_corpus(data_dir: str) -> dict[str, str]:
    """The texts of DIR/train.txt, valid.txt and test.txt (if there) by split, or of DIR/input.txt split 90/10 (test =
    validation); ConfigError for a folder or file that won't do."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"task.data_dir={data_dir}: no such folder (it needs train.txt and valid.txt, or input.txt)")
    if (folder / "input.txt").exists():
        if (folder / "train.txt").exists():
            raise ConfigError(f"task.data_dir={data_dir}: has both input.txt and train.txt; keep the one to read")
        try:
            text = _read_text(folder / "input.txt")
        except ValueError as exc:
            raise ConfigError(f"task.data_dir={data_dir}: {exc}") from None
        cut = int(len(text) * 0.9)  # nanoGPT's data/shakespeare_char/prepare.py
        return {"train": text[:cut], "valid": text[cut:], "test": text[cut:]}
    splits = {}
    for split in ("train", "valid", "test"):
        try:
            text = _read_text(folder / f"{split}.txt")
        except ValueError as exc:
            raise ConfigError(f"task.data_dir={data_dir}: {exc}") from None
        if text is not None:
            splits[split] = text
        elif split != "test":
            raise ConfigError(f"task.data_dir={data_dir}: no {split}.txt in it (needs train.txt and valid.txt, or "
                              "input.txt)")
    return splits


def load_corpus(data_dir: str | None) -> tuple[dict[str, str], dict]:
    """Train/valid/test texts and a description (source, size, sha256) of what was read."""
    if data_dir is None:
        from pydoc_data import topics

        text = "\n\n".join(topics.topics[key] for key in sorted(topics.topics))
        n = len(text)
        splits = {"train": text[: int(0.9 * n)], "valid": text[int(0.9 * n) : int(0.95 * n)], "test": text[int(0.95 * n) :]}
        source = f"pydoc_data.topics (CPython {sys.version.split()[0]}), split 90/5/5"
    else:
        splits = read_corpus(data_dir)
        folder = Path(data_dir).expanduser().resolve()
        source = str(folder) + (" (input.txt split 90/10 as nanoGPT; test = validation)"
                                if (folder / "input.txt").exists() else "")
    digest = hashlib.sha256()
    for name in sorted(splits):
        digest.update(splits[name].encode("utf-8"))
    info = {"source": source, "chars": {k: len(v) for k, v in splits.items()}, "sha256": digest.hexdigest()}
    return splits, info


@dataclass
class CharLM(Task):
    data_dir: Optional[str] = rule(lambda v: v.strip() != "", "a folder path (null = CPython's pydoc topics)")
    level: Level = MISSING
    bptt: int = rule(lambda v: v >= 2, "an integer >= 2")  # tokens per training sequence
    batch_size: int = rule(*AT_LEAST_ONE)
    eval_tokens: int = rule(lambda v: v >= 2, "an integer >= 2")  # held-out tokens scored at each evaluation
    kind = "sequence"
    readout = "all"

    @property
    def metric(self) -> str:
        return "bpc" if self.level == Level.char else "ppl"

    @property
    def metric_unit(self) -> str:
        return "bits/char" if self.level == Level.char else "perplexity"

    @property
    def target_metric(self) -> str:
        return self.metric

    @property
    def held_out(self) -> str:
        """The corpus split ``evaluate`` scores."""
        return "valid" if self.split == Split.validation else "test"

    def check(self) -> None:
        word = self.level == Level.word
        if self.target is not None and not self.target > (1 if word else 0):
            raise ConfigError(f"task.target={self.target}: must be {'a perplexity > 1' if word else 'bits/char > 0'} "
                              f"at task.level={self.level.value} (lower is never reached)")
        if self.data_dir is None:
            return
        splits = read_corpus(self.data_dir)
        if self.held_out not in splits:
            raise ConfigError(f"task.split=test: task.data_dir={self.data_dir} has no test.txt (split=validation "
                              "scores valid.txt)")
        needs = {"train": (self.bptt + 2, f"for task.bptt={self.bptt}"),
                 self.held_out: (2, "(a token and the next one)")}
        one_file = (Path(self.data_dir).expanduser() / "input.txt").exists()
        for split, (least, why) in needs.items():
            count = len(tokenize(splits[split], self.level))
            if count < least:
                part = f"input.txt's {split} part" if one_file else f"{split}.txt"
                raise ConfigError(f"task.data_dir={self.data_dir}: {part} has {count} tokens at "
                                  f"task.level={self.level.value}; it needs at least {least} {why}")

    def setup(self, device) -> None:
        import torch

        splits, corpus = load_corpus(self.data_dir)
        self.device = device
        train_tokens = tokenize(splits["train"], self.level)
        self.vocab = Vocab(train_tokens)
        self.train_ids = self.vocab.encode(train_tokens)
        held = self.vocab.encode(tokenize(splits[self.held_out], self.level))[: self.eval_tokens + 1]
        full = (len(held) - 1) // self.bptt  # chunks of bptt + 1 tokens, each overlapping the next by one
        chunks = held[torch.arange(full)[:, None] * self.bptt + torch.arange(self.bptt + 1)]
        rows = max(1, 2**25 // (self.bptt * len(self.vocab)))  # chunks per forward: logits of <= 128 MB
        rest = held[full * self.bptt :]  # the shorter last chunk
        batches = list(chunks.split(rows)) if full else []
        self.eval_batches = [b.to(device) for b in batches + ([rest[None]] if len(rest) >= 2 else [])]
        self.vocab_size = self.output_dim = len(self.vocab)
        self.info = {"corpus": corpus, "vocab_size": len(self.vocab), "train_tokens": len(self.train_ids)}

    def batch(self, gen):
        import torch

        starts = torch.randint(0, len(self.train_ids) - self.bptt - 1, (self.batch_size,), generator=gen)
        windows = self.train_ids[starts[:, None] + torch.arange(self.bptt + 1)].to(self.device)
        return windows[:, :-1], windows[:, 1:]

    def loss(self, out, y):
        import torch.nn.functional as F

        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))

    def evaluate(self, model) -> dict[str, float]:
        import torch.nn.functional as F

        total, count = 0.0, 0
        for chunks in self.eval_batches:
            out = model(chunks[:, :-1])
            total += F.cross_entropy(out.reshape(-1, out.shape[-1]), chunks[:, 1:].reshape(-1), reduction="sum").item()
            count += chunks[:, 1:].numel()
        nats = total / count
        score = nats / math.log(2) if self.level == Level.char else math.exp(min(nats, 700.0))
        return {"loss": nats, self.metric: score}
