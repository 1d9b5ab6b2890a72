"""Runs trained together as one population give each run the numbers it gets alone, bit for bit."""

from pathlib import Path

import pytest
import torch

from gradclip.population import batched_forward, batching_is_exact
from gradclip.sweep import Job
from gradclip.training import run_jobs

from conftest import build, train_one


def jobs(make_cfg, folder: Path, setup: list[str], variants: list[list[str]]) -> list[Job]:
    return [Job(make_cfg(*setup, *v), folder / str(i), "g", f"run{i}", v) for i, v in enumerate(variants)]


VARIANTS = [["seed=0"], ["seed=1", "clip=norm1"], ["seed=2", "clip=value", "clip.threshold=0.1"],
            ["seed=3", "optim.lr=0.05", "optim.momentum=0.9"], ["seed=4", "clip=autoclip"],
            ["seed=5", "optim.weight_decay=0.01", "clip=per_tensor", "clip.threshold=1"], ["seed=6", "clip=agc"], ["seed=7", "clip=zclip"]]


@pytest.mark.parametrize("setup,batched", [
    (["setup=digits_deep_mlp", "steps=60", "eval_every=20"], True),
    (["setup=regression_mlp", "steps=60", "eval_every=20", "optim.lr=0.001"], False),  # width-1 output: not exact
    (["task=digits", "model=mlp", "model.activation=relu", "steps=40", "eval_every=20", "optim.lr=0.1"], True),
    (["task=digits", "model=mlp", "precision=fp16", "steps=30", "eval_every=10", "optim.lr=0.1"], False),  # no kernel
])
def test_population_equals_runs_trained_alone(make_cfg, tmp_path, setup, batched):
    """Eight runs (seeds, clip methods, lrs, momentum, weight decay) in one population vs each trained alone: same files."""
    together = run_jobs(jobs(make_cfg, tmp_path / "together", setup, VARIANTS))
    for job in jobs(make_cfg, tmp_path / "alone", setup, VARIANTS):
        alone = train_one(job.cfg, job.job_dir, job.name, job.overrides)
        assert alone.status == together[int(job.job_dir.name)].status
        mine = (tmp_path / "together" / job.job_dir.name / "metrics.csv").read_bytes()
        assert mine == (job.job_dir / "metrics.csv").read_bytes(), job.overrides
    assert {s.status for s in together} >= {"ok"}
    assert all(s.population == 8 for s in together)
    assert all((s.batched_steps > 0) == batched for s in together)


def test_batched_forward_and_backward_are_each_models_own(make_cfg):
    cfg = make_cfg("setup=digits_deep_mlp")
    models, inputs = [], []
    for seed in range(4):
        torch.manual_seed(seed)
        task, model = build(cfg)
        models.append(model)
        inputs.append(task.batch(torch.Generator().manual_seed(seed))[0])
    assert batching_is_exact(models, inputs)
    outputs = batched_forward(models, inputs, batched=True)
    torch.stack([o.square().mean() for o in outputs]).sum().backward()
    together = [[p.grad.clone() for p in m.parameters()] for m in models]
    for m, x, out, grads in zip(models, inputs, outputs, together):
        m.zero_grad()
        alone = m(x)
        alone.square().mean().backward()
        assert torch.equal(out, alone)
        assert all(torch.equal(g, p.grad) for g, p in zip(grads, m.parameters()))


def test_batching_is_refused_where_it_is_not_exact(make_cfg):
    """The regression MLP's output layer has width 1: alone it is a matrix-vector product, which rounds differently
    from a batched one, so its population runs one model after another (and still equals each run alone)."""
    built = [build(make_cfg("setup=regression_mlp")) for _ in range(3)]
    task, models = built[0][0], [model for _, model in built]
    inputs = [task.batch(torch.Generator().manual_seed(seed))[0] for seed in range(3)]
    assert not batching_is_exact(models, inputs)
    assert all(p.grad is None for m in models for p in m.parameters())  # the probe works on copies


def test_a_population_whose_runs_all_crash_still_returns(make_cfg, tmp_path, monkeypatch):
    import gradclip.training as training

    def broken(self, out):
        raise ValueError("bad loss")

    monkeypatch.setattr(training.Run, "check_divergence", broken)
    summaries = run_jobs(jobs(make_cfg, tmp_path, ["task=digits", "model=mlp", "steps=5"], VARIANTS[:2]))
    assert [s["status"] for s in summaries] == ["failed", "failed"]
    assert all(s["error"] == "ValueError: bad loss" for s in summaries)
