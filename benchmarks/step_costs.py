"""The cost of a training step, measured side by side in one process (`make bench` runs them): clipping's share of
a step on every protocol setup, the suite's GPT step against a bare nanoGPT-style loop, and the sequence models'
step on k batches at once (what populations could save) with the least the lr-sensitivity runs cost from it."""

from __future__ import annotations

import datetime
import os
import statistics
import sys
import tempfile
import time
import timeit
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_

from gradclip.clipping import method_class
from gradclip.component import typed
from gradclip.config import parts
from gradclip.sweep import Job
from gradclip.training import build_optimizer, run_jobs
from plain_loop import compose_setup

# The protocol's setups (experiments/tuned/design.py SETUPS, less those that are one of these at another lr, as
# charlm_gpt_spiky; tests/test_bench.py checks it) and the other two
# sequence models; not the cliff, a two-parameter toy whose step is a few dozen torch calls.
SETUPS = ("charlm_lstm", "regression_mlp", "digits_deep_mlp", "digits_mlp", "digits_mlp_adam", "adding_rnn",
          "charlm_gpt")
VARIANTS = ("bare", "none", "norm1", "clip_grad_norm_", "bare, default threads")
ROUNDS, BLOCK_S, BLOCK_STEPS = 20, 0.02, (2, 20)  # a block: the steps that fill BLOCK_S, within BLOCK_STEPS
TARGET_SHARE = 0.02
GPT_ROUNDS, GPT_STEPS, TARGET_GPT = 6, 40, 1.1  # GPT step: rounds of one block of steps per side; suite / bare


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def clip_share(setup: str, rounds: int = ROUNDS) -> dict:
    """One model of ``setup`` (at lr x 0.1, as the whole benchmark) trained by one step (batch, forward, the model's
    loss, backward, clip, the setup's optimizer, ``loss.item()``) whose clip is, by variant: nothing (bare), the
    suite's clip=none (the global norm it logs), clip=norm1, or ``clip_grad_norm_(params, 1)``; at one thread as
    the suite's runs, and bare once more at torch's default threads. ``rounds`` rounds of one block per variant, order
    rotating. Shares = median over rounds of (block median / block median) - 1: the logged norm (none / bare), the
    clipping (norm1 / none: the target) and ``clip_grad_norm_`` / bare. The Clipper calls are also timed alone."""
    cfg = compose_setup(setup, "clip=norm1")
    torch.manual_seed(0)
    task, model_cfg, norm1, _ = parts(cfg)
    task.setup(torch.device("cpu"))
    model = model_cfg.build(task)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optim, model)
    clippers = {"none": method_class("none")(name="none"), "norm1": norm1}
    clips = {"bare": lambda: None, "bare, default threads": lambda: None,
             "clip_grad_norm_": lambda: clip_grad_norm_(params, norm1.threshold),
             **{name: (lambda c=clipper: c(params)) for name, clipper in clippers.items()}}
    batches, default_threads = torch.Generator().manual_seed(0), torch.get_num_threads()
    clip_seconds, fired = {name: [] for name in clippers}, []

    def step(name: str) -> float:
        started = time.perf_counter()
        x, y = task.batch(batches)
        loss = model_cfg.loss(task, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_started = time.perf_counter()
        stats = clips[name]()
        clip_ended = time.perf_counter()
        optimizer.step()
        loss.item()
        if name in clippers:
            clip_seconds[name].append(clip_ended - clip_started)
        if name == "norm1":
            fired.append(stats.fired)
        return time.perf_counter() - started

    def block(name: str, steps: int) -> float:
        torch.set_num_threads(default_threads if name.endswith("default threads") else 1)
        times = [step(name) for _ in range(steps)]
        torch.set_num_threads(default_threads)
        return statistics.median(times)

    warm_up = {name: block(name, 3) for name in VARIANTS}
    steps = min(max(round(BLOCK_S / warm_up["bare"]), BLOCK_STEPS[0]), BLOCK_STEPS[1])
    for times in (*clip_seconds.values(), fired):  # the warm-up's
        times.clear()
    blocks = [{name: block(name, steps) for name in VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]}
               for r in range(rounds)]

    def share(name: str, base: str) -> float:
        return statistics.median(b[name] / b[base] for b in blocks) - 1

    torch.set_num_threads(1)
    grads, half, two = [p.grad for p in params], *(torch.full((), f, dtype=params[0].dtype) for f in (0.5, 2.0))
    scale = min(timeit.repeat(lambda: (torch._foreach_mul_(grads, half), torch._foreach_mul_(grads, two)),
                              number=20, repeat=15)) / 40  # x 0.5 then x 2: exact, the gradients stay as they were
    torch.set_num_threads(default_threads)
    return {"step": {name: statistics.median(b[name] for b in blocks) for name in ("bare", "bare, default threads")},
            "share": {"norm": share("none", "bare"), "clipping": share("norm1", "none"),
                      "clip_grad_norm_": share("clip_grad_norm_", "bare")},
            "clip_us": {name: 1e6 * statistics.median(t) for name, t in clip_seconds.items()}, "scale_us": 1e6 * scale,
            "clipped": sum(fired) / len(fired), "tensors": len(params), "rounds": rounds, "block_steps": steps}


def clip_shares(started: float) -> dict:
    shares = {}
    for setup in SETUPS:
        shares[setup] = s = clip_share(setup)
        log(f"[{time.perf_counter() - started:5.0f} s] step {setup}: {1000 * s['step']['bare']:.2f} ms at 1 thread "
            f"({1000 * s['step']['bare, default threads']:.2f} ms at default threads); "
            + ", ".join(f"{name} {value:+.1%}" for name, value in s["share"].items()))
    return shares


def gpt_step() -> dict:
    """Median seconds of a training step of setup=charlm_gpt (clip=norm1), one thread: (b) the suite's, one run
    trained by ``run_jobs`` (its step time, as its summary reports it: batch to optimizer step, logging excluded), and
    (a) a bare nanoGPT-style loop on the same model class, batch, AdamW groups and schedule (set lr, batch, forward,
    cross-entropy, backward, ``clip_grad_norm_``, step, ``loss.item()``). GPT_ROUNDS rounds of GPT_STEPS steps per
    side, order alternating; ratio = median over rounds of (suite median / bare median)."""
    overrides = ["clip=norm1", "threads=1", f"steps={GPT_STEPS}", f"eval_every={GPT_STEPS}", "checkpoint_every=0"]
    cfg = compose_setup("charlm_gpt", *overrides)
    torch.set_num_threads(1)
    task, model_cfg, _, _ = parts(cfg)
    task.setup(torch.device("cpu"))
    schedule = typed("schedule", cfg.schedule)

    def bare(seed: int) -> float:
        torch.manual_seed(seed)
        model = model_cfg.build(task)
        optimizer = build_optimizer(cfg.optim, model)
        peak, batches, times = optimizer.param_groups[0]["lr"], torch.Generator().manual_seed(seed), []
        for it in range(GPT_STEPS):
            started = time.perf_counter()
            for group in optimizer.param_groups:
                group["lr"] = peak * schedule.factor(it)
            x, y = task.batch(batches)
            logits = model(x)
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), y.reshape(-1))
            loss.backward()
            clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            loss.item()
            times.append(time.perf_counter() - started)
        return statistics.median(times)

    def suite(seed: int) -> float:
        with tempfile.TemporaryDirectory(prefix="gradclip-bench-") as tmp:
            job = Job(compose_setup("charlm_gpt", *overrides, f"seed={seed}"), Path(tmp), "bench", "gpt", [])
            summary = run_jobs([job])[0]
            steps = pd.read_csv(Path(tmp) / "metrics.csv")
        assert summary.steps_run == GPT_STEPS and steps.loss.iloc[1:].notna().all()
        return summary.step_time_ms_median / 1000

    sides = {"bare": bare, "suite": suite}
    bare(0), suite(0)  # warm-up
    rounds = []
    for r in range(GPT_ROUNDS):
        rounds.append({side: sides[side](r) for side in list(sides)[:: 1 if r % 2 == 0 else -1]})
    load = os.getloadavg()[0]
    return {**{side: statistics.median(b[side] for b in rounds) for side in sides},
            "ratio": statistics.median(b["suite"] / b["bare"] for b in rounds), "load": load,
            "tokens": cfg.task.batch_size * cfg.task.bptt}


def measure_gpt() -> dict:
    gpt = {**gpt_step(), "measured": f"{datetime.datetime.now():%Y-%m-%d %H:%M}"}
    log(f"GPT step: bare {1000 * gpt['bare']:.1f} ms, suite {1000 * gpt['suite']:.1f} ms, suite / bare "
        f"{gpt['ratio']:.2f} (load {gpt['load']:.1f})")
    return gpt


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"**missed**: {miss}"


def clip_report(shares: dict) -> list[str]:
    """RESULTS.md's section on clipping's share of a step."""
    lines = [
        "## Clipping's share of a step", "",
        "One model per protocol setup (and the adding RNN, the GPT) at lr × 0.1, trained by one step: batch, "
        "forward, the model's loss, backward, clip, the setup's optimizer, `loss.item()`; at one thread as the "
        f"suite's runs (the bare step also at torch's default threads). {ROUNDS} rounds of one block per variant, "
        f"order rotating; a block is the steps that fill {1000 * BLOCK_S:.0f} ms "
        f"({BLOCK_STEPS[0]}–{BLOCK_STEPS[1]}). A share = median over rounds of (block median / block median) − 1. "
        "**clipping** = the suite's step with clip=norm1 against clip=none: what clipping adds to the global norm "
        "every arm logs (the comparison and, when it clips, the factor and one fused multiplication); the target. "
        "*norm logged* = clip=none against no clip call; `clip_grad_norm_(params, 1)` against no clip call, for "
        "comparison. The Clipper calls are also timed alone (median µs). Where few steps clip (steps clipped), the "
        "clipping share is mostly that of the comparison.", "",
        "| setup | tensors | step without a clip call: 1 thread / default threads (ms) | norm logged | "
        f"**clipping** | steps clipped | Clipper call: none / norm1 (µs) | the multiplication alone (µs, share) | "
        f"`clip_grad_norm_` | target ≤ {TARGET_SHARE:.0%} |",
        "|---|---|---|---|---|---|---|---|---|---|"]
    for setup, s in shares.items():
        step, share, us, clipping = s["step"], s["share"], s["clip_us"], s["share"]["clipping"]
        lines.append(f"| {setup} | {s['tensors']} | {1000 * step['bare']:.2f} / "
                     f"{1000 * step['bare, default threads']:.2f} | {share['norm']:+.1%} | {clipping:+.1%} | "
                     f"{s['clipped']:.0%} | {us['none']:.0f} / {us['norm1']:.0f} | {s['scale_us']:.0f}, "
                     f"{s['scale_us'] / 1e6 / step['bare']:.1%} | {share['clip_grad_norm_']:+.1%} | "
                     f"{verdict(clipping <= TARGET_SHARE, f'{clipping:.1%}')} |")
    lines += [
        "", "The suite's clip is one fused norm over all gradients and, when it clips, one fused multiplication, "
        "the factor computed in Python: `clip_grad_norm_`'s gradients and norms bit for bit "
        "(`tests/test_clip_bits.py`), so no committed number changes. What is left is torch's cost per call: a "
        "norm per gradient tensor, their norm, and one multiplication per tensor; one flat gradient buffer would "
        "make the norm a single call, but it sums in another order and changes the last bits of every number. "
        "*The multiplication alone* is that fused multiplication of every gradient by the factor, timed by itself "
        "(best of 15 × 20, one thread): the least a step that clips must add, whatever the code around it. Where it "
        "is itself near the target (a model of many tensors that clips on almost every step), clipping cannot stay "
        "under it and keep `clip_grad_norm_`'s bits."]
    return lines


def gpt_report(gpt: dict) -> list[str]:
    """RESULTS.md's section on the GPT step."""
    ratio = gpt["ratio"]
    return [
        "## GPT step: the suite against a bare nanoGPT-style loop", "",
        f"setup=charlm_gpt with clip=norm1, {gpt['tokens']} tokens a step, one thread. (a) bare: the loop "
        "nanoGPT's train.py runs (set the lr, batch, forward, cross-entropy, backward, `clip_grad_norm_`, AdamW "
        "step, `loss.item()`) on the same model, batch, parameter groups and schedule; (b) the suite: one run "
        f"trained by `run_jobs`, its summary's median step time (batch to optimizer step). {GPT_ROUNDS} rounds of "
        f"{GPT_STEPS} steps per side, order alternating; ratio = median over rounds of (suite / bare). Measured "
        f"{gpt['measured']} at a 1-minute load average of {gpt['load']:.1f} on {os.cpu_count()} cores.", "",
        f"| bare step (ms, median) | suite step (ms, median) | suite / bare | target ≤ {TARGET_GPT}× |",
        "|---|---|---|---|",
        f"| {1000 * gpt['bare']:.1f} | {1000 * gpt['suite']:.1f} | {ratio:.2f}× | "
        f"{verdict(ratio <= TARGET_GPT, f'{ratio:.2f}×')} |", ""]


# ---------------------------------------------------------------- what `make reproduce` costs at the least
HEADROOM_SETUPS, HEADROOM_FACTORS, HEADROOM_ROUNDS, HEADROOM_STEPS = ("charlm_gpt", "charlm_lstm"), (1, 2, 4, 10), 5, 4
TARGET_REPRODUCE_MIN = 35
LR_RUNS = Path(__file__).resolve().parents[1] / "results" / "lr_sensitivity" / "runs.csv"


def batch_headroom(setup: str) -> dict:
    """The most a population of k runs could save on a sequence model: one model's bare step (batch, forward, loss,
    backward, optimizer, ``loss.item()``; one thread) on k times the setup's batch, for k in HEADROOM_FACTORS. k
    models batched do the same products as one model on k batches, at best at its speed: where a step on k batches
    costs k steps, batching runs cannot pay. HEADROOM_ROUNDS rounds of HEADROOM_STEPS steps per k, order rotating;
    the median step per k."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    batch = compose_setup(setup).task.batch_size
    steps = {}
    for k in HEADROOM_FACTORS:
        cfg = compose_setup(setup, f"task.batch_size={k * batch}")
        torch.manual_seed(0)
        task, model_cfg, _, _ = parts(cfg)
        task.setup(torch.device("cpu"))
        model = model_cfg.build(task)
        steps[k] = (task, model_cfg, model, build_optimizer(cfg.optim, model), torch.Generator().manual_seed(0))

    def step(k: int) -> float:
        task, model_cfg, model, optimizer, batches = steps[k]
        started = time.perf_counter()
        x, y = task.batch(batches)
        loss = model_cfg.loss(task, model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        return time.perf_counter() - started

    for k in HEADROOM_FACTORS:
        step(k)  # warm-up
    times = {k: [] for k in HEADROOM_FACTORS}
    for r in range(HEADROOM_ROUNDS):
        for k in HEADROOM_FACTORS[r % len(HEADROOM_FACTORS):] + HEADROOM_FACTORS[:r % len(HEADROOM_FACTORS)]:
            times[k] += [step(k) for _ in range(HEADROOM_STEPS)]
    torch.set_num_threads(default_threads)
    return {"batch": batch, "step": {str(k): statistics.median(t) for k, t in times.items()}}


def measure_headroom() -> dict:
    headroom = {setup: batch_headroom(setup) for setup in HEADROOM_SETUPS}
    for setup, h in headroom.items():
        log(f"{setup}: step on k batches / (k x one batch): " + ", ".join(
            f"k={k} {s / int(k) / h['step']['1']:.2f}" for k, s in h["step"].items()))
    return {"measured": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "setups": headroom}


def reproduce_floor(clip: dict, runs: pd.DataFrame) -> pd.DataFrame:
    """A lower bound on the training time of the lr-sensitivity experiment: each run that did not diverge (``runs``:
    results/lr_sensitivity/runs.csv) for its steps at its setup's bare step on one thread (``clip``: the clipping
    measurements' "bare"), a diverged run at no cost; no start-up, evaluation, norm or file."""
    kept = runs[~runs.diverged.astype(bool)]
    floor = kept.groupby("setup").agg(runs=("run", "size"), steps=("steps", "first"))
    floor["all_runs"] = runs.groupby("setup").size()
    floor["step_ms"] = [1000 * clip[setup]["step"]["bare"] for setup in floor.index]
    floor["core_minutes"] = floor.runs * floor.steps * floor.step_ms / 1000 / 60
    return floor


def floor_report(measured: dict, runs: pd.DataFrame) -> list[str]:
    """RESULTS.md's section on what `make reproduce` costs at the least on this machine's cores."""
    floor, cores = reproduce_floor(measured["clip"], runs), os.cpu_count() or 1
    minutes = floor.core_minutes.sum() / cores
    missed = f"{minutes / TARGET_REPRODUCE_MIN:.1f}× the target before anything else runs"
    lines = [
        f"## `make reproduce` in {TARGET_REPRODUCE_MIN} minutes on {cores} cores?", "",
        "A lower bound on the lr-sensitivity experiment alone (results/lr_sensitivity/runs.csv): each of its runs "
        "that did not diverge trains its steps at its setup's bare step on one thread (the clipping table's, lr × "
        "0.1), the diverged ones cost nothing, and the machine's cores do nothing else: no start-up, composing, "
        "evaluation, gradient norm or file.", "",
        "| setup | runs trained to the end (of all) | steps | bare step, 1 thread (ms) | core-minutes |",
        "|---|---|---|---|---|",
        *[f"| {r.Index} | {r.runs} ({r.all_runs}) | {r.steps} | {r.step_ms:.2f} | {r.core_minutes:.1f} |"
          for r in floor.itertuples()],
        f"| **all** | {floor.runs.sum()} ({floor.all_runs.sum()}) | | | **{floor.core_minutes.sum():.1f}** |", "",
        f"At least {minutes:.1f} min on {cores} cores for this experiment's training steps alone, against "
        f"{TARGET_REPRODUCE_MIN} min for every experiment: "
        f"{verdict(minutes <= TARGET_REPRODUCE_MIN, missed)}.",
        "", "Could populations pay for it, as they do for the MLPs? One model's bare step on k times its setup's "
        f"batch (one thread; median of {HEADROOM_ROUNDS} rounds of {HEADROOM_STEPS} steps per k, order rotating) is "
        "the most a population of k runs batched together could reach. Measured "
        f"{measured['headroom']['measured']}.", "",
        "| setup | batch | " + " | ".join(f"step on {k} × the batch (ms)" for k in HEADROOM_FACTORS)
        + f" | cost per batch: {HEADROOM_FACTORS[-1]} × / 1 × |",
        "|---|---|" + "---|" * len(HEADROOM_FACTORS) + "---|"]
    for setup, h in measured["headroom"]["setups"].items():
        step, last = h["step"], str(HEADROOM_FACTORS[-1])
        lines.append(f"| {setup} | {h['batch']} | " + " | ".join(f"{1000 * step[str(k)]:.1f}" for k in HEADROOM_FACTORS)
                     + f" | {step[last] / int(last) / step['1']:.2f} |")
    lines += [
        "", "Read: a ratio near 1 (or above) means these models are compute-bound at their own batch on one core: a "
        "step on k batches costs k steps, so batching k runs into one population saves nothing, and the bound above "
        "stands: below it go only faster cores or more of them (`python experiments/reproduce.py --jobs N`).", ""]
    return lines
