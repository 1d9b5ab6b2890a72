"""`make gpu-check`: what a CUDA machine must show before GPU results are trusted; writes benchmarks/GPU.md.

1. the tests marked `gpu` (pytest -m gpu), on the GPU;
2. a short main job with device=auto (it must land on CUDA);
3. bf16 autocast and fp16 with its GradScaler (unscaled before clipping): the first steps' gradient norms against
   float32's, from the same weights and batches;
4. a model step (the char-LSTM at conf/preset/charlm_lstm_paper.yaml's shape): tokens/s, and model FLOPs
   utilisation against the GPU's datasheet peak (``PEAKS``, by torch.cuda.get_device_name).
Without CUDA it says so in one line and exits 0 (1 where
nvidia-smi finds a GPU that this torch, a CPU build, cannot use). About 3 minutes on one GPU (set-up excluded).
"""

from __future__ import annotations

import datetime
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "benchmarks" / "GPU.md"
# Dense datasheet peaks in TFLOP/s (no sparsity), (float32 without tensor cores, bf16 or fp16 tensor cores), for
# the SXM/PCIe variant named; longer names first, as they are looked up as substrings of the device's name.
PEAKS = {"H100": (67.0, 989.0), "A100": (19.5, 312.0), "L40S": (91.6, 362.0), "RTX 4090": (82.6, 165.0),
         "RTX 3090": (35.6, 71.0), "A10G": (31.2, 70.0), "V100": (15.7, 125.0), "L4": (30.3, 121.0),
         "T4": (8.1, 65.0)}
# The benchmarked model step: conf/preset/charlm_lstm_paper.yaml's LSTM and batch.
STEP = ["+preset=charlm_lstm_paper", "logger=none"]
NORM_JOB = ["setup=digits_mlp", "steps=10", "eval_every=10", "logger=none", "clip=norm", "clip.threshold=0.5"]
TOLERANCE = {"bf16": 0.05, "fp16": 0.01}  # largest relative difference of a step's gradient norm from float32's


def peak_tflops(device_name: str) -> tuple[float, float] | None:
    """(float32, bf16/fp16) dense peak TFLOP/s of a known GPU, by a substring of its name; None if unknown."""
    return next((peak for key, peak in PEAKS.items() if key in device_name), None)


def compose(*overrides: str):
    """The config `python run.py OVERRIDES` runs."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from gradclip.config import register_schemas

    register_schemas()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides))


def gradient_norms(device: str, folder: Path, precisions=("fp32", "bf16", "fp16")) -> dict[str, list[float]]:
    """The pre-clip gradient norm of each step of the same short job at each of ``precisions`` on ``device``."""
    import pandas as pd

    from gradclip.sweep import Job
    from gradclip.training import run_jobs

    norms = {}
    for precision in precisions:
        overrides = [*NORM_JOB, f"device={device}", f"precision={precision}"]
        (result,) = run_jobs([Job(compose(*overrides), folder / precision, "gpu-check", precision, overrides)])
        if isinstance(result, dict):
            raise RuntimeError(f"precision={precision} on {device} failed: {result['error']}")
        metrics = pd.read_csv(folder / precision / "metrics.csv")
        norms[precision] = metrics.grad_norm[metrics.step > 0].tolist()
    return norms


def relative_differences(norms: dict[str, list[float]]) -> dict[str, float]:
    """Each reduced precision's largest relative difference from float32's gradient norm, over the first 3 steps
    (later steps start from weights the precisions have already moved apart)."""
    return {p: max(abs(a - b) / b for a, b in zip(norms[p][:3], norms["fp32"][:3])) for p in TOLERANCE if p in norms}


def lstm_step_flops(batch: int, bptt: int, embedding: int, hidden: int, layers: int, vocab: int) -> float:
    """FLOPs of one training step (forward + backward = 3 x forward) of the recurrent LM: matrix products only."""
    per_token = sum(2 * 4 * hidden * ((embedding if layer == 0 else hidden) + hidden) for layer in range(layers))
    per_token += 2 * hidden * vocab
    return 3.0 * per_token * batch * bptt


def step_benchmark(device: str, precision: str, steps: int = 50, warmup: int = 10, overrides=()) -> dict:
    """Time ``steps`` training steps (forward, backward, norm clip, SGD) of the benchmark model on ``device``."""
    from gradclip.config import parts
    from gradclip.training import AUTOCAST, build_optimizer

    cfg = compose(*STEP, f"device={device}", *overrides)
    task, model_part, clip, _ = parts(cfg)[:4]
    dev = torch.device(device)
    task.setup(dev)
    model = model_part.build(task).to(dev)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = build_optimizer(cfg.optim, model)
    clip.prepare(0, set())
    batches = torch.Generator().manual_seed(0)
    dtype = AUTOCAST[precision]

    def step():
        x, y = task.batch(batches)
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=dtype, enabled=dtype is not None):
            loss = task.loss(model(x), y)
        loss.backward()
        clip(params, measure=False)
        optimizer.step()

    for _ in range(warmup):
        step()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    started = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    seconds = (time.perf_counter() - started) / steps
    m, t = cfg.model, cfg.task
    flops = lstm_step_flops(t.batch_size, t.bptt, m.embedding, m.hidden, m.layers, task.vocab_size)
    return {"precision": precision, "step_ms": 1000 * seconds, "tokens_per_s": t.batch_size * t.bptt / seconds,
            "tflops": flops / seconds / 1e12}


def run(command: list[str], timeout: int) -> tuple[bool, str]:
    """Run ``command`` from the repository; (succeeded, its last output line)."""
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    lines = (done.stdout + done.stderr).strip().splitlines()
    return done.returncode == 0, lines[-1] if lines else ""


def main() -> int:
    if not torch.cuda.is_available():
        if torch.version.cuda is None and shutil.which("nvidia-smi"):
            print(f"gpu-check: this machine has an NVIDIA GPU (nvidia-smi) but torch {torch.__version__} is a CPU "
                  "build; install a CUDA build of the same version into .venv, then run make gpu-check again")
            return 1
        print("gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check")
        return 0
    name = torch.cuda.get_device_name(0)
    peak = peak_tflops(name)
    started, ok, lines = time.perf_counter(), True, []
    print(f"gpu-check on {name}: 1/4 the tests marked gpu", flush=True)
    passed, last = run([sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider"], 300)
    ok &= passed
    lines += ["| check | result |", "| --- | --- |", f"| `pytest -m gpu` | {'passed' if passed else 'FAILED'}: {last} |"]
    print("2/4 a short main job with device=auto", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        passed, last = run([sys.executable, "run.py", "device=auto", "steps=100", "eval_every=50", "logger=none",
                            f"hydra.run.dir={tmp}/job"], 300)
        summary = Path(tmp, "job", "summary.json")
        on_cuda = passed and summary.is_file() and '"device": "cuda' in summary.read_text()
        ok &= on_cuda
        lines.append(f"| main job, device=auto, 100 steps | {'on CUDA' if on_cuda else 'FAILED: ' + last} |")
        print("3/4 bf16 and fp16 (GradScaler) gradient norms against float32", flush=True)
        bf16 = torch.cuda.is_bf16_supported()
        if not bf16:
            lines.append(f"| bf16 | not supported by {name}: not checked |")
        differences = relative_differences(gradient_norms("cuda", Path(tmp), ("fp32", "bf16", "fp16") if bf16
                                                          else ("fp32", "fp16")))
    for precision, difference in differences.items():
        close = difference <= TOLERANCE[precision]
        ok &= close
        lines.append(f"| {precision} gradient norm vs fp32 (first 3 steps) | largest relative difference "
                     f"{difference:.2%} (at most {TOLERANCE[precision]:.0%}: {'ok' if close else 'FAILED'}) |")
    print("4/4 model step benchmark", flush=True)
    table = ["| precision | step (ms) | tokens/s | TFLOP/s | MFU |", "| --- | --- | --- | --- | --- |"]
    for precision, peak_index in (("fp32", 0), ("bf16" if bf16 else "fp16", 1)):
        result = step_benchmark("cuda", precision)
        mfu = f"{result['tflops'] / peak[peak_index]:.1%}" if peak else "unknown GPU: no peak in PEAKS"
        table.append(f"| {precision} | {result['step_ms']:.1f} | {result['tokens_per_s']:,.0f} | "
                     f"{result['tflops']:.2f} | {mfu} |")
    minutes = (time.perf_counter() - started) / 60
    report = [f"# GPU check: {name}", "",
              f"`make gpu-check` on {datetime.date.today()}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
              f"{minutes:.1f} min. {'All checks passed.' if ok else 'Some checks FAILED.'}", "", *lines, "",
              "## Model step: the char-LSTM of conf/preset/charlm_lstm_paper.yaml (1 x 512, 32 x 100 characters)", "",
              "FLOPs are the matrix products' (forward + backward = 3 x forward); MFU against the datasheet's dense "
              f"peak ({'%g / %g TFLOP/s fp32 / bf16' % peak if peak else 'not known for this GPU'}).", "", *table, ""]
    REPORT.write_text("\n".join(report))
    print("\n".join(report[4:]) + f"\nwritten: {REPORT}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
