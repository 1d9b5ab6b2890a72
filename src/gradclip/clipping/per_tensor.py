"""Each parameter tensor clipped to its own L2 norm threshold (Keras clipnorm, TF clip_by_norm): not one global norm,
so the direction of the whole gradient changes when some tensors are clipped and others are not. A tensor above the
threshold is scaled as ``clip_grad_norm_`` would scale it alone, bit for bit: one fused norm, one fused
multiplication."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import Clipper, ClipStats, clip_factor, rounding
from gradclip.component import rule


@dataclass
class PerTensor(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def clip(self, params: list) -> ClipStats:
        import torch

        grads = [p.grad for p in params]
        norms = torch.stack(torch._foreach_norm(grads))
        rnd, values = rounding(norms.dtype), norms.tolist()
        factors = [clip_factor(n, self.threshold, rnd) if n > self.threshold else 1.0 for n in values]  # strictly
        clipped = [i for i, n in enumerate(values) if n > self.threshold]
        if clipped:
            torch._foreach_mul_([grads[i] for i in clipped], [factors[i] for i in clipped])
        post = torch.tensor([rnd(n * f) for n, f in zip(values, factors)], dtype=norms.dtype, device=norms.device)
        pre, post = torch.linalg.vector_norm(norms), torch.linalg.vector_norm(post)
        return ClipStats(pre.item(), post.item(), bool(clipped))
