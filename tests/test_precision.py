"""Mixed precision: bf16 / fp16 autocast, and fp16's GradScaler unscaled before clipping (testable on CPU)."""

import pandas as pd
import pytest
import torch

import gradclip.training as training
from gradclip.config import ConfigError, validate

from conftest import train_one

DIGITS = ["task=digits", "model=mlp", "steps=20", "eval_every=10", "optim.lr=0.1", "clip=norm", "clip.threshold=0.5"]


def metrics(make_cfg, folder, *overrides) -> pd.DataFrame:
    train_one(make_cfg(*overrides), folder, overrides=overrides)
    return pd.read_csv(folder / "metrics.csv")


def test_fp16_clips_the_true_gradient_not_the_scaled_one(make_cfg, tmp_path, monkeypatch):
    """The same fp16 run with the scaler at 2^16 (default) and at 1: same pre- and post-clip norms, same losses.
    Clipping before `unscale_` (the classic bug) would see norms 65536 times larger and clip every step."""
    scaled = metrics(make_cfg, tmp_path / "scaled", *DIGITS, "precision=fp16")
    scaler = torch.amp.GradScaler
    monkeypatch.setattr(training.torch.amp, "GradScaler",
                        lambda device: scaler(device, init_scale=1.0, growth_interval=10**6))
    unscaled = metrics(make_cfg, tmp_path / "unscaled", *DIGITS, "precision=fp16")
    steps = scaled.step > 0
    pd.testing.assert_series_equal(scaled.grad_norm[steps], unscaled.grad_norm[steps], rtol=1e-6)
    pd.testing.assert_series_equal(scaled.grad_norm_clipped[steps], unscaled.grad_norm_clipped[steps], rtol=1e-6)
    pd.testing.assert_series_equal(scaled.loss, unscaled.loss, rtol=1e-6)
    assert scaled.grad_norm[steps].max() < 100 and (scaled.grad_norm_clipped[steps] <= 0.5 + 1e-6).all()


def test_autocast_changes_the_arithmetic(make_cfg, tmp_path):
    fp32 = metrics(make_cfg, tmp_path / "fp32", *DIGITS)
    bf16 = metrics(make_cfg, tmp_path / "bf16", *DIGITS, "precision=bf16")
    assert not fp32.loss.iloc[1:].equals(bf16.loss.iloc[1:])  # bf16 matmuls really ran
    assert (bf16.loss.iloc[1:] - fp32.loss.iloc[1:]).abs().max() < 0.1  # and still train the same model


def test_fp16_recurrent_on_cpu_is_refused(make_cfg):
    with pytest.raises(ConfigError, match="precision=fp16: model=lstm has no float16 kernels on CPU"):
        validate(make_cfg("precision=fp16", "device=cpu"))


@pytest.mark.parametrize("native", [True, False], ids=["bf16-cpu", "avx2-only-cpu"])
def test_bf16_on_cpu_only_where_the_cpu_has_bf16_kernels(make_cfg, monkeypatch, native):
    """On a CPU without oneDNN bf16 kernels (AVX2 only) the LSTM's bf16 run would fail mid-run: refused up front,
    and the fp16 refusal recommends bf16 only where it works."""
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: native)
    if native:
        validate(make_cfg("precision=bf16", "device=cpu"))
    else:
        with pytest.raises(ConfigError, match="precision=bf16: this CPU has no bfloat16 kernels"):
            validate(make_cfg("precision=bf16", "device=cpu"))
    with pytest.raises(ConfigError, match="precision=fp16: model=lstm") as refused:
        validate(make_cfg("precision=fp16", "device=cpu"))
    assert ("precision=bf16" in str(refused.value)) == native
