"""Batched forward and backward for a population of runs: MLPs of one shape share one matrix product per layer
wherever that is bit-identical to each run alone, so a run's numbers never depend on the population it is in."""

from __future__ import annotations

import copy

import torch
from torch import nn

ELEMENTWISE = (nn.Tanh, nn.ReLU)  # layers applied to the stacked activations as they are


def _same_mlps(models: list[nn.Module]) -> bool:
    """Whether every model is a Sequential of Linear and elementwise layers, all of one shape."""
    layers = [list(m.children()) for m in models]
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
    return all(isinstance(m, nn.Sequential) for m in models) and all(s == shapes[0] for s in shapes) and all(
        len(ls) == len(layers[0]) and all(type(a) is type(b) and isinstance(a, (nn.Linear, *ELEMENTWISE))
                                          for a, b in zip(ls, layers[0])) for ls in layers)


class _StackedLinear(torch.autograd.Function):
    """``x @ weight^T + bias`` for a stack of models (leading dimension), with the backward ``nn.Linear`` uses.

    The forward and the input gradient are one batched product each; the weight gradient is each model's own
    ``grad^T @ x``, as ``nn.Linear`` computes it: a batched product rounds differently there for some shapes
    (10 x 32 @ 32 x 128 on this CPU), and the models' gradients must be bit-identical to the ones they get alone.
    """

    @staticmethod
    def forward(ctx, x, weight, bias):
        ctx.save_for_backward(x, weight)
        return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        grad_x = grad.bmm(weight) if ctx.needs_input_grad[0] else None
        grad_weight = torch.stack([g.t().mm(xi) for g, xi in zip(grad, x)])  # bmm rounds differently here
        return grad_x, grad_weight, grad.sum(1)


def batched_forward(models: list[nn.Module], inputs: list, batched: bool) -> list[torch.Tensor]:
    """Each model's output on its own input; with ``batched``, MLPs of one shape as one stack (``_StackedLinear``)."""
    if not batched:
        return [m(x) for m, x in zip(models, inputs)]
    h = torch.stack(inputs)
    for layers in zip(*(m.children() for m in models)):
        if isinstance(layers[0], nn.Linear):
            weight = torch.stack([layer.weight for layer in layers])
            bias = torch.stack([layer.bias for layer in layers])
            h = _StackedLinear.apply(h, weight, bias)
        else:
            h = layers[0](h)  # elementwise
    return list(h.unbind(0))


def batching_is_exact(models: list[nn.Module], inputs: list) -> bool:
    """Whether ``batched_forward(..., batched=True)`` gives every model, bit for bit, the outputs and gradients it
    computes alone, tried on copies of the models with these inputs.

    Batched matrix products are exact per model for most shapes on CPU, but not all (an output layer of width 1
    goes through a matrix-vector kernel alone); the shapes, not the values, decide, so one probe per population
    settles it. Not exact (or not MLPs of one shape): the models run one after another. Under autocast (bf16, fp16)
    nothing is batched: ``_StackedLinear`` saves its inputs uncast.
    """
    if len(models) < 2 or not _same_mlps(models):
        return False
    alone, together = copy.deepcopy(models), copy.deepcopy(models)
    for m, x in zip(alone, inputs):
        m(x).square().sum().backward()
    outputs = batched_forward(together, inputs, batched=True)
    torch.stack([out.square().sum() for out in outputs]).sum().backward()
    return all(torch.equal(out, a(x)) for out, a, x in zip(outputs, alone, inputs)) and all(
        torch.equal(p.grad, q.grad) for a, t in zip(alone, together) for p, q in zip(a.parameters(), t.parameters()))
