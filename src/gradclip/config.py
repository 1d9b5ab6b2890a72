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


class Precision(Enum):
    fp32 = "fp32"
    bf16 = "bf16"  # autocast to bfloat16 (CPU or CUDA)
    fp16 = "fp16"  # autocast to float16 with a GradScaler, unscaled before clipping


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
    precision: Precision = Precision.fp32
    threads: int = 1  # torch threads per run; 0 = auto (the cores shared among a launcher's parallel workers)
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
ERROR_RATE_TASKS = {"adding", "temporal_order", "digits"}  # their task.target is a held-out error rate
# the names each group schema runs under: build_task, build_model, build_optimizer and RunLogger dispatch on them
SCHEMA_NAMES = {
    CharLMTask: ("charlm",), SyntheticTask: ("adding", "temporal_order"), DigitsTask: ("digits",),
    RegressionTask: ("regression",), CliffTask: ("cliff",), RecurrentModel: ("lstm", "gru", "rnn"),
    MLPModel: ("mlp",), CliffModel: ("cliff",), SGDConfig: ("sgd",), AdamConfig: ("adam",),
    LoggerConfig: ("wandb", "none"),
}


def _positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def _non_negative(x) -> bool:
    return math.isfinite(x) and x >= 0


def _label(text: str) -> bool:
    return text.strip() != "" and text.isprintable()


def _wandb_project(name: str) -> bool:
    return _label(name) and len(name) <= 128 and not set(name) & set("/\\#?%:")  # W&B's own rule for project names


SEED = (lambda v: 0 <= v < 2**32, "an integer in [0, 4294967295] (the seeds numpy and scikit-learn accept)")
FINITE = (math.isfinite, "a finite number")

# key -> (test, what is allowed) for values that can be judged on their own; a key missing from the composed config
# (it belongs to another option of its group) is skipped, and so is null where the schema allows it
RANGE_CHECKS = {
    "seed": SEED,
    "steps": (lambda v: v >= 1, "an integer >= 1"),
    "eval_every": (lambda v: v >= 1, "an integer >= 1"),
    "threads": (lambda v: v >= 0, "an integer >= 0 (0 = auto)"),
    "diverge_factor": (lambda v: v > 1, "a number > 1"),
    "max_nonfinite": (lambda v: v >= 1, "an integer >= 1"),
    "spike_factor": (lambda v: v > 1, "a number > 1"),
    "spike_window": (lambda v: v >= 1, "an integer >= 1"),
    "diag_every": (lambda v: v >= 1, "an integer >= 1"),
    "smoothness_every": (lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    "checkpoint_every": (lambda v: v >= 0, "an integer >= 0 (0 = never)"),
    "setup_name": (_label, "a non-empty printable label"),
    "optim.lr": (_positive, "a number > 0"),
    "optim.lr_scale": (_positive, "a number > 0"),
    "optim.momentum": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.weight_decay": (_non_negative, "a finite number >= 0"),
    "optim.beta1": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.beta2": (lambda v: 0 <= v < 1, "a number in [0, 1)"),
    "optim.eps": (_positive, "a number > 0"),
    "clip.name": (_label, "a non-empty printable label"),
    "clip.threshold": (lambda v: v > 0, "a number > 0 (inf = never clip), or null"),
    "clip.percentile": (lambda v: 0 < v <= 100, "a number in (0, 100]"),
    "clip.clip_factor": (_positive, "a number > 0"),
    "clip.agc_eps": (_positive, "a number > 0"),
    "clip.alpha": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "clip.z_thresh": (_positive, "a number > 0"),
    "clip.warmup": (lambda v: v >= 1, "an integer >= 1"),
    "task.data_dir": (lambda v: v.strip() != "", "a folder path (null = CPython's pydoc topics)"),
    "task.data_seed": SEED,
    "task.target": (_non_negative, "a finite number >= 0, or null for no target"),
    "task.bptt": (lambda v: v >= 2, "an integer >= 2"),
    "task.seq_len": (lambda v: v >= 10, "an integer >= 10"),
    "task.batch_size": (lambda v: v >= 1, "an integer >= 1"),
    "task.eval_tokens": (lambda v: v >= 2, "an integer >= 2"),
    "task.eval_size": (lambda v: v >= 1, "an integer >= 1"),
    "task.test_fraction": (lambda v: 0 < v < 1, "a number in (0, 1)"),
    "task.samples": (lambda v: v >= 10, "an integer >= 10"),
    "task.features": (lambda v: v >= 1, "an integer >= 1"),
    "task.noise": (_non_negative, "a finite number >= 0"),
    "task.length": (lambda v: v >= 1, "an integer >= 1"),
    "task.x0": FINITE,
    "task.goal": (lambda v: 0 < v < 1, "a number in (0, 1) (the goal of a sigmoid)"),
    "model.embedding": (lambda v: v >= 1, "an integer >= 1"),
    "model.hidden": (lambda v: v >= 1, "an integer >= 1"),
    "model.layers": (lambda v: v >= 1, "an integer >= 1"),
    "model.depth": (lambda v: v >= 0, "an integer >= 0"),
    "model.width": (lambda v: v >= 1, "an integer >= 1"),
    "model.init_gain": (_positive, "a number > 0"),
    "model.w0": FINITE,
    "model.b0": FINITE,
    "logger.project": (_wandb_project, "a W&B project name: 1 to 128 printable characters, none of / \\ # ? % :"),
}

# keys for which every value of the schema's type works, and why; the schemas' Enum and bool keys need no entry
ANY_VALUE_KEYS = {
    "logger.entity",  # null = the W&B account's default; W&B checks the name itself, and only when it syncs
}


def _shown(value) -> str:
    """A value as a message shows it: strings quoted, so an empty or multi-line one stays visible on one line."""
    return repr(value) if isinstance(value, str) else str(value)


def _read_text(path: Path) -> str | None:
    """The text of a regular, readable, non-blank UTF-8 file; None if there is no such path, else ValueError why not."""
    try:
        if not path.exists():
            return None
        if not path.is_file():
            raise ValueError(f"{path.name} is not a regular file")
        text = path.read_bytes().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")  # newlines as read_text
    except PermissionError:
        raise ValueError(f"{path.name} is not readable (permission denied)") from None
    except OSError as exc:
        raise ValueError(f"{path.name} cannot be read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path.name} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})"
                         ) from None
    if not text.strip():
        raise ValueError(f"{path.name} is empty" + (" (whitespace only)" if text else ""))
    return text


def read_corpus(data_dir: str) -> dict[str, str]:
    """The texts of DIR/train.txt, valid.txt and test.txt (if there) by split; ConfigError for a file that won't do."""
    folder = Path(data_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"task.data_dir={data_dir}: no such folder (it needs train.txt and valid.txt)")
    splits = {}
    for split in ("train", "valid", "test"):
        try:
            text = _read_text(folder / f"{split}.txt")
        except ValueError as exc:
            raise ConfigError(f"task.data_dir={data_dir}: {exc}") from None
        if text is not None:
            splits[split] = text
        elif split != "test":
            raise ConfigError(f"task.data_dir={data_dir}: no {split}.txt in it (needs train.txt and valid.txt)")
    return splits


def _token_count(text: str, level: Level) -> int:
    """len(gradclip.data.tokenize(text, level)), without importing torch."""
    return len(text) if level == Level.char else len(text.split()) + len(text.splitlines())


def _cuda_requested(cfg: DictConfig) -> bool:
    import torch

    return cfg.device == Device.cuda or (cfg.device == Device.auto and torch.cuda.is_available())


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError for the first value that cannot work, before any file is written or any step is run."""
    clip, task = cfg.clip, cfg.task
    if clip.method in THRESHOLD_METHODS and not (clip.threshold is not None and clip.threshold > 0):
        raise ConfigError(f"clip.threshold={clip.threshold}: clip={clip.name} needs a threshold > 0 (inf = never clip)")

    for key, (ok, allowed) in RANGE_CHECKS.items():
        value = OmegaConf.select(cfg, key, default=None)
        if value is not None and not ok(value):
            raise ConfigError(f"{key}={_shown(value)}: must be {allowed}")

    for group in ("task", "model", "optim", "logger"):
        node = cfg[group]
        schema = OmegaConf.get_type(node)
        if node.name not in SCHEMA_NAMES[schema]:
            raise ConfigError(f"{group}.name={_shown(node.name)}: must be {' or '.join(SCHEMA_NAMES[schema])} with "
                              f"the keys of {schema.__name__} (another {group} is chosen with {group}=OPTION)")

    model = cfg.model.name
    kind = {"cliff": "cliff", "mlp": "vector"}.get(model, "sequence")
    if task.name not in TASK_KINDS[kind]:
        raise ConfigError(f"model={model}: needs a {kind} task, one of {sorted(TASK_KINDS[kind])} "
                          f"(got task={task.name})")

    if task.target is not None and task.name == "charlm":
        word = task.level == Level.word
        if not task.target > (1 if word else 0):
            raise ConfigError(f"task.target={task.target}: must be {'a perplexity > 1' if word else 'bits/char > 0'} "
                              f"at task.level={task.level.value} (lower is never reached)")
    if task.target is not None and task.name in ERROR_RATE_TASKS and task.target > 1:
        raise ConfigError(f"task.target={task.target}: must be in [0, 1] (task={task.name}'s target is an error rate)")

    if task.name == "charlm" and task.data_dir is not None:
        splits = read_corpus(task.data_dir)
        needs = {"train": (task.bptt + 2, f"for task.bptt={task.bptt}"), "valid": (2, "(a token and the next one)")}
        for split, (least, why) in needs.items():
            count = _token_count(splits[split], task.level)
            if count < least:
                raise ConfigError(f"task.data_dir={task.data_dir}: {split}.txt has {count} tokens at "
                                  f"task.level={task.level.value}; it needs at least {least} {why}")

    if cfg.precision == Precision.fp16 and model != "mlp" and not _cuda_requested(cfg):
        raise ConfigError(f"precision=fp16: model={model} has no float16 kernels on CPU (oneDNN); use precision=bf16, "
                          "device=cuda, or an MLP")

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
