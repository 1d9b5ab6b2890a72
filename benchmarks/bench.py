"""`make bench`: the plain loop against the suite on one reference sweep, clipping's share of a step per protocol
setup, LSTM against matmul peak, the suite's GPT step against a bare nanoGPT-style loop, and the least `make reproduce`
can cost here (the step costs: step_costs.py).

Prints a table and writes benchmarks/RESULTS.md. Exit status 0 whether the targets are met or not (the table says).
    python benchmarks/bench.py [--suite-args "hydra/launcher=joblib"] [--repeats 2]
                               [--report-only | --gpt-only | --clip-only | --floor-only]
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

from gradclip.config import parts
from gradclip.files import write_atomic
from plain_loop import SETUPS, STABLE_LR, compose_setup
from step_costs import (LR_RUNS, clip_report, clip_shares, floor_report, gpt_report, log, measure_gpt,
                        measure_headroom, verdict)

SUITE_ARGS = ["hydra/launcher=population"]  # how the suite side (b) is launched: the sweep executor under test
ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
RAW = ROOT / "benchmarks" / "RESULTS.json"  # the measurements RESULTS.md is written from (`--report-only`)
SEEDS = 8
REGIMES = "none,norm1"  # the reference sweep of a setup: both regimes x SEEDS seeds, one sweep of 16 runs
STEPS = {"adding_rnn": 600, "deep_mlp": 1000, "charlm_lstm": 150}  # per run; sized so `make bench` stays < 10 min
RUNS = SEEDS * len(REGIMES.split(","))
BUDGET_S = 9 * 60  # no further a/b repeat is started when it would end after this
TARGET_RATIO, TARGET_PEAK = 2.5, 0.70


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


def report(m: dict) -> str:
    """RESULTS.md from the measurements ``m`` (as RESULTS.json holds them)."""
    rates, clip, peaks, lstm, suite_args = m["rates"], m["clip"], m["peaks"], m["lstm"], m["suite_args"]
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
        "Plain step = batch, forward, backward, SGD, no clipping (from the rounds of clipping's share below), at "
        f"torch's default threads and at one thread. The suite runs one worker per core ({cores}), one thread each; "
        "its time per model-step on one core = workers / its rate after start-up, and includes what it does beyond "
        "the plain step: the gradient norm of every step, clipping in half the runs, diagnostics every 10 steps, "
        "evaluations, files.", "",
        "| setup | start-up plain / suite (s) | after start-up: plain / suite (model-steps/s) | suite / plain after "
        "start-up | plain step: default threads / 1 thread (ms) | suite per model-step on one core (ms) |",
        "|---|---|---|---|---|---|"]
    for setup, r in rates.items():
        work = RUNS * STEPS[setup]
        plain_rate = (work - RUNS) / max(r["plain"] - r["plain_startup"], 1e-9)
        suite_rate = (work - RUNS) / max(r["suite"] - r["suite_startup"], 1e-9)
        step = clip[SETUPS[setup]]["step"]
        lines.append(f"| {setup} | {r['plain_startup']:.1f} / {r['suite_startup']:.1f} | {plain_rate:.0f} / "
                     f"{suite_rate:.0f} | {suite_rate / plain_rate:.2f}× | {1000 * step['bare, default threads']:.2f} "
                     f"/ {1000 * step['bare']:.2f} | {1000 * cores / suite_rate:.2f} |")
    lines += [
        "", "Read: the suite's gain is its workers, one per core with one thread each, against a plain loop that "
        "runs one model at a time on torch's threads; threads help the char-LSTM's larger products and not the "
        "small models' (compare the plain step at default threads and at one thread). Populations do not make a "
        "model-step cheaper than a bare plain step on one thread: the suite also measures the gradient norm of "
        "every step, clips, evaluates and writes files, MLP populations share one batched product per layer that "
        "is bit-identical but already compute-bound at these sizes, and recurrent nets are not batched (it would "
        "not be bit-identical). Its start-up is longer: Hydra composes and checks every job, the worker server "
        "imports torch, and every run is evaluated at its first and last step."]
    lines += ["", *clip_report(clip)]
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
    lines += gpt_report(m["gpt"]) if "gpt" in m else []
    return "\n".join(lines + (floor_report(m, pd.read_csv(LR_RUNS)) if "headroom" in m else []))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--suite-args", type=shlex.split, default=SUITE_ARGS,
                        help=f"how to launch the suite's sweep (default: {shlex.join(SUITE_ARGS)!r})")
    parser.add_argument("--repeats", type=int, default=2, help="a/b repeats per setup (median reported)")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--report-only", action="store_true", help=f"rewrite {RESULTS.name} from {RAW.name}, no runs")
    only.add_argument("--gpt-only", action="store_true", help=f"measure the GPT step alone, into {RAW.name}")
    only.add_argument("--clip-only", action="store_true", help=f"measure clipping's share alone, into {RAW.name}")
    only.add_argument("--floor-only", action="store_true",
                      help=f"measure the population headroom alone (the floor of make reproduce), into {RAW.name}")
    args = parser.parse_args()
    started = time.perf_counter()
    if args.report_only or args.gpt_only or args.clip_only or args.floor_only:
        if not RAW.is_file():
            parser.error(f"{RAW} does not exist: run the benchmark first")
        measured = json.loads(RAW.read_text())
        if args.gpt_only or args.clip_only or args.floor_only:
            measured.update({"gpt": measure_gpt()} if args.gpt_only else {"clip": clip_shares(started)}
                            if args.clip_only else {"headroom": measure_headroom()})
            write_atomic(RAW, json.dumps(measured, indent=1, ensure_ascii=False) + "\n")
        return write_results(measured)

    clip = clip_shares(started)
    cfg = compose_setup("charlm_lstm")
    batch, hidden = cfg.task.batch_size, cfg.model.hidden
    peaks, recurrent_mm = matmul_gflops(batch, hidden)
    task = parts(cfg).task
    task.setup(torch.device("cpu"))
    flops, recurrent = lstm_flops(cfg, task.vocab_size)
    step = clip["charlm_lstm"]["step"]["bare, default threads"]
    lstm = {"flops": flops, "recurrent": recurrent, "step": step, "gflops": flops / step / 1e9,
            "recurrent_mm": recurrent_mm, "timesteps": cfg.task.bptt,
            "shape": f"{batch}×{hidden}]·[{hidden}×{4 * hidden}"}
    log(f"[{time.perf_counter() - started:5.0f} s] matmul peak "
        + ", ".join(f"{n}: {g:.1f}" for n, g in peaks.items())
        + f" GFLOP/s; recurrent-shape mm {recurrent_mm:.1f}; char-LSTM step {lstm['gflops']:.1f}")

    gpt, headroom = measure_gpt(), measure_headroom()
    rates = throughput(args.suite_args, args.repeats, started)
    measured = {"measured": f"{datetime.datetime.now():%Y-%m-%d %H:%M}", "machine": machine(),
                "command": shlex.join(["python", "benchmarks/bench.py", *sys.argv[1:]]),
                "seconds": time.perf_counter() - started, "suite_args": args.suite_args, "rates": rates,
                "clip": clip, "peaks": {str(n): g for n, g in peaks.items()}, "lstm": lstm, "gpt": gpt,
                "headroom": headroom}
    write_atomic(RAW, json.dumps(measured, indent=1, ensure_ascii=False) + "\n")
    write_results(measured)


def write_results(measured: dict) -> None:
    text = report(measured)
    write_atomic(RESULTS, text)
    print(text)
    log(f"wrote {RESULTS} (from {RAW})")


if __name__ == "__main__":
    main()
