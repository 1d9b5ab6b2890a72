"""The top-level config schema, the rules across groups, and the one-line error printing.

``conf/config.yaml`` starts from ``Config`` (stored in Hydra's ConfigStore as ``schema_config``), so Hydra rejects
unknown top-level keys and values of the wrong type while it composes. Each group option (task, model, clip,
schedule, logger) is a component that checks itself (``gradclip.component``); the optimizer is a torch.optim class
(torch's own or one of ``gradclip.optimizers``), named by its yaml's ``_target_`` and checked here by
``OPTIM_RULES``. ``validate`` runs every check before any file is written or any step is run, and raises
``ConfigError`` with a one-line message.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, NamedTuple

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from gradclip.component import (SEED, Component, ConfigError, check_fields, check_value, label, non_negative, positive,
                                rule, shown, typed)
from gradclip.logger import Logger


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast to bfloat16 (CPU or CUDA)
    fp16 = "fp16"  # autocast to float16 with a GradScaler, unscaled before clipping


@dataclass
class Config:
    """The top-level keys; their values, and what each means, are in conf/config.yaml."""

    task: Any = MISSING
    model: Any = MISSING
    clip: Any = MISSING
    optim: Any = MISSING
    schedule: Any = MISSING
    logger: Any = MISSING
    seed: int = rule(*SEED)
    steps: int = rule(lambda v: v >= 1, "an integer >= 1")
    eval_every: int = rule(lambda v: v >= 1, "an integer >= 1")
    device: Device = MISSING
    precision: Precision = MISSING
    threads: int = rule(lambda v: v >= 0, "an integer >= 0 (0 = auto)")
    diverge_factor: float = rule(lambda v: v > 1, "a number > 1")
    max_nonfinite: int = rule(lambda v: v >= 1, "an integer >= 1")
    spike_factor: float = rule(lambda v: v > 1, "a number > 1")
    spike_window: int = rule(lambda v: v >= 1, "an integer >= 1")
    diag_every: int = rule(lambda v: v >= 1, "an integer >= 1")
    smoothness_every: int = rule(lambda v: v >= 0, "an integer >= 0 (0 = off)")
    checkpoint_every: int = rule(lambda v: v >= 0, "an integer >= 0 (0 = never)")
    setup_name: str = rule(label, "a non-empty printable label")
    report: bool = MISSING


def register_schemas() -> None:
    """Store the top-level schema in Hydra's ConfigStore (idempotent); run.py and the tests call it first."""
    ConfigStore.instance().store(name="schema_config", node=Config)


def _fraction(v) -> bool:
    return 0 <= v < 1


# The optimizer's keys (its class's arguments, plus lr_scale): a key missing here must be a bool, or is refused.
OPTIM_RULES = {
    "lr": (positive, "a number > 0"),
    "lr_scale": (positive, "a number > 0 (the lr used is lr x lr_scale)"),
    "momentum": (_fraction, "a number in [0, 1)"),
    "dampening": (_fraction, "a number in [0, 1)"),
    "weight_decay": (non_negative, "a finite number >= 0"),
    "betas": (lambda v: len(v) == 2 and all(_fraction(b) for b in v), "two numbers in [0, 1), e.g. [0.9,0.999]"),
    "eps": (positive, "a number > 0"),
    # SPAM's (gradclip/optimizers/spam.py)
    "spike_threshold": (positive, "a number > 0 (a spike: g^2 > spike_threshold x v)"),
    "reset_interval": (lambda v: isinstance(v, int) and v >= 2, "an integer >= 2 (1 would reset the moments every "
                                                                 "step)"),
    "warmup_steps": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0 (0 = no ramp after a reset)"),
    "spike_clip_delay": (lambda v: isinstance(v, int) and v >= 2, "an integer >= 2 (on step 1, v is 0: every "
                                                                   "entry would be clipped to 0)"),
    "inner": (lambda v: isinstance(v, str) and v.count(".") >= 1 and "" not in v.split("."),
              "the class path of the optimizer wrapped, e.g. torch.optim.AdamW"),
    "max_squared_norm": (positive, "a number > 0"),
}  # a bool of ours: decay_matrices_only (weight decay on weight matrices alone, as nanoGPT; training.py)


def check_optimizer(node: DictConfig) -> None:
    target = node.get("_target_")
    if not (isinstance(target, str) and target.count(".") >= 1 and "lr" in node and "lr_scale" in node):
        raise ConfigError(f"optim._target_={shown(target)}: an optimizer yaml names a torch.optim class (or your "
                          "own) with _target_ and gives lr and lr_scale (docs/extending.md)")
    for key, value in node.items():
        if key == "_target_" or isinstance(value, bool):
            continue
        if key not in OPTIM_RULES:
            raise ConfigError(f"optim.{key}={shown(value)}: no rule for this key; add one to OPTIM_RULES "
                              "(gradclip/config.py)")
        check_value(f"optim.{key}", value, *OPTIM_RULES[key])


def optimizer_name(node) -> str:
    """torch.optim.SGD -> sgd."""
    return str(node["_target_"]).rpartition(".")[2].lower()


class Parts(NamedTuple):
    """A config's components, typed and checked."""

    task: Component
    model: Component
    clip: Component
    logger: Logger


def parts(cfg: DictConfig) -> Parts:
    """The typed components of ``cfg`` (each checks its own fields)."""
    return Parts(*(typed(group, cfg[group]) for group in Parts._fields))


def _cuda_requested(cfg: DictConfig) -> bool:
    import torch

    return cfg.device == Device.cuda or (cfg.device == Device.auto and torch.cuda.is_available())


def _cpu_runs_bf16() -> bool:
    """Whether this CPU has oneDNN's bfloat16 kernels (AVX-512 BW/VL/DQ, AVX-NE-CONVERT or AMX), by torch's own
    probe; on an AVX2-only CPU, precision=bf16 fails mid-run (e.g. the LSTM's kernel)."""
    import torch

    return not torch.backends.mkldnn.is_available() or bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def validate(cfg: DictConfig) -> Parts:
    """Raise ConfigError for the first value that cannot work, before any file is written or any step is run."""
    check_fields(cfg, Config)
    check_optimizer(cfg.optim)
    found = parts(cfg)
    task, model = found.task, found.model
    if task.kind != model.accepts:
        raise ConfigError(f"model={model.name}: needs a {model.accepts} task (got task={task.name}, a {task.kind} "
                          "task)")
    model.check_task(task)
    typed("schedule", cfg.schedule)
    if cfg.precision == Precision.fp16 and not model.half_on_cpu and not _cuda_requested(cfg):
        bf16 = "precision=bf16, " if _cpu_runs_bf16() else ""
        raise ConfigError(f"precision=fp16: model={model.name} has no float16 kernels on CPU (oneDNN); use "
                          f"{bf16}device=cuda, or an MLP")
    if cfg.precision == Precision.bf16 and not _cuda_requested(cfg) and not _cpu_runs_bf16():
        raise ConfigError("precision=bf16: this CPU has no bfloat16 kernels (oneDNN needs AVX-512 or AMX); use "
                          "precision=fp32 or device=cuda")
    if cfg.device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda: no CUDA device here; use device=auto or device=cpu")
    return found


def one_line_error(exc: BaseException) -> str | None:
    """A one-line message for a config error raised while Hydra composes or we validate; None for anything else."""
    from hydra.errors import HydraException, MissingConfigException
    from omegaconf.errors import OmegaConfBaseException

    if isinstance(exc, ConfigError):
        return str(exc)
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return f"{group}={option}: no such option; the options of '{group}' are: {', '.join(exc.options)}"
    cause = exc if isinstance(exc, OmegaConfBaseException) else exc.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        return _key_error(cause) or f"{cause.full_key}: {str(cause.msg).splitlines()[0]}"
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        return " ".join(str(exc).split("Config search path")[0].split())
    return None


TYPE_WORDS = {"Integer": "an integer", "Float": "a number", "Boolean": "true or false"}


def _key_error(cause) -> str | None:
    """'seed='abc': must be an integer ...' for a value of the wrong type; 'clip.threshold: clip=none has no setting
    'threshold' (its settings: name)' for a key its group option lacks; None for other OmegaConf errors."""
    from omegaconf.errors import ConfigAttributeError, ValidationError

    converted = re.search(r"could not be converted to (\w+)", str(cause.msg))
    if isinstance(cause, ValidationError) and converted:
        rules = {f.name: f.metadata["rule"][1] for f in fields(Config) if "rule" in f.metadata}
        allowed = rules.get(cause.full_key, TYPE_WORDS.get(converted[1], f"of type {converted[1]}"))
        return f"{cause.full_key}={shown(cause.value)}: must be {allowed}"
    node, (group, _, key) = cause.parent_node, cause.full_key.rpartition(".")
    if isinstance(cause, ConfigAttributeError) and "not in struct" in str(cause.msg) and group in Config.__annotations__:
        target = str(node.get("_target_", ""))
        option = node.get("name") or (optimizer_name(node) if group == "optim" else target.split(".")[-2])
        settings = ", ".join(k for k in node if k != "_target_")
        return f"{cause.full_key}: {group}={option} has no setting '{key}' (its settings: {settings})"
    return None


def exit_on_config_error(exc: BaseException) -> None:
    """Print a config error as one line on stderr and exit with status 2; re-raise anything else."""
    message = one_line_error(exc)
    if message is None:
        raise exc
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
