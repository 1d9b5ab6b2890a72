"""SPAM, Spike-Aware Adam with Momentum Reset (Huang et al. 2025), as the authors' code computes it in its dense mode.

Reference: the authors' pre-release ``galore_torch/SPAM.py`` (class ``AdamW``; the copy read is
``ffuhu/SPAM-tests``, ``galore_torch/SPAM.py``, of ``TianjinYellow/SPAM-Optimizer``), checked against
pytorch-optimizer's port (``kozistr/pytorch_optimizer``, ``pytorch_optimizer/optimizer/spam.py``). Step n (1, 2, ...):

- moments reset: m and v are set to 0 before step n when n is a multiple of ``reset_interval``;
- spike clipping, against v of the previous step (0 after a reset): g_i <- sign(g_i) sqrt(threshold v_i) where
  g_i^2 > threshold v_i; not on steps 1 .. ``spike_clip_delay`` - 1, nor on a reset step and the
  ``spike_clip_delay`` - 1 steps after it (n mod reset_interval < spike_clip_delay);
- Adam: m, v as usual; the step lr sqrt(1 - beta2^k) / (1 - beta1^k) m / (sqrt(v) + eps), k the tensor's step count
  since the start of training (the reference never restarts it at a reset), times the ramp;
- ramp: after a reset, the update is scaled by 1 - 0.99 (1 + cos(pi c / (warmup_steps + 1))) / 2, c the steps since
  the reset (0 on the reset step: 0.01), and by 1 from c = warmup_steps on; no ramp before the first reset;
- weight decay after the update: p <- p - lr weight_decay p, with the scheduled lr, not ramped (torch's AdamW decays
  before the update).

Left out: the reference's sparse momentum (``density`` masks) and its ``correct_bias=False`` option. The reference
clips ``p.grad`` in place; here a copy is clipped (the same update, p.grad left as the backward made it).
pytorch-optimizer's port evaluates the ramp one step later (0.0109 on the reset step, not 0.01).
"""

from __future__ import annotations

import math

import torch

from gradclip.optimizers import ReportingOptimizer


class SPAM(ReportingOptimizer):
    COLUMNS = ("moments_reset", "spike_clipped_share")  # 1 on a reset step; share of gradient entries clipped

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float,
                 spike_threshold: float, reset_interval: int, warmup_steps: int, spike_clip_delay: int):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})
        self.spike_threshold, self.reset_interval = spike_threshold, reset_interval
        self.warmup_steps, self.spike_clip_delay = warmup_steps, spike_clip_delay
        self.state["steps"] = 0  # steps taken (saved with the state dict)

    def ramp(self, step: int) -> float:
        """The factor of step ``step``'s update: the cosine ramp after a reset, 1 before the first one."""
        since_reset = step % self.reset_interval
        if step < self.reset_interval or since_reset >= self.warmup_steps:
            return 1.0
        return 1 - 0.99 * (1 + math.cos(math.pi * since_reset / (self.warmup_steps + 1))) / 2

    def update(self) -> dict[str, float]:
        step = self.state["steps"] = self.state["steps"] + 1
        reset = step % self.reset_interval == 0
        clip = step % self.reset_interval >= self.spike_clip_delay  # implies step >= spike_clip_delay
        ramp = self.ramp(step)
        clipped = entries = 0
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state or reset:
                    state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p), step=state.get("step", 0))
                state["step"] += 1
                grad, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                if clip:
                    limit = (v * self.spike_threshold).sqrt()
                    spikes = grad.square() > self.spike_threshold * v
                    grad = torch.where(spikes, grad.sign() * limit, grad)
                    clipped += int(spikes.sum())
                entries += grad.numel()
                m.mul_(beta1).add_(grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                k = state["step"]
                step_size = group["lr"] * (math.sqrt(1 - beta2**k) / (1 - beta1**k))
                p.addcdiv_(m, v.sqrt().add_(group["eps"]), value=-step_size * ramp)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return {"moments_reset": float(reset), "spike_clipped_share": clipped / entries if entries else math.nan}
