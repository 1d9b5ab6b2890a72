"""Each parameter tensor clipped to its own L2 norm threshold (Keras clipnorm, TF clip_by_norm): not one global norm,
so the direction of the whole gradient changes when some tensors are clipped and others are not."""

from __future__ import annotations

from dataclasses import dataclass

from gradclip.clipping import EPS, Clipper, ClipStats
from gradclip.component import rule


@dataclass
class PerTensor(Clipper):
    threshold: float = rule(lambda v: v > 0, "a number > 0 (inf = never clip)")

    def clip(self, params: list) -> ClipStats:
        import torch
        from torch.nn.utils import clip_grads_with_norm_

        norms = torch.stack([torch.linalg.vector_norm(p.grad) for p in params])
        above = norms > self.threshold  # strictly, as for the global norm
        for p, n, clipped in zip(params, norms, above):
            if clipped:
                clip_grads_with_norm_([p], self.threshold, n, foreach=True)
        post = torch.where(above, norms * torch.clamp(self.threshold / (norms + EPS), max=1.0), norms)
        pre, post = torch.linalg.vector_norm(norms), torch.linalg.vector_norm(post)
        return ClipStats(float(pre), float(post), bool(above.any()))
