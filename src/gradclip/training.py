"""Training: a population of runs stepped together (a single run is a population of one), and each job's files
(config.yaml, metrics.csv, summary.json).

A run that diverges is a result, never an exception: it ends early and says so in its summary. A job that crashes
records the error in its summary.json instead and the others go on. Checkpoints every ``checkpoint_every`` steps let
a rerun resume. Runs of one population share the task and, where it is bit-identical to each run alone, the batched
forward and backward (``gradclip.population``): a run's numbers never depend on the population it was trained in.
"""

from __future__ import annotations

import functools
import io
import math
import os
import platform
import sys
import time
import traceback
from contextlib import contextmanager
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from omegaconf import OmegaConf
from torch.nn.utils import get_total_norm
from tqdm import tqdm

from gradclip.component import settings, typed
from gradclip.config import optimizer_name, parts
from gradclip.files import write_atomic, write_json
from gradclip.logger import RunLogger
from gradclip.population import batched_forward, batching_is_exact
from gradclip.summary import RunSummary, summarize
from gradclip.sweep import Job, job_config, read_summary, stamp

STEP_COLUMNS = ["step", "loss", "grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "skipped",
                "update_norm", "cosine", "smoothness", "lr"]  # no timings: same config + seed = same file, bit for bit
CHECKPOINT = "checkpoint.pt"
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # precision -> autocast dtype


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(node, model: torch.nn.Module) -> torch.optim.Optimizer:
    """The yaml's ``_target_`` class with its arguments for the model's trainable parameters, at lr = lr x lr_scale
    (the only place that product is made); with ``decay_matrices_only``, in nanoGPT's two groups."""
    from hydra.utils import get_class

    kwargs = OmegaConf.to_container(node, resolve=True)
    target, lr, scale = kwargs.pop("_target_"), kwargs.pop("lr"), kwargs.pop("lr_scale")
    params = [p for p in model.parameters() if p.requires_grad]
    if kwargs.pop("decay_matrices_only", False):
        params = decay_groups(model, params)
    return get_class(target)(params, lr=lr * scale, **kwargs)


def decay_groups(model: torch.nn.Module, params: list) -> list[dict]:
    """nanoGPT's parameter groups: weight decay on the weight matrices (dim >= 2) that are not embeddings; none on
    biases, norms and embeddings (a weight tied to an embedding is one)."""
    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding) for p in m.parameters()}
    decay = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    rest = [p for p in params if not (p.dim() >= 2 and id(p) not in embeddings)]
    return [group for group in ({"params": decay}, {"params": rest, "weight_decay": 0.0}) if group["params"]]


@functools.cache
def versions() -> dict[str, str]:
    """Library versions and the CPU's vector capability torch uses (AVX2, AVX512...): the same config and seed give
    the same bytes only where all of these match."""
    names = ["gradclip", "torch", "hydra-core", "wandb", "numpy", "pandas", "scikit-learn"]
    return {"python": platform.python_version(), **{n: version(n) for n in names},
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def failure(job: Job, exc: Exception) -> dict:
    """Record a crash (a bug, a full disk) as the job's result: summary.json with status "failed", never raised."""
    error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    summary = {"status": "failed", "error": error, "traceback": traceback.format_exc(), "group": job.group,
               "name": job.name, "overrides": list(job.overrides), "seed": job.cfg.seed,
               "setup_name": job.cfg.setup_name, **stamp()}
    tqdm.write(f"error: job {job.name} failed: {error}", file=sys.stderr)
    try:
        write_json(Path(job.job_dir) / "summary.json", summary)
    except OSError as again:
        tqdm.write(f"error: job {job.name}: could not record the failure in {job.job_dir} either: {again}",
                   file=sys.stderr)
    return summary


@contextmanager
def recorded(run: Run):
    """Run the block for one run; an exception ends that run as failed (recorded), not the population."""
    try:
        yield
    except Exception as exc:
        run.result = failure(run.job, exc)


def run_jobs(jobs: list[Job]) -> list[RunSummary | dict]:
    """Train ``jobs`` together as one population; return their summaries (a failed job's: a dict saying why).

    A job already finished is skipped; one interrupted resumes from its checkpoint. The jobs must share task and
    model config (the launcher's ``population_key``); each keeps its own seed, data order, optimizer and clipper.
    """
    results: dict[int, RunSummary | dict] = {}
    runs: list[Run] = []
    tasks: dict = {}  # built once per task config and device
    for i, job in enumerate(jobs):
        finished = read_summary(job.job_dir)
        if finished is not None:  # the sweep's start said how many were; nothing to print per job
            results[i] = RunSummary.from_dict(finished)
            count_steps(job.cfg.steps)
            continue
        try:
            runs.append(Run(i, job, tasks))
        except Exception as exc:
            results[i] = failure(job, exc)
            count_steps(job.cfg.steps)
    for run in runs:
        run.population = len(runs)
    train(runs)
    for run in runs:
        if run.result is None:
            with recorded(run):
                run.result = run.finish()
        run.logger.finish(run.result if isinstance(run.result, dict) else vars(run.result))  # always: W&B
        results[run.index] = run.result
    return [results[i] for i in range(len(jobs))]


shared_steps = None  # in a population launcher's worker: the sweep's count of steps done, shown by one bar


def count_steps(n: int) -> None:
    if shared_steps is not None:
        with shared_steps.get_lock():
            shared_steps.value += n


def train(runs: list[Run]) -> None:
    """Step every run until it has run its steps, diverged or failed. One step of the population is the block below."""
    exact: dict[tuple, bool] = {}  # whether batching is bit-identical, per set of runs stepping together
    bar = tqdm(total=max((r.loop.steps for r in runs), default=0), initial=min((r.step for r in runs), default=0),
               desc=runs[0].job.name if len(runs) == 1 else f"population of {len(runs)}", leave=False,
               disable=bool(os.environ.get("CI")) or shared_steps is not None or None,  # None: only on a terminal
               mininterval=0.5)
    count_steps(sum(r.step for r in runs))  # resumed runs start where they stopped
    while active := [r for r in runs if r.active]:
        count_steps(len(active))
        for r in active:  # the batch, drawn with the run's own generator: the same data order for every clip setting
            r.t0, r.step, r.step_ms = time.perf_counter(), r.step + 1, math.nan
            r.set_lr()
            r.optimizer.zero_grad(set_to_none=True)
            r.x, r.y = r.task.batch(r.batches)
        members, first = tuple(r.index for r in active), active[0]
        try:  # the shared forward and backward: if they fail, every run in them fails
            if members not in exact:  # probed again whenever the population changes
                exact[members] = first.autocast is None and batching_is_exact([r.model for r in active],
                                                                              [r.x for r in active])
            with torch.autocast(first.device.type, dtype=first.autocast, enabled=first.autocast is not None):
                outputs = batched_forward([r.model for r in active], [r.x for r in active], batched=exact[members])
                for r, out in zip(active, outputs):
                    with recorded(r):
                        r.batched_steps += exact[members]
                        r.loss = r.objective(out, r.y)
                        r.row = {"step": r.step, "loss": r.loss.item(), "lr": r.optimizer.param_groups[0]["lr"]}
                        r.check_divergence(r.row["loss"])
            active = [r for r in active if r.result is None]
            training = [r for r in active if r.diverged_step is None]
            if training:  # each run's gradient is its own: d(sum)/d(loss_i) = 1
                torch.stack([r.scaler.scale(r.loss) if r.scaler else r.loss for r in training]).sum().backward()
        except Exception as exc:
            for r in active:
                r.result = failure(r.job, exc)
            continue
        for r in active:
            with recorded(r):
                if r.diverged_step is None:
                    r.clip_and_update()
                if r.diverged_step is not None or r.step % r.loop.eval_every == 0 or r.step == r.loop.steps:
                    r.row.update(r.evaluate(r.step))
                r.state["rows"].append(r.row)
                r.logger.log({**r.row, "step_time_ms": r.step_ms}, step=r.step)
                if r.active and r.loop.checkpoint_every and r.step % r.loop.checkpoint_every == 0:
                    r.save_checkpoint()
        bar.update(1)
        if len(active) == 1 and (row := active[0].row)["step"] % 20 == 0:
            bar.set_postfix(loss=f"{row['loss']:.3g}", grad_norm=f"{row.get('grad_norm', math.nan):.3g}")
    bar.close()
    count_steps(sum(max(0, r.loop.steps - r.step) for r in runs))  # the steps a diverged or failed run skips


def local_smoothness(model, objective, x, y, params, before, raw_grads) -> float:
    """Zhang et al.'s estimate ||g(mid) - g(prev)|| / ||mid - prev||, mid halfway along the step, on the step's batch.

    ``before`` are the parameters before the step, ``raw_grads`` the unclipped gradients there; the parameters are
    put back as they were after the step.
    """
    after = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b, a in zip(params, before, after):
            p.copy_((a + b) / 2)
    model.zero_grad(set_to_none=True)
    objective(model(x), y).backward()
    change = float(get_total_norm([p.grad - g for p, g in zip(params, raw_grads)]))
    distance = float(get_total_norm([(a - b) / 2 for a, b in zip(after, before)]))
    with torch.no_grad():
        for p, a in zip(params, after):
            p.copy_(a)
    model.zero_grad(set_to_none=True)
    return change / distance if distance > 0 else math.nan


class Run:
    """One run of a population: its model, optimizer, clipper, data order, rows and files.

    Set up as its config says, or resumed from the job folder's checkpoint. ``train`` steps it; ``finish`` writes
    metrics.csv and summary.json.
    """

    LOOP_KEYS = ("steps", "eval_every", "diag_every", "smoothness_every", "checkpoint_every", "diverge_factor",
                 "max_nonfinite")  # read every step: plain values (an OmegaConf lookup is ~10 us)

    def __init__(self, index: int, job: Job, tasks: dict):
        self.started = time.perf_counter()
        self.index, self.job, self.cfg = index, job, job.cfg
        cfg = self.cfg
        self.result: RunSummary | dict | None = None
        self.loop = SimpleNamespace(**{key: cfg[key] for key in self.LOOP_KEYS})
        self.resolved = job_config(cfg)
        write_atomic(job.job_dir / "config.yaml", OmegaConf.to_yaml(self.resolved))
        if threads := cfg.threads or job.auto_threads:  # 0: auto, as the launcher shares the cores; else torch's
            torch.set_num_threads(threads)
        self.device = resolve_device(cfg.device.value)
        torch.manual_seed(cfg.seed)
        self.parts = parts(cfg)
        task_key = (OmegaConf.to_yaml(cfg.task), str(self.device))
        if task_key not in tasks:  # setting a task up draws nothing from torch's generator (a test checks it)
            self.parts.task.setup(self.device)
            tasks[task_key] = self.parts.task
        self.task = tasks[task_key]
        self.model = self.parts.model.build(self.task).to(self.device)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg.optim, self.model)
        self.peak_lr = self.optimizer.param_groups[0]["lr"]
        self.schedule = typed("schedule", cfg.schedule)
        self.objective = functools.partial(self.parts.model.loss, self.task)  # the training loss
        self.batches = torch.Generator().manual_seed(cfg.seed)
        self.clipper = self.parts.clip
        output_layer = list(self.model.children())[-1:]  # never clipped by AGC
        self.clipper.prepare(cfg.seed, {id(p) for m in output_layer for p in m.parameters()})
        self.autocast = AUTOCAST[cfg.precision.value]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision.value == "fp16" else None
        self.trace = getattr(self.model, "trace", None)
        self.checkpoint = job.job_dir / CHECKPOINT
        self.population, self.batched_steps = 1, 0  # run_jobs sets the population's size
        tags = (self.task.name, self.parts.model.name, self.clipper.name, optimizer_name(cfg.optim), cfg.setup_name)
        self.logger = RunLogger(self.parts.logger, str(job.job_dir), group=job.group, name=job.name,
                                config=self.resolved, tags=tags)
        if cfg.checkpoint_every and self.checkpoint.is_file():
            self.load_checkpoint()
        else:
            self.state = {"step": 0, "rows": [], "evals": [], "initial_loss": None, "nonfinite_in_row": 0,
                          "nonfinite_steps": 0, "diverged_step": None, "diverged_reason": None,
                          "step_times_ms": [], "resumed_from_step": 0}
            self.state["rows"].append({"step": 0, **self.evaluate(0)})
            self.logger.log(self.state["rows"][0], step=0)
        self.step = self.state["step"]

    @property
    def diverged_step(self) -> int | None:
        return self.state["diverged_step"]

    @property
    def active(self) -> bool:
        return self.result is None and self.diverged_step is None and self.step < self.loop.steps

    def evaluate(self, step: int) -> dict:
        self.model.eval()
        with torch.no_grad():
            scores = self.task.evaluate(self.model)
        self.model.train()
        self.state["evals"].append((step, scores))
        return {f"val_{k}": v for k, v in scores.items()}

    def set_lr(self) -> None:
        """The lr of this step's update: the peak times the schedule's factor (1 without a schedule)."""
        lr = self.peak_lr * self.schedule.factor(self.step - 1)
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def check_divergence(self, loss: float) -> None:
        """A non-finite loss, or one above diverge_factor x the first, ends the run as diverged."""
        state = self.state
        if state["initial_loss"] is None:
            state["initial_loss"] = loss
        if not (math.isfinite(loss) and loss <= self.loop.diverge_factor * state["initial_loss"]):
            state["diverged_step"] = self.step
            state["diverged_reason"] = ("non-finite loss" if not math.isfinite(loss)
                                        else f"loss > {self.loop.diverge_factor:g} x initial loss")

    def clip_and_update(self) -> None:
        """After the backward: clip, update (never with a non-finite gradient, nor when the clipper says skip), and
        the step's diagnostics."""
        loop, state, step, params = self.loop, self.state, self.step, self.params
        smooth = loop.smoothness_every > 0 and step % loop.smoothness_every == 0
        diagnose = smooth or step % loop.diag_every == 0
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)  # the true gradient, before clipping looks at its norm
        raw_grads = [p.grad.detach().clone() for p in params] if smooth else None
        self.clipper.observe(self.row["loss"])
        stats = self.clipper(params, measure=diagnose)
        skipped = not math.isfinite(stats.pre_norm)
        updated = not (skipped or stats.skip)
        state["nonfinite_in_row"] = state["nonfinite_in_row"] + 1 if skipped else 0  # too many in a row = diverged
        state["nonfinite_steps"] += skipped
        update_norm, smoothness = math.nan if updated else 0.0, math.nan
        if updated:
            before = [p.detach().clone() for p in params] if diagnose else None
            self.scaler.step(self.optimizer) if self.scaler is not None else self.optimizer.step()
            if diagnose:
                update_norm = float(get_total_norm([p.detach() - b for p, b in zip(params, before)]))
        self.step_ms = 1000 * (time.perf_counter() - self.t0)  # the smoothness probe is not part of a step's time
        if updated:
            state["step_times_ms"].append(self.step_ms)
        if smooth and updated:
            smoothness = local_smoothness(self.model, self.objective, self.x, self.y, params, before, raw_grads)
        self.row.update(grad_norm=stats.pre_norm, grad_norm_clipped=stats.post_norm, clip_scale=stats.scale,
                        clipped=int(stats.fired), skipped=int(skipped), update_norm=update_norm, cosine=stats.cosine,
                        smoothness=smoothness)
        if self.scaler is not None:
            self.scaler.update()  # after a non-finite gradient: a smaller scale next step
        if self.trace is not None:
            self.row.update(self.trace())
        for part in (self.clipper, self.optimizer) if updated else (self.clipper,):  # a remedy's own per-step
            if hasattr(part, "diagnostics"):  # account (steps skipped, resets...); the optimizer's when it stepped
                self.row.update(part.diagnostics())
        if state["nonfinite_in_row"] >= loop.max_nonfinite:
            state["diverged_step"] = step
            state["diverged_reason"] = f"{state['nonfinite_in_row']} non-finite gradients in a row"

    def save_checkpoint(self) -> None:
        """Everything this run needs to continue bit-identically, written atomically (tensors and plain values)."""
        self.state["step"] = self.step
        buffer = io.BytesIO()
        torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                    "clipper": self.clipper.state_dict(), "batches": self.batches.get_state(),
                    "torch_rng": torch.get_rng_state(), "scaler": self.scaler.state_dict() if self.scaler else None,
                    "state": self.state}, buffer)
        write_atomic(self.checkpoint, buffer.getvalue())

    def load_checkpoint(self) -> None:
        saved = torch.load(self.checkpoint, map_location=self.device, weights_only=True)  # no arbitrary unpickling
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.clipper.load_state_dict(saved["clipper"])
        self.batches.set_state(saved["batches"])
        torch.set_rng_state(saved["torch_rng"])
        if self.scaler is not None:
            self.scaler.load_state_dict(saved["scaler"])
        self.state = saved["state"]
        self.state["resumed_from_step"] = self.state["step"]

    def finish(self) -> RunSummary:
        """Write metrics.csv and summary.json (last: its presence means the job is finished), drop the checkpoint."""
        job, state, cfg, task = self.job, self.state, self.cfg, self.task
        metrics = pd.DataFrame(state["rows"])
        metrics = metrics.reindex(columns=STEP_COLUMNS + [c for c in metrics.columns if c not in STEP_COLUMNS])
        write_atomic(job.job_dir / "metrics.csv", metrics.to_csv(index=False))
        clip, model = self.parts.clip, self.parts.model
        summary = RunSummary(
            setup_name=cfg.setup_name, task=task.name, model=model.name, model_params=settings(model),
            clip=clip.name, clip_method=clip.method, clip_threshold=getattr(clip, "threshold", None),
            clip_params=settings(clip), optim=optimizer_name(cfg.optim),
            lr=self.peak_lr, lr_scale=cfg.optim.lr_scale, seed=cfg.seed, steps=cfg.steps,
            diverged_reason=state["diverged_reason"], nonfinite_steps=state["nonfinite_steps"],
            step_time_ms_median=float(np.median(state["step_times_ms"])) if state["step_times_ms"] else None,
            group=job.group, name=job.name, overrides=list(job.overrides), device=str(self.device),
            threads=torch.get_num_threads(), versions=versions(), data=task.info,
            wall_time_s=time.perf_counter() - self.started, resumed_from_step=state["resumed_from_step"],
            population=self.population, batched_steps=self.batched_steps, **stamp(),
            metric_unit=task.metric_unit, metric_upper=task.metric_upper,
            **summarize(metrics, state["evals"], metric=task.metric, higher=task.higher_is_better,
                        target_metric=task.target_metric,
                        target=task.target, diverged_step=state["diverged_step"], spike_factor=cfg.spike_factor,
                        spike_window=cfg.spike_window))
        summary.write(job.job_dir / "summary.json")
        self.checkpoint.unlink(missing_ok=True)
        return summary
