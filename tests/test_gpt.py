"""The GPT, AdamW's parameter groups, the lr schedule, the input.txt corpus layout and the nanoGPT presets."""

import math
import os
from pathlib import Path

import pandas as pd
import pytest
import torch
from hydra.utils import get_class
from omegaconf import OmegaConf

from gradclip.component import typed
from gradclip.config import ConfigError, validate
from gradclip.tasks.charlm import load_corpus
from gradclip.training import build_optimizer

from conftest import build, train_one

GPT = ["model=gpt", "task.batch_size=4", "task.bptt=16"]
SHAKESPEARE = Path(os.environ.get("TINYSHAKESPEARE", "/work/shared/data/tinyshakespeare"))  # holds input.txt


@pytest.mark.parametrize("qk_norm", [False, True])
def test_a_future_token_never_changes_earlier_logits(make_cfg, qk_norm):
    torch.manual_seed(0)
    task, net = build(make_cfg(*GPT, f"model.qk_norm={qk_norm}"))
    x, _ = task.batch(torch.Generator().manual_seed(0))
    changed = x.clone()
    changed[:, 10] = (x[:, 10] + 1) % task.vocab_size
    before, after = net(x), net(changed)
    assert torch.equal(before[:, :10], after[:, :10])
    assert not torch.allclose(before[:, 10:], after[:, 10:])  # it does change its own and later positions


def test_embedding_and_output_layer_are_one_tensor(make_cfg):
    _, net = build(make_cfg(*GPT))
    assert net.transformer.wte.weight is net.lm_head.weight
    assert sum(p is net.lm_head.weight for p in net.parameters()) == 1  # trained and clipped once
    assert list(net.children())[-1] is net.lm_head  # the output layer AGC leaves alone


def test_qk_norm_and_bias_add_their_parameters(make_cfg):
    _, plain = build(make_cfg(*GPT))
    _, normed = build(make_cfg(*GPT, "model.qk_norm=true", "model.bias=true"))
    names = {n for n, _ in normed.named_parameters()} - {n for n, _ in plain.named_parameters()}
    assert "transformer.h.0.attn.q_norm.weight" in names and "transformer.h.1.attn.k_norm.bias" in names
    assert "transformer.h.0.mlp.c_fc.bias" in names and "transformer.ln_f.bias" in names
    assert not any(n.endswith("bias") for n, _ in plain.named_parameters())  # nanoGPT's bias=False


def test_z_loss_is_added_to_the_training_loss_only(make_cfg):
    cfg = make_cfg(*GPT, "model.z_loss=0.01")
    torch.manual_seed(0)
    task, net = build(cfg)
    model = typed("model", cfg.model)
    x, y = task.batch(torch.Generator().manual_seed(0))
    out = net(x)
    z = torch.logsumexp(out, dim=-1).pow(2).mean()
    assert z > 1  # log Z of a near-uniform softmax over the vocabulary: ~ log(vocab size)
    assert torch.allclose(model.loss(task, out, y), task.loss(out, y) + 0.01 * z)
    off = typed("model", make_cfg(*GPT).model)
    assert torch.equal(off.loss(task, out, y), task.loss(out, y))


def test_with_z_loss_the_logged_loss_has_it_and_the_held_out_loss_has_not(make_cfg, tmp_path):
    rows = {}
    for weight in (0.0, 0.1):
        train_one(make_cfg(*GPT, f"model.z_loss={weight}", "steps=1"), tmp_path / str(weight))
        rows[weight] = pd.read_csv(tmp_path / str(weight) / "metrics.csv")
    assert rows[0.1].val_loss.iloc[0] == rows[0.0].val_loss.iloc[0]  # same init: plain cross-entropy both
    assert rows[0.1].loss.iloc[1] > rows[0.0].loss.iloc[1] + 0.1  # + 0.1 x log^2 Z, log Z ~ log(vocab) > 1


def test_adamw_decays_weight_matrices_only(make_cfg):
    cfg = make_cfg(*GPT, "optim=adamw", "model.bias=true")
    _, net = build(cfg)
    decay, rest = build_optimizer(cfg.optim, net).param_groups
    names = {id(p): n for n, p in net.named_parameters()}
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    assert sorted(names[id(p)].split(".", 3)[-1] for p in decay["params"] if ".h.0." in names[id(p)]) == [
        "attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"]
    assert len(decay["params"]) == 4 * 2  # two blocks
    kept = {names[id(p)] for p in rest["params"]}
    assert {"transformer.wte.weight", "transformer.wpe.weight", "transformer.ln_f.weight",
            "transformer.h.0.attn.c_attn.bias"} <= kept
    assert len(decay["params"]) + len(rest["params"]) == len(list(net.parameters()))


def test_adamw_on_a_network_without_embeddings_decays_its_linear_weights(make_cfg):
    cfg = make_cfg("setup=digits_mlp", "optim=adamw")
    _, net = build(cfg)
    decay, rest = build_optimizer(cfg.optim, net).param_groups
    assert [p.dim() for p in decay["params"]] == [2, 2] and [p.dim() for p in rest["params"]] == [1, 1]


def test_cosine_schedule_values(make_cfg):
    schedule = typed("schedule", make_cfg("schedule=cosine", "schedule.warmup_iters=10",
                                          "schedule.lr_decay_iters=110", "schedule.min_lr_ratio=0.1").schedule)
    assert schedule.factor(0) == pytest.approx(1 / 11)  # nanoGPT: lr x (it + 1) / (warmup_iters + 1)
    assert schedule.factor(9) == pytest.approx(10 / 11)
    assert schedule.factor(10) == 1.0  # warm-up ends at the peak
    assert schedule.factor(60) == pytest.approx(0.55)  # halfway through the decay: halfway to the floor
    assert schedule.factor(110) == pytest.approx(0.1)
    assert schedule.factor(111) == schedule.factor(10_000) == 0.1
    assert typed("schedule", make_cfg().schedule).factor(0) == 1.0  # schedule=none


def test_lr_decay_iters_follows_steps(make_cfg):
    assert typed("schedule", make_cfg("schedule=cosine", "steps=321").schedule).lr_decay_iters == 321


def test_a_run_steps_at_the_scheduled_lr_on_any_model(make_cfg, tmp_path):
    overrides = ["setup=digits_mlp", "optim=adamw", "optim.lr=0.01", "schedule=cosine", "schedule.warmup_iters=4",
                 "steps=20", "eval_every=10"]
    summary = train_one(make_cfg(*overrides), tmp_path / "run")
    lrs = pd.read_csv(tmp_path / "run" / "metrics.csv").lr.iloc[1:].tolist()
    schedule = typed("schedule", make_cfg(*overrides).schedule)
    assert lrs == pytest.approx([0.01 * schedule.factor(i) for i in range(20)])
    assert lrs[0] == pytest.approx(0.002) and lrs[4] == 0.01 and lrs[-1] < 0.0011
    assert summary.status == "ok" and summary.lr == 0.01 and summary.optim == "adamw"  # the peak lr


def test_gpt_trains_through_run_py_with_clipping_and_z_loss(make_cfg, tmp_path):
    summary = train_one(make_cfg(*GPT, "optim=adamw", "schedule=cosine", "schedule.warmup_iters=3", "clip=norm1",
                                 "model.qk_norm=true", "model.z_loss=1e-4", "steps=12", "eval_every=6",
                                 "diag_every=1"), tmp_path / "run")
    metrics = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert summary.status == "ok" and summary.model == "gpt" and summary.final_metric < metrics.val_bpc.iloc[0]
    assert summary.model_params["qk_norm"] is True and metrics.grad_norm_clipped.iloc[1:].max() <= 1 + 1e-6


def write_input(folder: Path, text: str) -> Path:
    folder.mkdir()
    (folder / "input.txt").write_text(text)
    return folder


def test_input_txt_is_split_90_10_as_nanogpt(make_cfg, tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    folder = write_input(tmp_path / "corpus", text)
    splits, info = load_corpus(str(folder))
    assert splits == {"train": text[:900], "valid": text[900:], "test": text[900:]}
    assert info["chars"] == {"train": 900, "valid": 100, "test": 100} and "test = validation" in info["source"]
    validate(make_cfg(f"task.data_dir={folder}", "task.split=test"))
    (folder / "train.txt").write_text(text)
    with pytest.raises(ConfigError, match="has both input.txt and train.txt"):
        validate(make_cfg(f"task.data_dir={folder}"))


def test_input_txt_too_short_for_bptt_says_which_part(make_cfg, tmp_path):
    folder = write_input(tmp_path / "corpus", "x" * 50)
    with pytest.raises(ConfigError) as refused:
        validate(make_cfg(f"task.data_dir={folder}"))
    assert str(refused.value) == (f"task.data_dir={folder}: input.txt's train part has 45 tokens at task.level=char; "
                                  "it needs at least 66 for task.bptt=64")


PRESETS = {  # nanoGPT's README CPU recipe and config/train_shakespeare_char.py
    "nanogpt_cpu": {"model.layers": 4, "model.heads": 4, "model.width": 128, "task.bptt": 64, "task.batch_size": 12,
                    "steps": 2000, "optim.lr": 1e-3, "schedule.warmup_iters": 100, "schedule.lr_decay_iters": 2000,
                    "model.dropout": 0.0},
    "nanogpt_shakespeare_char": {"model.layers": 6, "model.heads": 6, "model.width": 384, "task.bptt": 256,
                                 "task.batch_size": 64, "steps": 5000, "optim.lr": 1e-3, "model.dropout": 0.2,
                                 "schedule.warmup_iters": 100, "schedule.lr_decay_iters": 5000},
}
COMMON = {"optim.betas": [0.9, 0.99], "optim.weight_decay": 0.1, "clip.threshold": 1.0, "schedule.min_lr_ratio": 0.1,
          "model.bias": False, "task.level": "char"}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_nanogpt_presets_compose_and_validate(make_cfg, tmp_path, preset):
    folder = write_input(tmp_path / "shakespeare", "To be, or not to be: that is the question.\n" * 100)
    cfg = make_cfg(f"+preset={preset}", f"task.data_dir={folder}")
    validate(cfg)
    for key, value in {**PRESETS[preset], **COMMON}.items():
        assert OmegaConf.to_container(OmegaConf.create({"v": OmegaConf.select(cfg, key)}))["v"] == value, key
    assert get_class(cfg.optim._target_) is torch.optim.AdamW and cfg.clip._target_.endswith("norm.Norm")
    assert cfg.setup_name == preset and cfg.optim.lr * cfg.schedule.min_lr_ratio == pytest.approx(1e-4)


def test_nanogpt_cpu_preset_without_the_data_is_refused(make_cfg, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="task.data_dir=data/shakespeare_char: no such folder"):
        validate(make_cfg("+preset=nanogpt_cpu"))


@pytest.mark.slow
@pytest.mark.skipif(not (SHAKESPEARE / "input.txt").is_file(), reason=f"no tiny Shakespeare at {SHAKESPEARE}")
def test_nanogpt_cpu_preset_reaches_nanogpts_validation_loss(make_cfg, tmp_path):
    """nanoGPT's README: ~1.88 nats after its CPU recipe (docs/gpt.md: 1.907 here; 5 min of CPU on one thread)."""
    summary = train_one(make_cfg("+preset=nanogpt_cpu", f"task.data_dir={SHAKESPEARE}"), tmp_path / "run")
    nats = summary.final_metric * math.log(2)  # the suite's metric is bits per character
    assert summary.status == "ok" and 1.80 <= nats <= 1.95, nats
