"""AdaGC (Wang et al. 2025, "Improving training stability for large language model pretraining"): each tensor clipped
against an EMA of its own clipped norms, as the authors' code computes it (``lishuai-97/AdaGC``,
``megatron-gpt2.patch``: ``megatron/optimizer/clip_grads.py``, class ``AdaGC``; also ``kozistr/pytorch_optimizer``,
``pytorch_optimizer/optimizer/adagc.py``):

- warm-up, the first ``warmup_steps`` steps: the global norm clipped at ``warmup_max_norm`` (clip_grad_norm_'s
  formula); gamma_i, per tensor, is the smallest clipped norm of tensor i seen in the warm-up;
- then g_i <- g_i * lambda_rel gamma_i / (||g_i|| + 1e-6) when ||g_i|| > lambda_rel gamma_i (strictly), and
  gamma_i <- beta gamma_i + (1 - beta) min(||g_i||, lambda_rel gamma_i), the clipped norm (the authors' code takes
  the threshold itself for a clipped tensor).

A step with a non-finite gradient (never applied) leaves the state alone. Every trainable tensor is clipped, the
output layer too.
"""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import EPS, Clipper, ClipStats
from gradclip.component import positive, rule


@dataclass
class AdaGC(Clipper):
    warmup_steps: int = rule(lambda v: v >= 1, "an integer >= 1")
    warmup_max_norm: float = rule(positive, "a number > 0")  # global clipping threshold of the warm-up
    lambda_rel: float = rule(positive, "a number > 0")  # a tensor is clipped above lambda_rel x its gamma
    beta: float = rule(lambda v: 0 <= v < 1, "a number in [0, 1)")  # EMA factor of gamma

    def __post_init__(self):
        self.steps = 0  # finite gradients seen
        self.gamma = None  # one per tensor, in the order of the parameters (a tensor)
        self.share = 0.0  # this step's share of tensors clipped

    def state_dict(self) -> dict:
        return {"steps": self.steps, "gamma": self.gamma}

    def load_state_dict(self, state: dict) -> None:
        self.steps, self.gamma = state["steps"], state["gamma"]

    def diagnostics(self) -> dict[str, float]:
        return {"tensor_clip_share": self.share}

    def clip(self, params: list) -> ClipStats:
        import torch

        norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
        total = torch.linalg.vector_norm(norms)
        self.share = 0.0
        if not torch.isfinite(total):
            return ClipStats(float(total), float(total), False)
        if self.steps < self.warmup_steps:
            scales = torch.clamp(self.warmup_max_norm / (total + EPS), max=1.0).expand_as(norms)
            clipped = norms * scales
            self.gamma = clipped if self.gamma is None else torch.minimum(self.gamma, clipped)
        else:
            limit = self.lambda_rel * self.gamma
            scales = torch.where(norms > limit, limit / (norms + EPS), 1.0)
            self.gamma = self.beta * self.gamma + (1 - self.beta) * torch.minimum(norms, limit)
        self.steps += 1
        for p, scale in zip(params, scales):
            p.grad.mul_(scale)
        clipped_tensors = scales < 1
        self.share = float(clipped_tensors.float().mean())
        return ClipStats(float(total), float(torch.linalg.vector_norm(norms * scales)), bool(clipped_tensors.any()))
