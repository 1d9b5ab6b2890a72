"""optax's ``skip_large_updates`` with ``MultiSteps``' skip (``google-deepmind/optax``,
``optax/transforms/_accumulation.py``) around any torch optimizer: the wrapped optimizer computes its step; when the
squared global L2 norm of that update is not below ``max_squared_norm`` (a NaN one included, as optax's
``logical_not(norm_sq < max_squared_norm)``), the step is undone, weights and optimizer state (moments, step counts)
put back bit for bit, as optax's ``MultiSteps`` keeps its inner state on a skipped step.

What is measured: optax's function gets what enters ``MultiSteps.update``, in its usual use the gradient (its
protocol's docstring calls it "the updates that the gradient transformation has proposed"); here, as the issue asks,
it is the wrapped optimizer's update Δθ (weight decay included), the step the weights would take. Around Adam that
has little grip: its first step moves every weight by lr, and a spike later by about as much at most, so a threshold
that lets training start lets spikes through (tests/test_remedies.py).
"""

from __future__ import annotations

import torch
from hydra.utils import get_class


class SkipLargeUpdates(torch.optim.Optimizer):
    """``inner`` (a class path, e.g. torch.optim.AdamW) built with the other arguments; its param_groups and state are
    this optimizer's, so the lr schedule and checkpoints reach them."""

    def __init__(self, params, inner: str, max_squared_norm: float, **settings):
        self.inner = get_class(inner)(params, **settings)
        self.max_squared_norm = max_squared_norm
        self.skipped = False  # whether the last step was undone
        super().__init__(self.inner.param_groups, self.inner.defaults)
        self.state = self.inner.state

    def diagnostics(self) -> dict[str, float]:
        return {"skipped_update": int(self.skipped)}

    def load_state_dict(self, state_dict: dict) -> None:
        self.inner.load_state_dict(state_dict)
        self.param_groups, self.state = self.inner.param_groups, self.inner.state

    @torch.no_grad()
    def step(self, closure=None):
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        before = [p.clone() for p in params]
        saved = {p: {k: v.clone() if torch.is_tensor(v) else v for k, v in self.state[p].items()}
                 for p in params if p in self.state}
        loss = self.inner.step(closure)
        squared = sum(torch.sum((p - b).double() ** 2) for p, b in zip(params, before))
        self.skipped = not squared < self.max_squared_norm
        if self.skipped:
            for p, b in zip(params, before):
                p.copy_(b)
                if p in saved:
                    self.state[p] = saved[p]
                else:
                    del self.state[p]
        return loss
