"""A GPT as nanoGPT writes it (Karpathy, model.py): decoder-only, causal self-attention, pre-LayerNorm blocks with a
GELU MLP, learned positions, the token embedding tied to the output layer; initialised N(0, 0.02), the residual
projections N(0, 0.02 / sqrt(2 x layers)).

Options beyond nanoGPT: ``qk_norm`` (LayerNorm on each head's queries and keys, Wortsman et al. 2023) and ``z_loss``
(``z_loss x log^2 Z`` added to the training loss, Z the softmax normaliser, PaLM; 0 = off). The z-loss is part of
the training loss only: the held-out metric is the task's plain cross-entropy. The context length is the task's
sequence length (``task.bptt``).
"""

from __future__ import annotations

from dataclasses import dataclass

from omegaconf import MISSING

from gradclip.component import ConfigError, non_negative, positive, rule
from gradclip.models import Model

AT_LEAST_ONE = (lambda v: v >= 1, "an integer >= 1")


@dataclass
class GPT(Model):
    layers: int = rule(*AT_LEAST_ONE)  # nanoGPT's n_layer
    heads: int = rule(*AT_LEAST_ONE)  # n_head
    width: int = rule(*AT_LEAST_ONE)  # n_embd
    dropout: float = rule(lambda v: 0 <= v < 1, "a number in [0, 1)")
    bias: bool = MISSING  # biases in the Linear layers and LayerNorms
    qk_norm: bool = MISSING
    z_loss: float = rule(non_negative, "a finite number >= 0 (0 = off)")
    init_std: float = rule(positive, "a number > 0")
    accepts = "sequence"

    def check(self) -> None:
        if self.width % self.heads:
            raise ConfigError(f"model.width={self.width}: must be a multiple of model.heads={self.heads}")

    def check_task(self, task) -> None:
        if getattr(task, "bptt", None) is None or task.readout != "all":
            raise ConfigError(f"model=gpt: needs a language-model task with token inputs (task=charlm), got "
                              f"task={task.name}")

    def loss(self, task, out, y):
        """The task's loss plus the z-loss, ``z_loss x mean(logsumexp(logits)^2)``, when it is on."""
        loss = task.loss(out, y)
        if self.z_loss == 0:
            return loss
        return loss + self.z_loss * out.float().logsumexp(-1).pow(2).mean()

    def build(self, task):
        return network(self, task.vocab_size, task.bptt)


def network(cfg: GPT, vocab_size: int, block_size: int):
    """nanoGPT's GPT module for ``cfg``: token ids [batch, time <= block_size] in, logits [batch, time, vocab] out."""
    import math

    import torch
    import torch.nn.functional as F
    from torch import nn

    width, heads = cfg.width, cfg.heads

    class CausalSelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_attn = nn.Linear(width, 3 * width, bias=cfg.bias)  # queries, keys, values of all heads at once
            self.c_proj = nn.Linear(width, width, bias=cfg.bias)
            self.q_norm = nn.LayerNorm(width // heads, bias=cfg.bias) if cfg.qk_norm else None
            self.k_norm = nn.LayerNorm(width // heads, bias=cfg.bias) if cfg.qk_norm else None
            self.resid_dropout = nn.Dropout(cfg.dropout)

        def forward(self, x):
            B, T, C = x.size()
            q, k, v = (t.view(B, T, heads, C // heads).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
            if cfg.qk_norm:
                q, k = self.q_norm(q), self.k_norm(k)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=cfg.dropout if self.training else 0.0,
                                               is_causal=True)
            return self.resid_dropout(self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.c_fc = nn.Linear(width, 4 * width, bias=cfg.bias)
            self.gelu = nn.GELU()
            self.c_proj = nn.Linear(4 * width, width, bias=cfg.bias)
            self.dropout = nn.Dropout(cfg.dropout)

        def forward(self, x):
            return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(width, bias=cfg.bias)
            self.attn = CausalSelfAttention()
            self.ln_2 = nn.LayerNorm(width, bias=cfg.bias)
            self.mlp = MLP()

        def forward(self, x):
            x = x + self.attn(self.ln_1(x))
            return x + self.mlp(self.ln_2(x))

    class GPTNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.transformer = nn.ModuleDict(dict(
                wte=nn.Embedding(vocab_size, width),
                wpe=nn.Embedding(block_size, width),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block() for _ in range(cfg.layers)]),
                ln_f=nn.LayerNorm(width, bias=cfg.bias),
            ))
            self.lm_head = nn.Linear(width, vocab_size, bias=False)  # the output layer: the last child (AGC)
            self.transformer.wte.weight = self.lm_head.weight  # weight tying: one tensor
            self.apply(self._init_weights)
            for name, p in self.named_parameters():
                if name.endswith("c_proj.weight"):
                    nn.init.normal_(p, mean=0.0, std=cfg.init_std / math.sqrt(2 * cfg.layers))

        @staticmethod
        def _init_weights(module):
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=cfg.init_std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)

        def forward(self, idx):
            pos = torch.arange(idx.size(1), device=idx.device)
            x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))
            for block in self.transformer.h:
                x = block(x)
            return self.lm_head(self.transformer.ln_f(x))

    return GPTNet()
