"""One training run: the loop, divergence handling, and the job's files (config.yaml, metrics.csv, summary.json).

A run that diverges is a result, never an exception: it ends early and says so in summary.json. A job that crashes
records the error there instead (``run_job``). Checkpoints every ``checkpoint_every`` steps let a rerun resume.
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
from importlib.metadata import version
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch.nn.utils import get_total_norm
from tqdm import tqdm

from gradclip.clipping import Clipper
from gradclip.data import build_task
from gradclip.files import write_atomic, write_json
from gradclip.logger import RunLogger
from gradclip.models import batched_forward, batching_is_exact, build_model
from gradclip.sweep import job_config, read_summary, stamp

HIGHER_IS_BETTER = {"accuracy"}
STEP_COLUMNS = ["step", "loss", "grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "skipped",
                "update_norm", "cosine", "smoothness", "lr"]  # no timings: same config + seed = same file, bit for bit
CHECKPOINT = "checkpoint.pt"
AUTOCAST = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # precision -> autocast dtype
LOOP_KEYS = ("steps", "eval_every", "diag_every", "smoothness_every", "checkpoint_every", "diverge_factor",
             "max_nonfinite")  # read on every step: copied out of the config once (an OmegaConf lookup is ~10 us)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    """SGD or Adam; foreach: one call per step for all tensors (on CPU torch's default loops over them in Python;
    the numbers are bit-identical, checked over 200 steps with momentum, weight decay and Adam)."""
    lr = cfg.lr * cfg.lr_scale
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay,
                                foreach=True)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, foreach=True)


@functools.cache
def versions() -> dict[str, str]:
    names = ["gradclip", "torch", "hydra-core", "wandb", "numpy", "pandas", "scikit-learn"]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def count_spikes(losses: pd.Series, factor: float, window: int) -> int:
    """Steps whose loss exceeds ``factor`` x the minimum loss of the ``window`` steps before it."""
    previous_min = losses.shift(1).rolling(window, min_periods=1).min()
    return int((losses > factor * previous_min).sum())


@dataclass
class Job:
    """One run of a sweep: its config, its folder, and how the report and W&B name it."""

    cfg: DictConfig
    job_dir: Path
    group: str
    name: str
    overrides: list[str]


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


def run_job(cfg: DictConfig, job_dir: str | Path, group: str, name: str, overrides: list[str]) -> dict:
    """One job (a population of one): see ``run_jobs``."""
    return run_jobs([Job(cfg, Path(job_dir), group, name, list(overrides))])[0]


def run_jobs(jobs: list[Job]) -> list[dict]:
    """Train ``jobs`` together as one population and return their summaries, never raising for one job's sake.

    A job already finished is skipped; one interrupted resumes from its checkpoint; one that crashes is recorded
    in its summary.json (status "failed") and the others go on. The jobs must share task and model config
    (``population_key``); each keeps its own seed, data order, optimizer, clipper and files. Their forward and
    backward are batched only where that is bit-identical to each run alone (``batching_is_exact``), so a run's
    numbers never depend on the population it was trained in.
    """
    summaries: dict[int, dict] = {}
    runs: dict[int, Run] = {}
    shared: dict = {}
    exact: dict[tuple, bool] = {}
    for i, job in enumerate(jobs):
        finished = read_summary(job.job_dir)
        if finished is not None:
            tqdm.write(f"{job.name}: finished before ({finished['status']}), skipped")
            summaries[i] = finished
            continue
        try:
            runs[i] = Run(job, shared)
        except Exception as exc:
            summaries[i] = failure(job, exc)
    for run in runs.values():
        run.population = len(runs)
    quiet = bool(os.environ.get("CI")) or None  # None: tqdm shows a bar only on a terminal
    desc = jobs[0].name if len(jobs) == 1 else f"population of {len(runs)}"
    total = max((r.cfg.steps for r in runs.values()), default=0)
    bar = tqdm(total=total, initial=min((r.state["step"] for r in runs.values()), default=0), desc=desc or "run",
               disable=quiet, mininterval=0.5, leave=False)
    while active := {i: r for i, r in runs.items() if r.active and i not in summaries}:
        try:
            for i, run in active.items():
                run.begin_step()
            models, inputs = [r.model for r in active.values()], [r.x for r in active.values()]
            if (members := tuple(active)) not in exact:  # probed again whenever the population changes
                exact[members] = batching_is_exact(models, inputs)
            first = next(iter(active.values()))
            with torch.autocast(first.device.type, dtype=first.autocast, enabled=first.autocast is not None):
                outputs = batched_forward(models, inputs, batched=exact[members])
                for run in active.values():
                    run.batched_steps += exact[members]
                for (i, run), out in zip(list(active.items()), outputs):
                    try:
                        run.check_loss(out)
                    except Exception as exc:
                        summaries[i] = failure(run.job, exc)
                        del active[i]
        except Exception as exc:  # the shared forward: every run in it fails
            summaries.update({i: failure(r.job, exc) for i, r in active.items()})
            continue
        training = [r.scaler.scale(r.loss) if r.scaler else r.loss for r in active.values() if r.training]
        if training:
            torch.stack(training).sum().backward()  # each run's gradient is its own: d(sum)/d(loss_i) = 1
        for i, run in active.items():
            try:
                run.end_step()
            except Exception as exc:
                summaries[i] = failure(run.job, exc)
        bar.update(1)
        if len(active) == 1 and (run := next(iter(active.values()))).state["step"] % 20 == 0:
            bar.set_postfix(loss=f"{run.row['loss']:.3g}", grad_norm=f"{run.row.get('grad_norm', math.nan):.3g}")
    bar.close()
    for i, run in runs.items():
        if i not in summaries:
            try:
                summaries[i] = run.finish()
            except Exception as exc:
                summaries[i] = failure(run.job, exc)
            finally:
                run.logger.finish(summaries.get(i, {}))  # always: W&B would otherwise carry this run into the next
        else:
            run.logger.finish({})
    return [summaries[i] for i in range(len(jobs))]


def local_smoothness(model, task, x, y, params, before, raw_grads) -> float:
    """Zhang et al.'s estimate ||g(mid) - g(prev)|| / ||mid - prev||, mid halfway along the step, on the step's batch.

    ``before`` are the parameters before the step, ``raw_grads`` the unclipped gradients there; the parameters are
    put back as they were after the step.
    """
    after = [p.detach().clone() for p in params]
    with torch.no_grad():
        for p, b, a in zip(params, before, after):
            p.copy_((a + b) / 2)
    model.zero_grad(set_to_none=True)
    task.loss(model(x), y).backward()
    change = float(get_total_norm([p.grad - g for p, g in zip(params, raw_grads)]))
    distance = float(get_total_norm([(a - b) / 2 for a, b in zip(after, before)]))
    with torch.no_grad():
        for p, a in zip(params, after):
            p.copy_(a)
    model.zero_grad(set_to_none=True)
    return change / distance if distance > 0 else math.nan


def save_checkpoint(path: Path, run: Run) -> None:
    """Everything a run needs to continue bit-identically, written atomically (tensors and plain values only)."""
    buffer = io.BytesIO()
    torch.save({"model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
                "clipper": run.clipper.state_dict(), "batches": run.batches.get_state(),
                "torch_rng": torch.get_rng_state(), "scaler": run.scaler.state_dict() if run.scaler else None,
                "state": run.state}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, run: Run) -> dict:
    saved = torch.load(path, map_location=run.device, weights_only=True)  # never unpickles arbitrary objects
    run.model.load_state_dict(saved["model"])
    run.optimizer.load_state_dict(saved["optimizer"])
    run.clipper.load_state_dict(saved["clipper"])
    run.batches.set_state(saved["batches"])
    torch.set_rng_state(saved["torch_rng"])
    if run.scaler is not None:
        run.scaler.load_state_dict(saved["scaler"])
    return saved["state"]


class Run:
    """One run's training, one step at a time, so that runs of a population can share the forward and backward.

    Set up as ``cfg`` says, or resumed from ``job_dir``'s checkpoint (saved every ``cfg.checkpoint_every`` steps).
    A step is ``begin_step`` (batch), the forward (``batched_forward``, shared), ``check_loss`` (divergence), the
    backward (shared), ``end_step`` (clip, update, diagnostics, evaluation, checkpoint). ``shared`` caches the task
    among runs with the same task config.
    """

    def __init__(self, job: Job, shared: dict):
        self.started = time.perf_counter()
        self.job, self.cfg = job, job.cfg
        cfg = self.cfg
        self.loop = SimpleNamespace(**{key: cfg[key] for key in LOOP_KEYS})
        self.resolved = job_config(cfg)
        write_atomic(job.job_dir / "config.yaml", OmegaConf.to_yaml(self.resolved))
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.device = resolve_device(cfg.device.value)
        torch.manual_seed(cfg.seed)
        task_key = (OmegaConf.to_yaml(cfg.task), str(self.device))
        if task_key not in shared:  # building a task draws nothing from torch's generator (a test checks it)
            shared[task_key] = build_task(cfg.task, self.device)
        self.task = task = shared[task_key]
        self.model = model = build_model(cfg.model, task).to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = build_optimizer(cfg.optim, self.params)
        self.batches = torch.Generator().manual_seed(cfg.seed)  # same data order for every clip setting at one seed
        output_layer = getattr(model, "output_layer", None)
        never_clipped = {id(p) for p in output_layer.parameters()} if output_layer is not None else set()
        self.clipper = Clipper(cfg.clip, seed=cfg.seed, exclude=never_clipped)
        self.autocast = AUTOCAST[cfg.precision.value]
        self.scaler = torch.amp.GradScaler(self.device.type) if cfg.precision.value == "fp16" else None
        self.trace = getattr(model, "trace", None)
        self.checkpoint = job.job_dir / CHECKPOINT
        self.population, self.batched_steps = 1, 0  # run_jobs sets the population size and counts batched steps
        self.logger = RunLogger(cfg.logger, str(job.job_dir), group=job.group, name=job.name, config=self.resolved)
        if cfg.checkpoint_every and self.checkpoint.is_file():
            self.state = load_checkpoint(self.checkpoint, self)
            self.state["resumed_from_step"] = self.state["step"]
        else:
            self.state = {"step": 0, "rows": [], "evals": [], "initial_loss": None, "nonfinite_in_row": 0,
                          "nonfinite_steps": 0, "diverged_step": None, "diverged_reason": None,
                          "step_times_ms": [], "resumed_from_step": 0}
            self.state["rows"].append({"step": 0, **self.evaluate(0)})
            self.logger.log(self.state["rows"][0], step=0)

    @property
    def active(self) -> bool:
        return self.state["diverged_step"] is None and self.state["step"] < self.loop.steps

    def evaluate(self, step: int) -> dict:
        self.model.eval()
        scores = self.task.evaluate(self.model)
        self.model.train()
        self.state["evals"].append((step, scores))
        return {f"val_{k}": v for k, v in scores.items()}

    def begin_step(self) -> None:
        self.t0 = time.perf_counter()
        self.step = self.state["step"] + 1
        self.optimizer.zero_grad(set_to_none=True)
        self.x, self.y = self.task.batch(self.batches)

    def check_loss(self, out: torch.Tensor) -> None:
        """The step's loss; a non-finite one, or one above diverge_factor x the first, ends the run as diverged."""
        cfg, state = self.loop, self.state
        self.loss = self.task.loss(out, self.y)
        value = self.loss.item()
        if state["initial_loss"] is None:
            state["initial_loss"] = value
        self.row = {"step": self.step, "loss": value, "lr": self.optimizer.param_groups[0]["lr"]}
        self.training = math.isfinite(value) and value <= cfg.diverge_factor * state["initial_loss"]
        if not self.training:
            state["diverged_step"] = self.step
            state["diverged_reason"] = ("non-finite loss" if not math.isfinite(value)
                                        else f"loss > {cfg.diverge_factor:g} x initial loss")

    def end_step(self) -> None:
        """After the backward: clip, update, diagnostics; then the evaluation, the log and the checkpoint."""
        cfg, state, step, row, params = self.loop, self.state, self.step, self.row, self.params
        step_ms = math.nan
        if self.training:
            smooth = cfg.smoothness_every > 0 and step % cfg.smoothness_every == 0
            diagnose = smooth or step % cfg.diag_every == 0
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)  # the true gradient, before clipping looks at its norm
            raw_grads = [p.grad.detach().clone() for p in params] if smooth else None
            stats = self.clipper(params, measure=diagnose)
            skipped = not math.isfinite(stats.pre_norm)
            update_norm = smoothness = math.nan
            if skipped:  # never apply a non-finite gradient; too many in a row = diverged
                state["nonfinite_in_row"] += 1
                state["nonfinite_steps"] += 1
                update_norm = 0.0
            else:
                state["nonfinite_in_row"] = 0
                before = [p.detach().clone() for p in params] if diagnose else None
                self.scaler.step(self.optimizer) if self.scaler is not None else self.optimizer.step()
                if diagnose:
                    update_norm = float(get_total_norm([p.detach() - b for p, b in zip(params, before)]))
            step_ms = 1000 * (time.perf_counter() - self.t0)  # the smoothness probe is not part of a step's time
            if not skipped:
                state["step_times_ms"].append(step_ms)
            if smooth and not skipped:
                smoothness = local_smoothness(self.model, self.task, self.x, self.y, params, before, raw_grads)
            row.update(grad_norm=stats.pre_norm, grad_norm_clipped=stats.post_norm, clip_scale=stats.scale,
                       clipped=int(stats.fired), skipped=int(skipped), update_norm=update_norm, cosine=stats.cosine,
                       smoothness=smoothness)
            if self.scaler is not None:
                self.scaler.update()  # after a non-finite gradient: a smaller scale next step
            if self.trace is not None:
                row.update(self.trace())
            if state["nonfinite_in_row"] >= cfg.max_nonfinite:
                state["diverged_step"] = step
                state["diverged_reason"] = f"{state['nonfinite_in_row']} non-finite gradients in a row"
        if state["diverged_step"] is not None or step % cfg.eval_every == 0 or step == cfg.steps:
            row.update(self.evaluate(step))
        state["rows"].append(row)
        state["step"] = step
        self.logger.log({**row, "step_time_ms": step_ms}, step=step)
        if self.active and cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
            save_checkpoint(self.checkpoint, self)

    def finish(self) -> dict:
        """Write metrics.csv and summary.json (last: its presence means the job is finished), drop the checkpoint."""
        job, state = self.job, self.state
        metrics = pd.DataFrame(state["rows"])
        metrics = metrics.reindex(columns=STEP_COLUMNS + [c for c in metrics.columns if c not in STEP_COLUMNS])
        write_atomic(job.job_dir / "metrics.csv", metrics.to_csv(index=False))
        summary = summarize(self.cfg, self.task, metrics, state)
        summary.update(group=job.group, name=job.name, overrides=list(job.overrides), device=str(self.device),
                       threads=torch.get_num_threads(), versions=versions(), data=self.task.info,
                       wall_time_s=time.perf_counter() - self.started, resumed_from_step=state["resumed_from_step"],
                       population=self.population, batched_steps=self.batched_steps, **stamp())
        write_json(job.job_dir / "summary.json", summary)
        self.checkpoint.unlink(missing_ok=True)
        return summary


def summarize(cfg, task, metrics: pd.DataFrame, state: dict) -> dict:
    """The numbers a report compares runs by, from the run's own step rows, evaluations and step times."""
    evals, diverged_step = state["evals"], state["diverged_step"]
    steps = metrics[metrics.step > 0]
    applied = steps[steps.skipped == 0]
    higher = task.metric in HIGHER_IS_BETTER
    scores = [(s, e[task.metric]) for s, e in evals if math.isfinite(e[task.metric])]
    best_step, best = (max if higher else min)(scores, key=lambda se: se[1]) if scores else (None, None)
    reached = [s for s, e in evals if cfg.task.target is not None and e[task.target_metric] <= cfg.task.target]
    final = evals[-1][1]
    return {
        "setup_name": cfg.setup_name, "task": cfg.task.name, "model": cfg.model.name, "clip": cfg.clip.name,
        "clip_method": cfg.clip.method.value, "clip_threshold": cfg.clip.threshold,
        "clip_params": OmegaConf.to_container(cfg.clip, enum_to_str=True), "optim": cfg.optim.name,
        "lr": cfg.optim.lr * cfg.optim.lr_scale, "lr_scale": cfg.optim.lr_scale, "seed": cfg.seed,
        "steps": cfg.steps, "steps_run": int(steps.step.max()) if len(steps) else 0,
        "status": "diverged" if diverged_step is not None else "ok",
        "diverged": diverged_step is not None, "diverged_step": diverged_step,
        "diverged_reason": state["diverged_reason"],
        "metric": task.metric, "higher_is_better": higher, "final_metric": final[task.metric],
        "final_eval": final, "best_metric": best, "best_step": best_step,
        "target_metric": task.target_metric, "target": cfg.task.target,
        "steps_to_target": reached[0] if reached else None,
        "clipped_fraction": float(applied.clipped.mean()) if len(applied) else 0.0,
        "nonfinite_steps": state["nonfinite_steps"],
        "loss_spikes": count_spikes(steps.loss, cfg.spike_factor, cfg.spike_window),
        "spike_factor": cfg.spike_factor, "spike_window": cfg.spike_window,
        "initial_loss": float(steps.loss.iloc[0]) if len(steps) else None,
        "grad_norm_median": float(applied.grad_norm.median()) if len(applied) else None,
        "grad_norm_max": float(applied.grad_norm.max()) if len(applied) else None,
        "step_time_ms_median": float(np.median(state["step_times_ms"])) if state["step_times_ms"] else None,
        "cosine_median": float(applied.cosine.median()) if applied.cosine.notna().any() else None,
        "final_train_loss": float(steps.loss.tail(max(1, len(steps) // 10)).mean()) if len(steps) else None,
    }
