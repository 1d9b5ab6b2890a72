"""The CUDA paths `make gpu-check` relies on. On a CUDA machine they run on the GPU; here they run the same code on
the CPU, with CUDA's presence mocked where the code only asks whether it is there."""

import subprocess
import sys

import pytest
import torch

import gradclip.config
from gradclip.config import validate
from gradclip.training import resolve_device

from conftest import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check  # noqa: E402

pytestmark = pytest.mark.gpu
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def test_device_auto_takes_cuda_and_allows_its_precisions_when_cuda_is_there(make_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    validate(make_cfg("precision=fp16"))  # the LSTM: refused on a CPU, accepted where CUDA takes it
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(gradclip.config.ConfigError, match="precision=fp16: model=lstm"):
        validate(make_cfg("precision=fp16"))


def test_reduced_precisions_give_float32s_gradient_norms(tmp_path):
    """bf16 autocast and fp16 with its GradScaler (unscaled before clipping) see the gradient float32 sees, within
    gpu-check's tolerances; a scaled (not unscaled) fp16 norm would be ~65536 times too large."""
    bf16 = DEVICE == "cpu" or torch.cuda.is_bf16_supported()  # not on a T4 or V100
    norms = gpu_check.gradient_norms(DEVICE, tmp_path, ("fp32", "bf16", "fp16") if bf16 else ("fp32", "fp16"))
    assert all(len(steps) == 10 for steps in norms.values())
    differences = gpu_check.relative_differences(norms)
    assert all(difference <= gpu_check.TOLERANCE[p] for p, difference in differences.items())
    assert len(differences) == 1 + bf16 and differences.get("bf16", 1) > 0  # bf16 really ran: it rounds differently


def test_step_benchmark_counts_tokens_and_flops():
    result = gpu_check.step_benchmark(DEVICE, "fp32", steps=2, warmup=1,
                                      overrides=["model.hidden=32", "task.bptt=8", "task.batch_size=4"])
    assert result["tokens_per_s"] == pytest.approx(4 * 8 / (result["step_ms"] / 1000))
    assert result["tflops"] > 0


def test_lstm_flops_are_the_matrix_products():
    # one layer, embedding 1, hidden 1, vocab 1, one token: gates 2 x 4 x (1 + 1), head 2 x 1 x 1; x 3 for training
    assert gpu_check.lstm_step_flops(1, 1, 1, 1, 1, 1) == 3 * (16 + 2)
    assert gpu_check.lstm_step_flops(2, 3, 1, 1, 2, 1) == 2 * 3 * 3 * (16 + 16 + 2)


@pytest.mark.parametrize("name, peak", [("NVIDIA A100-SXM4-80GB", (19.5, 312.0)), ("NVIDIA L40S", (91.6, 362.0)),
                                        ("NVIDIA L4", (30.3, 121.0)), ("Tesla T4", (8.1, 65.0)),
                                        ("NVIDIA H100 80GB HBM3", (67.0, 989.0)), ("Some Future GPU", None)])
def test_peak_is_named_by_the_device_name(name, peak):
    assert gpu_check.peak_tflops(name) == peak


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the whole check instead")
def test_gpu_check_without_cuda_says_so_in_one_line_and_exits_0():
    report = ROOT / "benchmarks" / "GPU.md"
    before = report.stat().st_mtime_ns if report.exists() else None
    # -o: the environment counts as built (make would otherwise rebuild it after an edit of pyproject.toml)
    done = subprocess.run(["make", "-s", "-o", ".venv/.installed", "gpu-check"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu-check: no CUDA device here (torch.cuda.is_available() is False); nothing to check"]
    assert (report.stat().st_mtime_ns if report.exists() else None) == before  # nothing written


@pytest.mark.skipif(torch.cuda.is_available(), reason="torch here has CUDA")
def test_gpu_check_with_a_gpu_but_a_cpu_build_of_torch_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setattr(gpu_check.shutil, "which", lambda command: f"/usr/bin/{command}")
    monkeypatch.setattr(torch.version, "cuda", None)
    assert gpu_check.main() == 1
    assert "has an NVIDIA GPU (nvidia-smi) but torch" in capsys.readouterr().out
