"""Models: a recurrent net (LSTM / GRU / tanh RNN) for sequences and tokens, and an MLP for vectors."""

from __future__ import annotations

import copy

import torch
from torch import nn


class RecurrentNet(nn.Module):
    """Tokens or vectors in; a prediction at every step (language model) or at the last step only."""

    def __init__(self, cell: str, hidden: int, layers: int, embedding: int, output_dim: int, readout: str,
                 vocab_size: int | None = None, input_dim: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, embedding) if vocab_size else None
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}[cell]  # nn.RNN's default nonlinearity is tanh
        self.rnn = recurrent(embedding if vocab_size else input_dim, hidden, layers, batch_first=True)
        self.head = nn.Linear(hidden, output_dim)
        self.readout = readout
        self.output_layer = self.head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.embed(x) if self.embed is not None else x)
        return self.head(h if self.readout == "all" else h[:, -1])


class MLP(nn.Module):
    """`depth` hidden layers of `width` units; Xavier-normal weights with `init_gain`, zero biases."""

    def __init__(self, input_dim: int, output_dim: int, depth: int, width: int, activation: str, init_gain: float):
        super().__init__()
        act = {"tanh": nn.Tanh, "relu": nn.ReLU}[activation]
        sizes = [input_dim] + [width] * depth
        layers = [m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), act())]
        self.net = nn.Sequential(*layers, nn.Linear(sizes[-1], output_dim))
        self.output_layer = self.net[-1]
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight, gain=init_gain)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CliffRNN(nn.Module):
    """Pascanu et al.'s one hidden unit without input, x_t = w * sigmoid(x_{t-1}) + b, unrolled `length` steps."""

    def __init__(self, w0: float, b0: float, length: int, x0: float):
        super().__init__()
        self.w = nn.Parameter(torch.tensor(w0, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b0, dtype=torch.float64))
        self.length, self.x0 = length, x0

    def forward(self, _=None) -> torch.Tensor:
        x = torch.tensor(self.x0, dtype=torch.float64, device=self.w.device)
        for _ in range(self.length):
            x = self.w * torch.sigmoid(x) + self.b
        return x

    def trace(self) -> dict[str, float]:
        """The parameters themselves, logged every step (there are only two)."""
        return {"w": self.w.item(), "b": self.b.item()}


def build_model(cfg, task) -> nn.Module:
    if cfg.name == "cliff":
        return CliffRNN(cfg.w0, cfg.b0, task.cfg.length, task.cfg.x0)
    if cfg.name == "mlp":
        return MLP(task.input_dim, task.output_dim, cfg.depth, cfg.width, cfg.activation.value, cfg.init_gain)
    return RecurrentNet(cfg.cell.value, cfg.hidden, cfg.layers, cfg.embedding, task.output_dim, task.readout,
                        vocab_size=task.vocab_size, input_dim=task.input_dim)


def _same_mlps(models: list[nn.Module]) -> bool:
    shapes = [[tuple(p.shape) for p in m.parameters()] for m in models]
    first = models[0]
    return all(type(m) is MLP for m in models) and all(s == shapes[0] for s in shapes) and all(
        type(a) is type(b) for m in models for a, b in zip(m.net, first.net))


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
    for layers in zip(*(m.net for m in models)):
        if isinstance(layers[0], nn.Linear):
            weight = torch.stack([layer.weight for layer in layers])
            bias = torch.stack([layer.bias for layer in layers])
            h = _StackedLinear.apply(h, weight, bias)
        else:
            h = layers[0](h)  # the activation: elementwise
    return list(h.unbind(0))


def batching_is_exact(models: list[nn.Module], inputs: list) -> bool:
    """Whether ``batched_forward(..., batched=True)`` gives every model, bit for bit, the outputs and gradients it
    computes alone, tried on copies of the models with these inputs.

    Batched matrix products are exact per model for most shapes on CPU, but not all (an output layer of width 1
    goes through a matrix-vector kernel alone); the shapes, not the values, decide, so one probe per population
    settles it. Not exact (or not MLPs of one shape): the models run one after another.
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
