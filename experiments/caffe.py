"""C7's check, no training: our ``norm`` clip and the SGD update after it compute what Caffe's SGDSolver does.

Caffe clips with ``clip_gradients``: when the L2 norm of the gradients of ALL learnable parameters exceeds the
threshold, every gradient is scaled by threshold / norm, before weight decay is added (ClipGradients, then Regularize,
then the momentum update). An independent numpy implementation of that runs beside our ``norm`` clip followed by
``torch.optim.SGD(momentum, weight_decay)`` on random gradients of a small MLP, for 1-3 steps; the clipped gradients
and the parameters after the updates are compared (max abs difference). Two controls show the check can fail: the
other order (decay added, then clipped) and per-tensor clipping (Keras ``clipnorm``) against Caffe's.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

SEMANTICS_TOL = 1e-6  # max abs difference (float32 parameters and gradients of magnitude <= ~1)
ANCHOR = ("Caffe: clip_gradients (default -1 = off): global L2 over all learnable parameters, applied before weight "
          "decay (docs/sources.md); Keras clipnorm is per variable, global_clipnorm global")


# ---------------------------------------------------------------- semantics (no training)
def caffe_clip(grads: list[np.ndarray], threshold: float) -> list[np.ndarray]:
    """Caffe's SGDSolver::ClipGradients: one L2 norm over every learnable parameter's diff."""
    norm = np.sqrt(sum(float((g.astype(np.float64) ** 2).sum()) for g in grads))
    return [g * (threshold / norm) for g in grads] if norm > threshold else [g.copy() for g in grads]


def caffe_steps(weights, grads_per_step, threshold, lr, momentum, wd, clip_first: bool = True):
    """Caffe's SGD: ClipGradients, Regularize (diff += wd * w), history = momentum * history + lr * diff,
    w -= history. ``clip_first=False`` is the other order (decay first, then clip), a control."""
    weights = [w.copy() for w in weights]
    history = [np.zeros_like(w) for w in weights]
    for grads in grads_per_step:
        if clip_first:
            diffs = [g + wd * w for g, w in zip(caffe_clip(grads, threshold), weights)]
        else:
            diffs = caffe_clip([g + wd * w for g, w in zip(grads, weights)], threshold)
        history = [momentum * h + lr * d for h, d in zip(history, diffs)]
        weights = [w - h for w, h in zip(weights, history)]
    return weights


CASES = [  # grad scale, threshold, weight decay, momentum, steps
    (10.0, 1.0, 0.0, 0.0, 1), (10.0, 1.0, 1e-2, 0.0, 1), (0.01, 1.0, 1e-2, 0.0, 1),
    (3.0, 0.25, 5e-4, 0.9, 3), (10.0, 1.0, 0.05, 0.9, 3)]


def semantics(*args, **kwargs) -> pd.DataFrame:
    """``_semantics`` on one torch thread (tiny tensors: more threads only wait for each other), then restored."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _semantics(*args, **kwargs)
    finally:
        torch.set_num_threads(threads)


def _semantics(lr: float = 0.1) -> pd.DataFrame:
    import torch

    from types import SimpleNamespace

    from gradclip.clipping.norm import Norm
    from gradclip.clipping.per_tensor import PerTensor
    from gradclip.models.mlp import MLP, Activation

    rows = []
    for case, (scale, threshold, wd, momentum, n_steps) in enumerate(CASES):
        torch.manual_seed(case)
        model = MLP(depth=2, width=32, activation=Activation.relu, init_gain=1.0).build(
            SimpleNamespace(input_dim=64, output_dim=10))
        params = list(model.parameters())
        weights = [p.detach().double().numpy().copy() for p in params]
        optimizer = torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=wd)
        grads_per_step, clip_diff, per_tensor_diff, fired, norms = [], 0.0, 0.0, False, []
        for _ in range(n_steps):
            raw = [torch.randn_like(p) * scale for p in params]
            grads = [g.double().numpy().copy() for g in raw]
            grads_per_step.append(grads)
            expected = caffe_clip(grads, threshold)
            for p, g in zip(params, raw):  # control: per-tensor clipping (Keras clipnorm) vs Caffe's global one
                p.grad = g.clone()
            PerTensor(name="per_tensor", threshold=threshold)(params)
            per_tensor_diff = max(per_tensor_diff, max(float(np.abs(p.grad.double().numpy() - e).max())
                                                       for p, e in zip(params, expected)))
            for p, g in zip(params, raw):
                p.grad = g.clone()
            stats = Norm(name="norm", threshold=threshold)(params)
            fired |= stats.fired
            norms.append(stats.pre_norm)
            clip_diff = max(clip_diff, max(float(np.abs(p.grad.double().numpy() - e).max())
                                           for p, e in zip(params, expected)))
            optimizer.step()
        ours = [p.detach().double().numpy() for p in params]
        caffe = caffe_steps(weights, grads_per_step, threshold, lr, momentum, wd)
        other_order = caffe_steps(weights, grads_per_step, threshold, lr, momentum, wd, clip_first=False)
        rows.append({"case": case, "grad_scale": scale, "threshold": threshold, "weight_decay": wd,
                     "momentum": momentum, "lr": lr, "steps": n_steps, "global_norm_max": float(max(norms)),
                     "clipped": bool(fired), "clip_max_abs_diff": clip_diff,
                     "update_max_abs_diff": max(float(np.abs(o - c).max()) for o, c in zip(ours, caffe)),
                     "control_other_order_diff": max(float(np.abs(o - c).max()) for o, c in zip(other_order, caffe)),
                     "control_per_tensor_diff": per_tensor_diff})
    return pd.DataFrame(rows)


def check(table: pd.DataFrame) -> tuple[str, str]:
    """(numbers, "check passed" | "check failed"): ours equals Caffe's on every case and both controls differ."""
    ours = max(table.clip_max_abs_diff.max(), table.update_max_abs_diff.max())
    clipped = table[table.clipped]
    controls = min(clipped[clipped.weight_decay > 0].control_other_order_diff.min(),
                   clipped.control_per_tensor_diff.min())
    passed = ours < SEMANTICS_TOL and controls > 100 * SEMANTICS_TOL
    return (f"max abs difference ours vs Caffe's formula {ours:.1e} over {len(table)} cases (tolerance "
            f"{SEMANTICS_TOL:g}); the controls (decay before clipping, per-tensor clipping) differ by >= "
            f"{controls:.1e}",
            "check passed" if passed else "check failed")

