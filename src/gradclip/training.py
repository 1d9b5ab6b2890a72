"""One training run: the loop, divergence handling, and the job's files (config.yaml, metrics.csv, summary.json).

A run that diverges is a result, never an exception: it ends early and says so in summary.json. A job that crashes
records the error there instead (``run_job``). Checkpoints every ``checkpoint_every`` steps let a rerun resume.
"""

from __future__ import annotations

import io
import math
import os
import platform
import sys
import time
import traceback
from importlib.metadata import version
from pathlib import Path

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
from gradclip.models import build_model
from gradclip.sweep import job_config, read_summary, stamp

HIGHER_IS_BETTER = {"accuracy"}
STEP_COLUMNS = ["step", "loss", "grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "skipped",
                "update_norm", "cosine", "smoothness", "lr"]  # no timings: same config + seed = same file, bit for bit
CHECKPOINT = "checkpoint.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_optimizer(cfg, params) -> torch.optim.Optimizer:
    lr = cfg.lr * cfg.lr_scale
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def versions() -> dict[str, str]:
    names = ["gradclip", "torch", "hydra-core", "wandb", "numpy", "pandas", "scikit-learn"]
    return {"python": platform.python_version(), **{n: version(n) for n in names}}


def count_spikes(losses: pd.Series, factor: float, window: int) -> int:
    """Steps whose loss exceeds ``factor`` x the minimum loss of the ``window`` steps before it."""
    previous_min = losses.shift(1).rolling(window, min_periods=1).min()
    return int((losses > factor * previous_min).sum())


def run_job(cfg: DictConfig, job_dir: str | Path, group: str, name: str, overrides: list[str]) -> dict:
    """One job of a sweep, never raising: skipped when already finished, resumed from its checkpoint when it was
    interrupted, and a crash recorded in summary.json (status "failed") so the rest of the sweep and the report go on.
    """
    job_dir = Path(job_dir)
    finished = read_summary(job_dir)
    if finished is not None:
        tqdm.write(f"{name}: finished before ({finished['status']}), skipped")
        return finished
    try:
        return train(cfg, job_dir, group, name, overrides)
    except Exception as exc:  # a bug or a full disk: recorded as this job's result, never a dead sweep
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
        summary = {"status": "failed", "error": error, "traceback": traceback.format_exc(), "group": group,
                   "name": name, "overrides": list(overrides), "seed": cfg.seed, "setup_name": cfg.setup_name,
                   **stamp()}
        print(f"error: job {name} failed: {error}", file=sys.stderr)
        try:
            write_json(job_dir / "summary.json", summary)
        except OSError as again:
            print(f"error: job {name}: could not record the failure in {job_dir} either: {again}", file=sys.stderr)
        return summary


def train(cfg: DictConfig, job_dir: str | Path, group: str, name: str, overrides: list[str]) -> dict:
    """Train one model as ``cfg`` says (from ``job_dir``'s checkpoint if there is one), write the job's files."""
    started = time.perf_counter()
    job_dir = Path(job_dir)
    resolved = job_config(cfg)
    write_atomic(job_dir / "config.yaml", OmegaConf.to_yaml(resolved))

    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device.value)
    torch.manual_seed(cfg.seed)
    task = build_task(cfg.task, device)
    model = build_model(cfg.model, task).to(device)
    logger = RunLogger(cfg.logger, str(job_dir), group=group, name=name, config=resolved)
    summary: dict = {}
    try:
        state = train_loop(cfg, task, model, logger, desc=name, checkpoint=job_dir / CHECKPOINT)
        metrics = pd.DataFrame(state["rows"])
        metrics = metrics.reindex(columns=STEP_COLUMNS + [c for c in metrics.columns if c not in STEP_COLUMNS])
        write_atomic(job_dir / "metrics.csv", metrics.to_csv(index=False))
        summary = summarize(cfg, task, metrics, state)
        summary.update(group=group, name=name, overrides=list(overrides), device=str(device),
                       threads=torch.get_num_threads(), versions=versions(), data=task.info,
                       wall_time_s=time.perf_counter() - started, resumed_from_step=state["resumed_from_step"],
                       **stamp())
        write_json(job_dir / "summary.json", summary)
        (job_dir / CHECKPOINT).unlink(missing_ok=True)
    finally:
        logger.finish(summary)  # always: W&B would otherwise carry this run into the next job of the process
    return summary


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


def save_checkpoint(path: Path, model, optimizer, clipper, batches: torch.Generator, state: dict) -> None:
    """Everything the loop needs to continue bit-identically, written atomically (tensors and plain values only)."""
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "clipper": clipper.state_dict(),
                "batches": batches.get_state(), "torch_rng": torch.get_rng_state(), "state": state}, buffer)
    write_atomic(path, buffer.getvalue())


def load_checkpoint(path: Path, model, optimizer, clipper, batches: torch.Generator, device) -> dict:
    saved = torch.load(path, map_location=device, weights_only=True)  # never unpickles arbitrary objects
    model.load_state_dict(saved["model"])
    optimizer.load_state_dict(saved["optimizer"])
    clipper.load_state_dict(saved["clipper"])
    batches.set_state(saved["batches"])
    torch.set_rng_state(saved["torch_rng"])
    return saved["state"]


def train_loop(cfg: DictConfig, task, model, logger: RunLogger, desc: str, checkpoint: Path | None = None) -> dict:
    """The optimisation itself, resumed from ``checkpoint`` when that file exists and saved there every
    ``cfg.checkpoint_every`` steps. Returns the loop state: per-step rows, evaluations, divergence, step times.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optim, params)
    batches = torch.Generator().manual_seed(cfg.seed)  # same data order for every clip setting at one seed
    output_layer = getattr(model, "output_layer", None)
    never_clipped = {id(p) for p in output_layer.parameters()} if output_layer is not None else set()
    clipper = Clipper(cfg.clip, seed=cfg.seed, exclude=never_clipped)
    trace = getattr(model, "trace", None)

    def evaluate(step: int) -> dict:
        model.eval()
        scores = task.evaluate(model)
        model.train()
        state["evals"].append((step, scores))
        return {f"val_{k}": v for k, v in scores.items()}

    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, model, optimizer, clipper, batches, next(model.parameters()).device)
        state["resumed_from_step"] = state["step"]
    else:
        state = {"step": 0, "rows": [], "evals": [], "initial_loss": None, "nonfinite_in_row": 0,
                 "nonfinite_steps": 0, "diverged_step": None, "diverged_reason": None, "step_times_ms": [],
                 "resumed_from_step": 0}
        state["rows"].append({"step": 0, **evaluate(0)})
        logger.log(state["rows"][0], step=0)
    quiet = bool(os.environ.get("CI")) or None  # None: tqdm shows a bar only on a terminal
    bar = tqdm(range(state["step"] + 1, cfg.steps + 1), desc=desc or "run", disable=quiet, mininterval=0.5,
               leave=False, initial=state["step"], total=cfg.steps)
    for step in bar:
        t0, step_ms = time.perf_counter(), math.nan
        x, y = task.batch(batches)
        loss = task.loss(model(x), y)
        loss_value = loss.item()
        if state["initial_loss"] is None:
            state["initial_loss"] = loss_value
        row = {"step": step, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"]}
        if not math.isfinite(loss_value) or loss_value > cfg.diverge_factor * state["initial_loss"]:
            state["diverged_step"] = step
            state["diverged_reason"] = ("non-finite loss" if not math.isfinite(loss_value)
                                        else f"loss > {cfg.diverge_factor:g} x initial loss")
        else:
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            smooth = cfg.smoothness_every > 0 and step % cfg.smoothness_every == 0
            diagnose = smooth or step % cfg.diag_every == 0
            raw_grads = [p.grad.detach().clone() for p in params] if smooth else None
            stats = clipper(params, measure=diagnose)
            skipped = not math.isfinite(stats.pre_norm)
            update_norm = smoothness = math.nan
            if skipped:  # never apply a non-finite gradient; too many in a row = diverged
                state["nonfinite_in_row"] += 1
                state["nonfinite_steps"] += 1
                update_norm = 0.0
            else:
                state["nonfinite_in_row"] = 0
                before = [p.detach().clone() for p in params] if diagnose else None
                optimizer.step()
                if diagnose:
                    update_norm = float(get_total_norm([p.detach() - b for p, b in zip(params, before)]))
            step_ms = 1000 * (time.perf_counter() - t0)  # the smoothness probe below is not part of a step's time
            if not skipped:
                state["step_times_ms"].append(step_ms)
            if smooth and not skipped:
                smoothness = local_smoothness(model, task, x, y, params, before, raw_grads)
            row.update(grad_norm=stats.pre_norm, grad_norm_clipped=stats.post_norm, clip_scale=stats.scale,
                       clipped=int(stats.fired), skipped=int(skipped), update_norm=update_norm, cosine=stats.cosine,
                       smoothness=smoothness)
            if trace is not None:
                row.update(trace())
            if state["nonfinite_in_row"] >= cfg.max_nonfinite:
                state["diverged_step"] = step
                state["diverged_reason"] = f"{state['nonfinite_in_row']} non-finite gradients in a row"
        if state["diverged_step"] is not None or step % cfg.eval_every == 0 or step == cfg.steps:
            row.update(evaluate(step))
        state["rows"].append(row)
        state["step"] = step
        logger.log({**row, "step_time_ms": step_ms}, step=step)
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss_value:.3g}", grad_norm=f"{row.get('grad_norm', math.nan):.3g}")
        if state["diverged_step"] is not None:
            break
        if checkpoint is not None and cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and step < cfg.steps:
            save_checkpoint(checkpoint, model, optimizer, clipper, batches, state)
    bar.close()
    return state


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
