"""StableAdamW (Wortsman et al. 2023): AdamW with update clipping, each tensor's lr divided by its update RMS.

Reference: torch-optimi's ``stableadamw`` (``warner-benjamin/optimi``, ``optimi/stableadamw.py``, its for-loop path,
fp32, ``decouple_lr=False``). Step t of a tensor with gradient g:

- the moments with optimi's debiased betas, beta_t = beta (1 - beta^(t-1)) / (1 - beta^t): m <- beta1_t m +
  (1 - beta1_t) g, v <- beta2_t v + (1 - beta2_t) g^2 (the same numbers as Adam's bias-corrected m-hat, v-hat);
- RMS_t = sqrt(mean(g^2 / max(v, eps^2))) with v after this step's update (as optimi), over the tensor alone;
- lr_t = lr / max(1, RMS_t); decoupled weight decay p <- p (1 - lr_t weight_decay), before the Adam step
  p <- p - lr_t m / (sqrt(v) + eps).

Left out: optimi's fully decoupled weight decay (``decouple_lr``), Kahan summation (low-precision parameters) and
its foreach / Triton kernels (the same numbers, faster).
"""

from __future__ import annotations

import math

import torch

from gradclip.optimizers import ReportingOptimizer


def debiased(beta: float, step: int) -> float:
    """optimi's ``debias_beta``: beta (1 - beta^(step-1)) / (1 - beta^step), in its simplified form."""
    return (beta**step - beta) / (beta**step - 1)


class StableAdamW(ReportingOptimizer):
    COLUMNS = ("update_rms", "update_clipped_share")  # the largest RMS_t; share of tensors with RMS_t > 1

    def __init__(self, params, lr: float, betas: tuple[float, float], eps: float, weight_decay: float):
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay})

    def update(self) -> dict[str, float]:
        rms_values = []
        for group in self.param_groups:
            group["step"] = step = group.get("step", 0) + 1
            beta1, beta2 = (debiased(beta, step) for beta in group["betas"])
            eps, weight_decay = group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                grad, m, v = p.grad, state["exp_avg"], state["exp_avg_sq"]
                m.lerp_(grad, weight=1 - beta1)
                v.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                rms = grad.square().div_(v.clamp(min=eps**2)).mean().sqrt().item()
                rms_values.append(rms)
                lr = group["lr"] / max(1.0, rms)
                if weight_decay != 0:
                    p.mul_(1 - lr * weight_decay)
                p.addcdiv_(m, v.sqrt().add_(eps), value=-lr)
        if not rms_values:
            return dict.fromkeys(self.COLUMNS, math.nan)
        return {"update_rms": max(rms_values), "update_clipped_share": sum(r > 1 for r in rms_values) / len(rms_values)}
