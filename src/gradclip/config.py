"""Config schemas and the checks that types alone cannot express.

Every group option in ``conf/`` starts from one of the dataclasses below (its yaml names it in its defaults list),
so Hydra rejects unknown keys and values of the wrong type while it composes. The schemas are stored at the top
level of Hydra's ConfigStore under ``schema_*`` names: that keeps them out of the selectable group options.
``validate`` then checks ranges, paths and combinations, and raises ``ConfigError`` with a one-line message.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line naming the key and what is allowed."""


class Device(Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Level(Enum):
    char = "char"
    word = "word"


class Cell(Enum):
    lstm = "lstm"
    gru = "gru"
    rnn = "rnn"  # Elman RNN with tanh, as in Pascanu et al.


class Activation(Enum):
    tanh = "tanh"
    relu = "relu"


class ClipMethod(Enum):
    none = "none"
    norm = "norm"  # one global L2 norm over all parameters (PyTorch, Caffe, Pascanu's Algorithm 1)
    value = "value"  # element-wise (Mikolov)
    per_tensor = "per_tensor"  # each tensor's own L2 norm (Keras clipnorm, TF clip_by_norm)
    random = "random"  # Goodfellow et al.: above the threshold, a random direction of norm threshold
    autoclip = "autoclip"  # Seetharaman et al.: the threshold is a percentile of the norms seen so far
    agc = "agc"  # Brock et al.: unit-wise, gradient norm relative to weight norm
    zclip = "zclip"  # z-score of the norm against its EMA mean / variance


class LoggerMode(Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


# ---- tasks ----
@dataclass
class CharLMTask:
    name: str = "charlm"
    data_dir: Optional[str] = None  # folder with train.txt / valid.txt [/ test.txt]; None = CPython's pydoc topics
    level: Level = Level.char
    bptt: int = 64
    batch_size: int = 32
    eval_tokens: int = 16384  # held-out tokens scored at each evaluation
    target: Optional[float] = 2.5  # held-out bits/char (perplexity at level=word) that counts as reached


@dataclass
class SyntheticTask:
    """Pascanu et al.'s adding and temporal order problems: fresh batches from a seeded generator."""

    name: str = "adding"
    seq_len: int = 50  # L (adding: each batch has a length drawn from [L, 1.1 L])
    batch_size: int = 20
    eval_size: int = 1000
    data_seed: int = 1234  # seed of the held-out set, the same for every run
    target: Optional[float] = 0.01  # held-out error rate counted as solved (Pascanu: < 1 %)


@dataclass
class DigitsTask:
    name: str = "digits"
    batch_size: int = 32
    test_fraction: float = 0.2
    data_seed: int = 1234
    target: Optional[float] = 0.05  # held-out error rate


@dataclass
class RegressionTask:
    name: str = "regression"
    samples: int = 1000
    features: int = 20
    noise: float = 0.1
    batch_size: int = 32
    data_seed: int = 1
    target: Optional[float] = 20.0  # held-out MSE (targets are unscaled, std ~ 100)


@dataclass
class CliffTask:
    """Pascanu et al.'s one-unit RNN (Eq. 8): no data, the loss is a function of (w, b) alone."""

    name: str = "cliff"
    length: int = 50  # unrolled steps
    x0: float = 0.5
    goal: float = 0.7  # E = (sigmoid(x_length) - goal)^2
    target: Optional[float] = 1e-4  # E at or below this counts as reached


# ---- models ----
@dataclass
class RecurrentModel:
    name: str = "lstm"
    cell: Cell = Cell.lstm
    embedding: int = 64  # used when the inputs are tokens
    hidden: int = 128
    layers: int = 1


@dataclass
class MLPModel:
    name: str = "mlp"
    depth: int = 2  # hidden layers
    width: int = 64
    activation: Activation = Activation.relu
    init_gain: float = 1.0  # Xavier-normal gain; a deep tanh net with gain > 1 explodes


@dataclass
class CliffModel:
    name: str = "cliff"
    w0: float = 5.0  # starting point of the two parameters
    b0: float = -2.3


# ---- clipping, optimisers, logger ----
@dataclass
class ClipConfig:
    name: str = "none"
    method: ClipMethod = ClipMethod.none
    threshold: Optional[float] = None  # norm / value / per_tensor / random; inf = never clip
    percentile: float = 10.0  # autoclip: clip at this percentile of all norms so far
    clip_factor: float = 0.01  # agc: lambda, the largest allowed ||G_i|| / max(||W_i||, eps)
    agc_eps: float = 1e-3  # agc: floor of the unit's weight norm
    alpha: float = 0.97  # zclip: EMA factor of the norm's mean and variance
    z_thresh: float = 2.5  # zclip: clip to mean + z_thresh * std when the norm's z-score exceeds it
    warmup: int = 25  # autoclip / zclip: steps that only collect norms before clipping starts


@dataclass
class SGDConfig:
    name: str = "sgd"
    lr: float = 1.0
    lr_scale: float = 1.0  # the lr used is lr x lr_scale (lets one sweep scale the lrs of different setups)
    momentum: float = 0.0
    weight_decay: float = 0.0


@dataclass
class AdamConfig:
    name: str = "adam"
    lr: float = 1e-3
    lr_scale: float = 1.0
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass
class LoggerConfig:
    name: str = "wandb"
    mode: LoggerMode = LoggerMode.offline
    project: str = "gradclip"
    entity: Optional[str] = None


@dataclass
class Config:
    task: Any = None
    model: Any = None
    clip: Any = None
    optim: Any = None
    logger: Any = None
    seed: int = 0
    steps: int = 1000
    eval_every: int = 100
    device: Device = Device.auto
    threads: int = 0  # torch intra-op threads; 0 = torch's default (all cores)
    diverge_factor: float = 5.0  # training loss above this multiple of the first step's loss = diverged
    max_nonfinite: int = 5  # this many non-finite gradients in a row = diverged
    spike_factor: float = 1.5  # a step whose loss exceeds this multiple of the last `spike_window` steps' minimum
    spike_window: int = 50
    diag_every: int = 1  # update norm and cosine(applied, raw gradient) every this many steps
    smoothness_every: int = 0  # Zhang et al.'s local smoothness estimate every this many steps; 0 = off
    checkpoint_every: int = 200  # save a resumable checkpoint every this many steps; 0 = never
    setup_name: str = "custom"  # a label the conf/setup/ bundles set; copied into summary.json
    report: bool = True  # build the sweep's report when its runs are done


SCHEMAS = {
    "schema_config": Config,
    "schema_task_charlm": CharLMTask,
    "schema_task_synthetic": SyntheticTask,
    "schema_task_digits": DigitsTask,
    "schema_task_regression": RegressionTask,
    "schema_task_cliff": CliffTask,
    "schema_model_cliff": CliffModel,
    "schema_model_recurrent": RecurrentModel,
    "schema_model_mlp": MLPModel,
    "schema_clip": ClipConfig,
    "schema_optim_sgd": SGDConfig,
    "schema_optim_adam": AdamConfig,
    "schema_logger": LoggerConfig,
}


def register_schemas() -> None:
    """Store every schema in Hydra's ConfigStore (idempotent); run.py and the tests call it before composing."""
    store = ConfigStore.instance()
    for name, node in SCHEMAS.items():
        store.store(name=name, node=node)


THRESHOLD_METHODS = {ClipMethod.norm, ClipMethod.value, ClipMethod.per_tensor, ClipMethod.random}
TASK_KINDS = {"sequence": {"charlm", "adding", "temporal_order"}, "vector": {"digits", "regression"}, "cliff": {"cliff"}}


def _positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0


# key -> (test, what is allowed); a key missing from the composed config is skipped
RANGE_CHECKS = {
    "steps": (lambda v: v >= 1, "an integer >= 1"),
    "eval_every": (lambda v: v >= 1, "an integer >= 1"),
    "threads": (lambda v: v >= 0, "an integer >= 0 (0 = torch's default)"),
    "diverge_factor": (lambda v: v > 1, "a number > 1"),
    "max_nonfinite": (lambda v: v >= 1, "an integer >= 1"),
    "spike_factor": (lambda v: v > 1, "a number > 1"),
    "spike_window": (lambda v: v >= 1, "an integer >= 1"),
    "optim.lr": (_positive, "a number > 0"),
    "optim.lr_scale": (_positive, "a number > 0"),
    "diag_every": (lambda v: v >= 1, "an integer >= 1"),
    "smoothness_every": (lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    "checkpoint_every": (lambda v: v >= 0, "an integer >= 0 (0 = never)"),
    "clip.percentile": (lambda v: 0 < v <= 100, "a number in (0, 100]"),
    "clip.clip_factor": (_positive, "a number > 0"),
    "clip.agc_eps": (_positive, "a number > 0"),
    "clip.alpha": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "clip.z_thresh": (_positive, "a number > 0"),
    "clip.warmup": (lambda v: v >= 1, "an integer >= 1"),
    "optim.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.weight_decay": (lambda v: v >= 0, "a number >= 0"),
    "optim.beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.eps": (_positive, "a number > 0"),
    "task.bptt": (lambda v: v >= 2, "an integer >= 2"),
    "task.seq_len": (lambda v: v >= 10, "an integer >= 10"),
    "task.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "task.eval_tokens": (lambda v: v >= 2, "an integer >= 2"),
    "task.eval_size": (lambda v: v >= 1, "an integer >= 1"),
    "task.test_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "task.samples": (lambda v: v >= 10, "an integer >= 10"),
    "task.features": (lambda v: v >= 1, "an integer >= 1"),
    "task.noise": (lambda v: v >= 0, "a number >= 0"),
    "task.length": (lambda v: v >= 1, "an integer >= 1"),
    "model.embedding": (lambda v: v >= 1, "an integer >= 1"),
    "model.hidden": (lambda v: v >= 1, "an integer >= 1"),
    "model.layers": (lambda v: v >= 1, "an integer >= 1"),
    "model.depth": (lambda v: v >= 0, "an integer >= 0"),
    "model.width": (lambda v: v >= 1, "an integer >= 1"),
    "model.init_gain": (_positive, "a number > 0"),
}


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot work, before any file is written or any step is run."""
    for key, (ok, allowed) in RANGE_CHECKS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={value}: must be {allowed}")

    clip = cfg.clip
    threshold = clip.threshold
    if clip.method in THRESHOLD_METHODS and not (threshold is not None and threshold > 0):
        raise ConfigError(f"clip.threshold={threshold}: clip={clip.name} needs a threshold > 0 (inf = never clip)")

    task, model = cfg.task.name, cfg.model.name
    kind = {"cliff": "cliff", "mlp": "vector"}.get(model, "sequence")
    if task not in TASK_KINDS[kind]:
        raise ConfigError(f"model={model}: needs a {kind} task, one of {sorted(TASK_KINDS[kind])} (got task={task})")

    data_dir = OmegaConf.select(cfg, "task.data_dir", default=None)
    if data_dir is not None:
        folder = Path(data_dir).expanduser()
        if not folder.is_dir():
            raise ConfigError(f"task.data_dir={data_dir}: no such folder (it needs train.txt and valid.txt)")
        for name in ("train.txt", "valid.txt"):
            if not (folder / name).is_file():
                raise ConfigError(f"task.data_dir={data_dir}: no {name} in it (needs train.txt and valid.txt)")

    if cfg.device == Device.cuda:
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("device=cuda: no CUDA device here; use device=auto or device=cpu")


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
        return f"{cause.full_key}: {str(cause.msg).splitlines()[0]}"
    if isinstance(exc, (HydraException, OmegaConfBaseException)):
        return " ".join(str(exc).split("Config search path")[0].split())
    return None


def exit_on_config_error(exc: BaseException) -> None:
    """Print a config error as one line on stderr and exit with status 2; re-raise anything else."""
    message = one_line_error(exc)
    if message is None:
        raise exc
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)
