"""`make bench`: the plain loop against the suite on one reference sweep, clip overhead, LSTM against matmul peak,
the suite's GPT step against a bare nanoGPT-style loop.

Prints a table and writes benchmarks/RESULTS.md. Exit status 0 whether the targets are met or not (the table says).
    python benchmarks/bench.py [--suite-args "hydra/launcher=joblib"] [--repeats 2] [--report-only | --gpt-only]
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from torch.nn.utils import clip_grad_norm_

from gradclip.component import typed
from gradclip.config import parts
from gradclip.files import write_atomic
from gradclip.sweep import Job
from gradclip.training import build_optimizer, run_jobs
from plain_loop import SETUPS, STABLE_LR, compose_setup

SUITE_ARGS = ["hydra/launcher=population"]  # how the suite side (b) is launched: the sweep executor under test
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RAW = ROOT / "benchmarks" / "RESULTS.json"  # the measurements RESULTS.md is written from (`--report-only`)
SEEDS = 8
REGIMES = "none,norm1"  # the reference sweep of a setup: both regimes x SEEDS seeds, one sweep of 16 runs
STEPS = {"adding_rnn": 600, "deep_mlp": 1000, "charlm_lstm": 150}  # per run; sized so `make bench` stays < 10 min
RUNS = SEEDS * len(REGIMES.split(","))
BUDGET_S = 9 * 60  # no further a/b repeat is started when it would end after this
TARGET_RATIO, TARGET_OVERHEAD, TARGET_PEAK = 2.5, 0.02, 0.70
BLOCKS, BLOCK_STEPS = 20, 10  # clip overhead: rounds of one block of steps per variant
GPT_ROUNDS, GPT_STEPS, TARGET_GPT = 6, 40, 1.1  # GPT step: rounds of one block of steps per side; suite / bare


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def wall_time(command: list[str]) -> tuple[float, str]:
    """Seconds `command` takes from start to exit (start-up and imports included), and its stdout."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with {done.returncode}:\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def run_plain(setup: str, steps: int) -> tuple[float, str]:
    """(a): seconds of plain_loop.py for the reference sweep, and a note when its runs did other work than the
    suite's."""
    command = [sys.executable, str(ROOT / "benchmarks" / "plain_loop.py"), "--setup", setup,
               "--seeds", f"0-{SEEDS - 1}", "--clip", REGIMES, "--steps", str(steps)]
    seconds, out = wall_time(command)
    result = json.loads(out.splitlines()[-1])
    note = f"{result['nonfinite_losses']} non-finite losses" if result["nonfinite_losses"] else ""
    return seconds, note


def run_suite(setup: str, steps: int, suite_args: list[str]) -> tuple[float, str]:
    """(b): seconds of the suite's sweep, and a note when a job ended early or wrote no summary."""
    with tempfile.TemporaryDirectory(prefix="gradclip-bench-") as tmp:
        command = [sys.executable, "run.py", "-m", f"setup={SETUPS[setup]}", f"clip={REGIMES}",
                   "seed=" + ",".join(map(str, range(SEEDS))), f"steps={steps}", f"eval_every={steps}",
                   "logger=none", "report=false", STABLE_LR, f"hydra.sweep.dir={tmp}/sweep", *suite_args]
        seconds, _ = wall_time(command)
        summaries = [json.loads(p.read_text()) for p in Path(tmp).rglob("summary.json")]
    steps_run = sum(s.get("steps_run", 0) for s in summaries)
    note = "" if steps_run == RUNS * steps else f"{len(summaries)} summaries, {steps_run} of {RUNS * steps} steps"
    return seconds, note


def throughput(suite_args: list[str], repeats: int, started: float) -> dict:
    """Per setup, wall seconds of (a) and (b) on the reference sweep: a/b order alternating between repeats, median
    of the repeats; and each side's start-up, measured once as the same sweep of 1-step runs. After the first
    repeat, a setup is skipped when its last duration says it would end after BUDGET_S."""
    samples = {setup: {"plain": [], "suite": [], "notes": set(), "seconds": 0.0} for setup in STEPS}
    sides = {"plain": run_plain, "suite": lambda setup, steps: run_suite(setup, steps, suite_args)}
    for setup, sample in samples.items():
        for side, run in sides.items():
            sample[f"{side}_startup"] = run(setup, 1)[0]
            log(f"[{time.perf_counter() - started:5.0f} s] start-up {setup:<11} {side:<5} "
                f"{sample[f'{side}_startup']:5.1f} s ({RUNS} runs of 1 step)")
    for repeat in range(repeats):
        for setup, sample in samples.items():
            if repeat and time.perf_counter() - started + sample["seconds"] > BUDGET_S:
                log(f"repeat {repeat + 1} {setup} skipped: it would end after the {BUDGET_S} s budget")
                continue
            pair_started = time.perf_counter()
            for side in list(sides)[:: 1 if repeat % 2 == 0 else -1]:
                seconds, note = sides[side](setup, STEPS[setup])
                sample[side].append(seconds)
                sample["notes"].update([f"{side}: {note}"] if note else [])
                log(f"[{time.perf_counter() - started:5.0f} s] repeat {repeat + 1} {setup:<11} {side:<5} "
                    f"{seconds:6.1f} s = {RUNS * STEPS[setup] / seconds:7.1f} model-steps/s {note}")
            sample["seconds"] = time.perf_counter() - pair_started
    for sample in samples.values():
        for side in ("plain", "suite"):
            low, high = min(sample[side]), max(sample[side])
            if high > 1.3 * low:  # beyond the usual noise: say so beside the median
                sample["notes"].add(f"{side} repeats {low:.0f}–{high:.0f} s")
    return {setup: {"plain": statistics.median(v["plain"]), "suite": statistics.median(v["suite"]),
                    "plain_startup": v["plain_startup"], "suite_startup": v["suite_startup"],
                    "repeats": len(v["plain"]), "notes": sorted(v["notes"])} for setup, v in samples.items()}


def clip_overhead(setup: str) -> dict:
    """Median seconds of a training step without clipping at torch's default threads and at one thread, and the
    relative overhead of clip_grad_norm_ and of the suite's Clipper (clip=norm1, measure=False) at default threads:
    BLOCKS rounds of one block of BLOCK_STEPS steps per variant, order rotating; overhead = median over rounds of
    (block median with / block median without) - 1."""
    cfg = compose_setup(setup, "clip=norm1")
    torch.manual_seed(0)
    task, model, clipper, _ = parts(cfg)
    task.setup(torch.device("cpu"))
    model = model.build(task)
    params = list(model.parameters())
    optimizer = build_optimizer(cfg.optim, model)
    clipper.prepare(seed=0, exclude=set())
    variants = {"none": lambda: None, "clip_grad_norm_": lambda: clip_grad_norm_(model.parameters(), 1.0),
                "Clipper": lambda: clipper(params, measure=False), "none, 1 thread": lambda: None}
    default_threads = torch.get_num_threads()
    batches = torch.Generator().manual_seed(0)

    def step(clip) -> float:
        started = time.perf_counter()
        x, y = task.batch(batches)
        loss = task.loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        clip()
        optimizer.step()
        loss.item()
        return time.perf_counter() - started

    def block(name: str) -> list[float]:
        torch.set_num_threads(1 if name.endswith("1 thread") else default_threads)
        times = [step(variants[name]) for _ in range(BLOCK_STEPS)]
        torch.set_num_threads(default_threads)
        return times

    for name in variants:  # warm-up
        block(name)
    names, rounds = list(variants), []
    for r in range(BLOCKS):
        rounds.append({name: block(name) for name in names[r % len(names):] + names[: r % len(names)]})
    without = {name: statistics.median(t for blocks in rounds for t in blocks[name])
               for name in ("none", "none, 1 thread")}
    overheads = {name: statistics.median(statistics.median(b[name]) / statistics.median(b["none"]) for b in rounds) - 1
                 for name in ("clip_grad_norm_", "Clipper")}
    return {"step": without, "overhead": overheads, "tensors": len(params)}


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


def matmul_gflops(batch: int, hidden: int, repeats: int = 15) -> tuple[dict[int, float], float]:
    """Best GFLOP/s over `repeats` interleaved timings, default threads: torch.mm of square fp32 n x n matrices
    (2 n^3 flops; the peak), and of the LSTM's recurrent shape [batch x hidden] . [hidden x 4 hidden] (200 calls)."""
    shapes = {n: (n, n, n, 1) for n in (1024, 2048)}
    shapes["recurrent"] = (batch, hidden, 4 * hidden, 200)
    operands = {key: (torch.randn(m, k), torch.randn(k, n)) for key, (m, k, n, _) in shapes.items()}
    best = dict.fromkeys(shapes, math.inf)
    for _ in range(repeats):
        for key, (a, b) in operands.items():
            calls = shapes[key][3]
            started = time.perf_counter()
            for _ in range(calls):
                torch.mm(a, b)
            best[key] = min(best[key], (time.perf_counter() - started) / calls)
    gflops = {key: 2 * m * k * n / best[key] / 1e9 for key, (m, k, n, _) in shapes.items()}
    return {n: gflops[n] for n in (1024, 2048)}, gflops["recurrent"]


def lstm_flops(cfg, vocab_size: int) -> tuple[float, float]:
    """Analytic FLOPs of one char-LSTM training step (forward + backward = 3 x forward; matmuls only), and the part
    in the recurrent h -> gates matmuls, which must run one timestep after the other."""
    tokens = cfg.task.batch_size * cfg.task.bptt
    hidden, layers = cfg.model.hidden, cfg.model.layers
    inputs = [cfg.model.embedding] + [hidden] * (layers - 1)
    forward = tokens * (sum(2 * 4 * hidden * (i + hidden) for i in inputs) + 2 * hidden * vocab_size)
    recurrent = 3 * tokens * layers * 2 * 4 * hidden * hidden
    return 3 * forward, recurrent


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU") if Path("/proc/cpuinfo").exists() else "unknown CPU"
    return f"{os.cpu_count()} CPUs ({cpu}), torch {torch.__version__}, {torch.get_num_threads()} torch threads"


def verdict(ok: bool, miss: str) -> str:
    return "met" if ok else f"**missed**: {miss}"


def report(m: dict) -> str:
    """RESULTS.md from the measurements ``m`` (as RESULTS.json holds them)."""
    rates, overheads, peaks, lstm, suite_args = m["rates"], m["overheads"], m["peaks"], m["lstm"], m["suite_args"]
    peak = max(peaks.values())
    lines = [
        "# Benchmark: plain loop vs the suite", "",
        f"Measured {m['measured']} on {m['machine']}; this run took {m['seconds'] / 60:.1f} min.",
        f"Re-measure: `make bench` (this run: `{m['command']}`; the raw numbers: `benchmarks/RESULTS.json`).", "",
        "## Throughput", "",
        f"The reference sweep of each setup: clip={REGIMES} x seeds 0–{SEEDS - 1} = {RUNS} runs. (a) plain: "
        "`benchmarks/plain_loop.py`, one nn.Module per run, `clip_grad_norm_`, the runs one after another in one "
        "process, torch's default threads. (b) suite: `python run.py -m setup=… "
        f"clip={REGIMES} seed=0,…,{SEEDS - 1} steps=N eval_every=N logger=none report=false {STABLE_LR} "
        f"{shlex.join(suite_args)}`. Seconds = wall time of the whole process (start-up, imports, evaluations and "
        "files included); median of the repeats, a/b order alternating. Both sides train at lr × 0.1 so that no "
        "run diverges (the suite ends a diverged run early; a step costs the same at any lr).", "",
        "| setup | runs × steps | repeats | plain: s (model-steps/s) | suite: s (model-steps/s) | suite / plain | "
        f"target ≥ {TARGET_RATIO}× | notes |",
        "|---|---|---|---|---|---|---|---|"]
    for setup, r in rates.items():
        work = RUNS * STEPS[setup]
        ratio = r["plain"] / r["suite"]
        met = verdict(ratio >= TARGET_RATIO, f"the suite would need {TARGET_RATIO / ratio:.1f}× its speed")
        lines.append(f"| {setup} | {RUNS} × {STEPS[setup]} | {r['repeats']} | {r['plain']:.1f} "
                     f"({work / r['plain']:.0f}) | {r['suite']:.1f} ({work / r['suite']:.0f}) | {ratio:.2f}× | "
                     f"{met} | {'; '.join(r['notes'])} |")
    cores = os.cpu_count() or 1
    lines += [
        "", "## What bounds the ratio", "",
        f"Start-up = the same sweep with 1-step runs. After start-up = (model-steps − {RUNS}) / (seconds − "
        "start-up). "
        "Plain step = batch, forward, backward, SGD, no clipping (from the clip-overhead rounds below), at torch's "
        f"default threads and at one thread. The suite runs one worker per core ({cores}), one thread each; its "
        "time per model-step on one core = workers / its rate after start-up, and includes what it does beyond "
        "the plain step: the gradient norm of every step, clipping in half the runs, diagnostics every 10 steps, "
        "evaluations, files.", "",
        "| setup | start-up plain / suite (s) | after start-up: plain / suite (model-steps/s) | suite / plain after "
        "start-up | plain step: default threads / 1 thread (ms) | suite per model-step on one core (ms) |",
        "|---|---|---|---|---|---|"]
    for setup, r in rates.items():
        work = RUNS * STEPS[setup]
        plain_rate = (work - RUNS) / max(r["plain"] - r["plain_startup"], 1e-9)
        suite_rate = (work - RUNS) / max(r["suite"] - r["suite_startup"], 1e-9)
        step = overheads[setup]["step"]
        lines.append(f"| {setup} | {r['plain_startup']:.1f} / {r['suite_startup']:.1f} | {plain_rate:.0f} / "
                     f"{suite_rate:.0f} | {suite_rate / plain_rate:.2f}× | {1000 * step['none']:.2f} / "
                     f"{1000 * step['none, 1 thread']:.2f} | {1000 * cores / suite_rate:.2f} |")
    lines += [
        "", "Read: the suite's gain is its workers, one per core with one thread each, against a plain loop that "
        "runs one model at a time on torch's threads; threads help the char-LSTM's larger products and not the "
        "small models' (compare the plain step at default threads and at one thread). Populations do not make a "
        "model-step cheaper than a bare plain step on one thread: the suite also measures the gradient norm of "
        "every step, clips, evaluates and writes files, MLP populations share one batched product per layer that "
        "is bit-identical but already compute-bound at these sizes, and recurrent nets are not batched (it would "
        "not be bit-identical). Its start-up is longer: Hydra composes and checks every job, the worker server "
        "imports torch, and every run is evaluated at its first and last step."]
    lines += [
        "", "## Clip overhead per step", "",
        f"A step = batch, forward, backward, clip, SGD step, `loss.item()`; {BLOCKS} rounds of {BLOCK_STEPS} steps "
        "per variant, order rotating; overhead = median over rounds of (median step with clipping / median step "
        "without, in the same round) − 1.", "",
        "| setup | step without clip (ms, median) | `clip_grad_norm_` | suite `Clipper` (norm1, measure=False) | "
        f"gradient tensors | clipping per tensor (µs) | target ≤ {TARGET_OVERHEAD:.0%} |",
        "|---|---|---|---|---|---|---|"]
    for setup, o in overheads.items():
        step, extra, worst = o["step"], o["overhead"], max(o["overhead"].values())
        lines.append(f"| {setup} | {1000 * step['none']:.2f} | {extra['clip_grad_norm_']:+.1%} | "
                     f"{extra['Clipper']:+.1%} | "
                     f"{o['tensors']} | {1e6 * step['none'] * extra['clip_grad_norm_'] / o['tensors']:.1f} | "
                     f"{verdict(worst <= TARGET_OVERHEAD, f'{worst:.1%}')} |")
    per_tensor = [1e6 * o["step"]["none"] * max(o["overhead"].values()) / o["tensors"] for o in overheads.values()]
    lines += [
        "", f"Clipping costs {min(per_tensor):.0f}–{max(per_tensor):.0f} µs per gradient tensor here (a norm and a "
        "multiplication each, then the norm of the norms; the suite's `Clipper` skips the multiplication when the "
        "factor is 1, which changes no bit): a cost per tensor, so its share is largest where a step is short and "
        "has many tensors (the deep MLP). 2 % needs longer steps or fewer, larger tensors, e.g. one flat gradient "
        "buffer per model (one norm, one multiplication); that rounds the norm differently and would change the "
        "last bits of every committed number, so it is not done."]
    share = lstm["gflops"] / peak
    predicted = lstm["recurrent"] / lstm["recurrent_mm"] / 1e9 + (lstm["flops"] - lstm["recurrent"]) / peak / 1e9
    lines += [
        "", "## Char-LSTM step against the matmul peak", "",
        "| measured (default threads, best of 15) | GFLOP/s |", "|---|---|",
        *[f"| `torch.mm` [{n}×{n}]·[{n}×{n}] fp32 | {g:.1f} |" for n, g in peaks.items()],
        f"| `torch.mm` of the recurrent shape [{lstm['shape']}] | {lstm['recurrent_mm']:.1f} |",
        f"| char-LSTM training step: {lstm['flops'] / 1e9:.2f} GFLOP in {1000 * lstm['step']:.1f} ms (median) "
        f"| **{lstm['gflops']:.1f}** = {share:.0%} of the peak ({peak:.1f}) |", "",
        f"Target ≥ {TARGET_PEAK:.0%} of the peak: {verdict(share >= TARGET_PEAK, f'{share:.0%}')}. FLOPs are counted "
        "analytically, matmuls only: per token forward 2·4H·(E+H) for the LSTM and 2·H·V for the output layer, "
        "backward = 2 × forward; element-wise work (gates, softmax, SGD update) is not counted.", "",
        f"What bounds it: {lstm['recurrent'] / lstm['flops']:.0%} of the FLOPs are the recurrent h→gates matmuls, "
        f"which must run one timestep after another ({lstm['timesteps']} forward, and backward again), each a small "
        f"[{lstm['shape']}] product that `torch.mm` runs at {lstm['recurrent_mm']:.1f} GFLOP/s "
        f"({lstm['recurrent_mm'] / peak:.0%} of the peak). With those at that rate and every other FLOP at the peak, "
        f"a step would take {1000 * predicted:.1f} ms ({lstm['flops'] / predicted / 1e9:.0f} GFLOP/s, "
        f"{lstm['flops'] / predicted / 1e9 / peak:.0%} of the peak); it took {1000 * lstm['step']:.1f} ms"
        + (f": the other {1000 * (lstm['step'] - predicted):.1f} ms are element-wise work." if lstm["step"] > predicted
           else ", less: the fused LSTM kernel runs the small products faster than separate `torch.mm` calls."), ""]
    if "gpt" in m:
        gpt, ratio = m["gpt"], m["gpt"]["ratio"]
        lines += [
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
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-args", type=shlex.split, default=SUITE_ARGS,
                        help=f"how to launch the suite's sweep (default: {shlex.join(SUITE_ARGS)!r})")
    parser.add_argument("--repeats", type=int, default=2, help="a/b repeats per setup (median reported)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--report-only", action="store_true", help=f"rewrite {RESULTS.name} from {RAW.name}, no runs")
    only.add_argument("--gpt-only", action="store_true", help=f"measure the GPT step alone, into {RAW.name}")
    args = parser.parse_args()
    if args.report_only or args.gpt_only:
        if not RAW.is_file():
            parser.error(f"{RAW} does not exist: run the benchmark first")
        measured = json.loads(RAW.read_text())
        if args.gpt_only:
            measured["gpt"] = measure_gpt()
            write_atomic(RAW, json.dumps(measured, indent=1, ensure_ascii=False) + "\n")
        return write_results(measured)
    started = time.perf_counter()

    overheads = {}
    for setup in STEPS:
        overheads[setup] = clip_overhead(setup)
        step, extra = overheads[setup]["step"], overheads[setup]["overhead"]
        log(f"[{time.perf_counter() - started:5.0f} s] step {setup}: {1000 * step['none']:.2f} ms without clipping "
            f"({1000 * step['none, 1 thread']:.2f} ms at 1 thread), overhead "
            + ", ".join(f"{name} {value:+.1%}" for name, value in extra.items()))
    cfg = compose_setup("charlm_lstm")
    batch, hidden = cfg.task.batch_size, cfg.model.hidden
    peaks, recurrent_mm = matmul_gflops(batch, hidden)
    task = parts(cfg).task
    task.setup(torch.device("cpu"))
    flops, recurrent = lstm_flops(cfg, task.vocab_size)
    step = overheads["charlm_lstm"]["step"]["none"]
    lstm = {"flops": flops, "recurrent": recurrent, "step": step, "gflops": flops / step / 1e9,
            "recurrent_mm": recurrent_mm, "timesteps": cfg.task.bptt,
            "shape": f"{batch}×{hidden}]·[{hidden}×{4 * hidden}"}
    log(f"[{time.perf_counter() - started:5.0f} s] matmul peak "
        + ", ".join(f"{n}: {g:.1f}" for n, g in peaks.items())
        + f" GFLOP/s; recurrent-shape mm {recurrent_mm:.1f}; char-LSTM step {lstm['gflops']:.1f}")

    gpt = measure_gpt()
    rates = throughput(args.suite_args, args.repeats, started)
    measured = {"measured": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "machine": machine(),
                "command": shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]]),
                "seconds": time.perf_counter() - started, "suite_args": args.suite_args, "rates": rates,
                "overheads": overheads, "peaks": {str(n): g for n, g in peaks.items()}, "lstm": lstm, "gpt": gpt}
    write_atomic(RAW, json.dumps(measured, indent=1, ensure_ascii=False) + "\n")
    write_results(measured)


def measure_gpt() -> dict:
    gpt = {**gpt_step(), "measured": f"{datetime.datetime.now():%Y-%m-%d %H:%M}"}
    log(f"GPT step: bare {1000 * gpt['bare']:.1f} ms, suite {1000 * gpt['suite']:.1f} ms, suite / bare "
        f"{gpt['ratio']:.2f} (load {gpt['load']:.1f})")
    return gpt


def write_results(measured: dict) -> None:
    text = report(measured)
    write_atomic(RESULTS, text)
    print(text)
    log(f"wrote {RESULTS} (from {RAW})")


if __name__ == "__main__":
    main()
