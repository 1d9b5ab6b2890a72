"""Every config key has a decided rule; a value that cannot work, or a corpus that cannot be read, is refused on one
line before any work."""

import dataclasses
import re
import typing
from enum import Enum
from pathlib import Path

import pytest
from hydra.utils import get_class
from omegaconf import MISSING, OmegaConf

from gradclip.component import settings, typed
from gradclip.config import OPTIM_RULES, Config, ConfigError, validate
from gradclip.tasks.charlm import load_corpus

from conftest import ROOT, run_cli

GROUPS = ("task", "model", "clip", "optim", "schedule", "logger")
OPTIONS = [f"{group}={path.relative_to(ROOT / 'conf' / group).with_suffix('')}" for group in GROUPS + ("setup",)
           for path in sorted((ROOT / "conf" / group).rglob("*.yaml"))]
EXPERIMENTS = [f"+experiment={path.stem}" for path in sorted((ROOT / "conf" / "experiment").glob("*.yaml"))]
COMPONENTS = ("task", "model", "clip", "schedule", "logger")  # optim: torch's own class, checked by OPTIM_RULES


def component_classes(make_cfg) -> dict[str, type]:
    """group.option -> the class its yaml names, for every option of every component group."""
    return {option: get_class(make_cfg(option)[option.split("=")[0]]._target_)
            for option in OPTIONS if option.split("=")[0] in COMPONENTS}


def decided(field: dataclasses.Field, schema: type) -> bool:
    kind = typing.get_type_hints(schema)[field.name]
    return "rule" in field.metadata or "any" in field.metadata or kind is bool or (
        isinstance(kind, type) and issubclass(kind, Enum))


def test_every_key_has_a_decided_rule(make_cfg):
    """A field fails here until it gets a rule(), an any_value() or an Enum / bool type; an optimizer key until it
    has an OPTIM_RULES row or is a bool."""
    undecided = {}
    schemas = [(Config, "")] + [(cls, f"{o.split('=')[0]}.") for o, cls in component_classes(make_cfg).items()]
    for schema, prefix in schemas:
        for field in dataclasses.fields(schema):
            if field.name not in COMPONENTS + ("optim",) and not decided(field, schema):
                undecided.setdefault(prefix + field.name, schema.__name__)
    for option in [o for o in OPTIONS if o.startswith("optim=")] + EXPERIMENTS:
        for key, value in make_cfg(option).optim.items():
            if key != "_target_" and not isinstance(value, bool) and key not in OPTIM_RULES:
                undecided.setdefault(f"optim.{key}", option)
    assert not undecided, f"keys without a validation rule (key: where): {undecided}"


def test_defaults_live_in_the_yaml_alone(make_cfg):
    """Every schema field is MISSING (no default in Python) and every option's yaml gives every field of its class."""
    for schema in {Config, *component_classes(make_cfg).values()}:
        with_default = [f.name for f in dataclasses.fields(schema) if f.default is not MISSING
                        or f.default_factory is not dataclasses.MISSING]
        assert not with_default, f"{schema.__name__} has defaults for {with_default}: give them in its yaml only"
    for option, cls in component_classes(make_cfg).items():
        given = set(make_cfg(option)[option.split("=")[0]]) - {"_target_"}
        assert given == {f.name for f in dataclasses.fields(cls)}, option


def plain(node) -> dict:
    return {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if k != "_target_"}


GOOD = [[option] for option in OPTIONS if option.startswith(("setup=", "clip=", "optim=", "logger="))] + [
    [experiment] for experiment in EXPERIMENTS] + [
    ["task=adding", "model=rnn"], ["task=temporal_order", "model=lstm", "model.cell=gru"],
    ["clip=norm", "clip.threshold=inf"], ["clip=norm", "clip.threshold=5"], ["task.target=null"],
    ["seed=4294967295"], ["task.level=word", "task.target=1.5"], ["task=digits", "model=mlp", "task.target=0"],
    ["diverge_factor=inf"], ["setup=cliff", "task.goal=0.01", "task.x0=-3", "model.w0=-100"],
    ["logger=wandb", "logger.entity=someone"], ["optim=adam", "optim.betas=[0.5,0.9]"],
    ["model=gpt", "model.qk_norm=true", "model.z_loss=1e-4", "model.bias=true"], ["schedule=cosine"],
    ["setup=digits_mlp", "optim=adamw", "schedule=cosine", "schedule.warmup_iters=0", "schedule.min_lr_ratio=1"],
    ["setup=charlm_lstm", "schedule=cosine", "schedule.warmup_iters=2000"],
]


@pytest.mark.parametrize("overrides", GOOD, ids=" ".join)
def test_shipped_options_and_edge_values_pass_as_given(make_cfg, overrides):
    """Each passes, and validation returns the components with exactly the composed values, overrides included."""
    cfg = make_cfg(*overrides)
    found = validate(cfg)
    for group in COMPONENTS:
        component = typed(group, cfg[group]) if group == "schedule" else getattr(found, group)
        assert type(component) is get_class(cfg[group]._target_)
        assert settings(component) == plain(cfg[group]), group


BAD = [  # (overrides, start of the one-line message)
    (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
    (["seed=4294967296"], "seed=4294967296: must be an integer in [0, 4294967295]"),
    (["steps=0"], "steps=0: must be an integer >= 1"),
    (["eval_every=0"], "eval_every=0: must be an integer >= 1"),
    (["threads=-1"], "threads=-1: must be an integer >= 0"),
    (["diverge_factor=1"], "diverge_factor=1.0: must be a number > 1"),
    (["max_nonfinite=0"], "max_nonfinite=0: must be an integer >= 1"),
    (["spike_factor=nan"], "spike_factor=nan: must be a number > 1"),
    (["spike_window=0"], "spike_window=0: must be an integer >= 1"),
    (["diag_every=0"], "diag_every=0: must be an integer >= 1"),
    (["smoothness_every=-1"], "smoothness_every=-1: must be an integer >= 0"),
    (["checkpoint_every=-1"], "checkpoint_every=-1: must be an integer >= 0"),
    (["setup_name="], "setup_name='': must be a non-empty printable label"),
    (["setup_name=' '"], "setup_name=' ': must be a non-empty printable label"),
    (["optim.lr=inf"], "optim.lr=inf: must be a number > 0"),
    (["optim.lr_scale=0"], "optim.lr_scale=0: must be a number > 0"),
    (["optim.momentum=1"], "optim.momentum=1: must be a number in [0, 1)"),
    (["optim.weight_decay=inf"], "optim.weight_decay=inf: must be a finite number >= 0"),
    (["optim=adam", "optim.betas=[1,0.5]"], "optim.betas=[1, 0.5]: must be two numbers in [0, 1)"),
    (["optim=adam", "optim.betas=[0.9]"], "optim.betas=[0.9]: must be two numbers in [0, 1)"),
    (["+optim.dampening=1"], "optim.dampening=1: must be a number in [0, 1)"),
    (["+optim.nesterovv=0.9"], "optim.nesterovv=0.9: no rule for this key"),
    (["optim.lr=fast"], "optim.lr='fast': must be a number > 0"),
    (["optim._target_=SGD"], "optim._target_='SGD': an optimizer yaml names a torch.optim class"),
    (["optim=adam", "optim.eps=0"], "optim.eps=0: must be a number > 0"),
    (["optim=spam", "optim.spike_threshold=0"], "optim.spike_threshold=0: must be a number > 0"),
    (["optim=spam", "optim.reset_interval=1"], "optim.reset_interval=1: must be an integer >= 2"),
    (["optim=spam", "optim.reset_interval=2.5"], "optim.reset_interval=2.5: must be an integer >= 2"),
    (["optim=spam", "optim.warmup_steps=-1"], "optim.warmup_steps=-1: must be an integer >= 0"),
    (["optim=spam", "optim.spike_clip_delay=1"], "optim.spike_clip_delay=1: must be an integer >= 2"),
    (["optim=stableadamw", "optim.eps=-1e-6"], "optim.eps=-1e-06: must be a number > 0"),
    (["optim=stableadamw", "optim.betas=[0.9,1]"], "optim.betas=[0.9, 1]: must be two numbers in [0, 1)"),
    (["clip.name="], "clip.name='': must be a non-empty printable label"),
    (["clip=norm", "clip.threshold=nan"], "clip.threshold=nan: must be a number > 0 (inf = never clip)"),
    (["clip=value", "clip.threshold=-1"], "clip.threshold=-1.0: must be a number > 0"),
    (["clip=value", "clip.threshold=null"], "clip.threshold: Incompatible value 'None' for field of type 'float'"),
    (["clip=per_tensor", "clip.threshold=0"], "clip.threshold=0.0: must be a number > 0"),
    (["clip=random", "clip.threshold=one"], "clip.threshold: Value 'one' of type 'str' could not be converted to Float"),
    (["clip=autoclip", "clip.percentile=0"], "clip.percentile=0.0: must be a number in (0, 100]"),
    (["clip=agc", "clip.clip_factor=0"], "clip.clip_factor=0.0: must be a number > 0"),
    (["clip=agc", "clip.eps=-1"], "clip.eps=-1.0: must be a number > 0"),
    (["clip=zclip", "clip.alpha=1"], "clip.alpha=1.0: must be a number in (0, 1)"),
    (["clip=zclip", "clip.z_thresh=inf"], "clip.z_thresh=inf: must be a number > 0"),
    (["clip=zclip", "clip.warmup=0"], "clip.warmup=0: must be an integer >= 1"),
    (["clip=zclip", "clip.max_grad_norm=0"], "clip.max_grad_norm=0.0: must be a number > 0, or null for no cap"),
    (["clip=zclip", "clip.clip_factor=-1"], "clip.clip_factor=-1.0: must be a number > 0"),
    (["clip=adagc", "clip.warmup_steps=0"], "clip.warmup_steps=0: must be an integer >= 1"),
    (["clip=adagc", "clip.warmup_max_norm=0"], "clip.warmup_max_norm=0.0: must be a number > 0"),
    (["clip=adagc", "clip.lambda_rel=-1"], "clip.lambda_rel=-1.0: must be a number > 0"),
    (["clip=adagc", "clip.beta=1"], "clip.beta=1.0: must be a number in [0, 1)"),
    (["clip=skip_step", "clip.window=1"], "clip.window=1: must be an integer >= 2"),
    (["clip=skip_step", "clip.min_values=2"], "clip.min_values=2: must be an integer >= 3"),
    (["clip=skip_step", "clip.min_values=200"], "clip.min_values=200: must be <= clip.window + 1 = 129 (the window"),
    (["clip=skip_step", "clip.sigma=0"], "clip.sigma=0.0: must be a number > 0"),
    (["clip=skip_step", "clip.max_norm=0"], "clip.max_norm=0.0: must be a number > 0, or null for no clipping"),
    (["optim=skip_large_updates", "optim.max_squared_norm=0"], "optim.max_squared_norm=0: must be a number > 0"),
    (["optim=skip_large_updates", "optim.inner=AdamW"], "optim.inner='AdamW': must be the class path of the optimizer "
                                                        "wrapped, e.g. torch.optim.AdamW"),
    (["task.data_dir="], "task.data_dir='': must be a folder path"),
    (["task.bptt=1"], "task.bptt=1: must be an integer >= 2"),
    (["task.batch_size=0"], "task.batch_size=0: must be an integer >= 1"),
    (["task.eval_tokens=1"], "task.eval_tokens=1: must be an integer >= 2"),
    (["task.target=nan"], "task.target=nan: must be a finite number >= 0, or null"),
    (["task.target=0"], "task.target=0.0: must be bits/char > 0 at task.level=char"),
    (["task.level=word", "task.target=1"], "task.target=1.0: must be a perplexity > 1 at task.level=word"),
    (["task=adding", "model=rnn", "task.seq_len=5"], "task.seq_len=5: must be an integer >= 10"),
    (["task=adding", "model=rnn", "task.eval_size=0"], "task.eval_size=0: must be an integer >= 1"),
    (["task=adding", "model=rnn", "task.data_seed=-1"], "task.data_seed=-1: must be an integer in [0, 4294967295]"),
    (["task=temporal_order", "model=rnn", "task.target=5"], "task.target=5.0: must be in [0, 1]"),
    (["task=digits", "model=mlp", "task.held_out_fraction=1"], "task.held_out_fraction=1.0: must be a number in (0, 1)"),
    (["task=regression", "model=mlp", "task.samples=5"], "task.samples=5: must be an integer >= 10"),
    (["task=regression", "model=mlp", "task.features=0"], "task.features=0: must be an integer >= 1"),
    (["task=regression", "model=mlp", "task.noise=inf"], "task.noise=inf: must be a finite number >= 0"),
    (["task=regression", "model=mlp", "task.target=-1"], "task.target=-1.0: must be a finite number >= 0"),
    (["setup=cliff", "task.length=0"], "task.length=0: must be an integer >= 1"),
    (["setup=cliff", "task.x0=inf"], "task.x0=inf: must be a finite number"),
    (["setup=cliff", "task.goal=1"], "task.goal=1.0: must be a number in (0, 1)"),
    (["setup=cliff", "model.w0=nan"], "model.w0=nan: must be a finite number"),
    (["setup=cliff", "model.b0=-inf"], "model.b0=-inf: must be a finite number"),
    (["model.embedding=0"], "model.embedding=0: must be an integer >= 1"),
    (["model.hidden=0"], "model.hidden=0: must be an integer >= 1"),
    (["model.layers=0"], "model.layers=0: must be an integer >= 1"),
    (["task=digits", "model=mlp", "model.depth=-1"], "model.depth=-1: must be an integer >= 0"),
    (["task=digits", "model=mlp", "model.width=0"], "model.width=0: must be an integer >= 1"),
    (["task=digits", "model=mlp", "model.init_gain=0"], "model.init_gain=0.0: must be a number > 0"),
    (["logger=wandb", "logger.project=a/b"], "logger.project='a/b': must be a W&B project name"),
    (["logger=wandb", "logger.project="], "logger.project='': must be a W&B project name"),
    (["logger=wandb", f"logger.project={'x' * 129}"], f"logger.project='{'x' * 129}': must be a W&B project name"),
    (["task=digits"], "model=lstm: needs a sequence task (got task=digits, a vector task)"),
    (["model=mlp"], "model=mlp: needs a vector task (got task=charlm, a sequence task)"),
    (["setup=cliff", "model=rnn"], "model=rnn: needs a sequence task (got task=cliff, a cliff task)"),
    (["model._target_=gradclip.models.mlp.MLP"], "model.cell: Key 'cell' not in 'MLP'"),
    (["clip._target_=gradclip.nowhere.Clip"], "clip._target_='gradclip.nowhere.Clip': cannot be imported"),
    (["clip._target_=collections.OrderedDict"], "clip._target_='collections.OrderedDict': must name a gradclip component"),
    (["model=gpt", "model.heads=0"], "model.heads=0: must be an integer >= 1"),
    (["model=gpt", "model.width=100", "model.heads=3"], "model.width=100: must be a multiple of model.heads=3"),
    (["model=gpt", "model.dropout=1"], "model.dropout=1.0: must be a number in [0, 1)"),
    (["model=gpt", "model.z_loss=-1e-4"], "model.z_loss=-0.0001: must be a finite number >= 0 (0 = off)"),
    (["model=gpt", "model.init_std=0"], "model.init_std=0.0: must be a number > 0"),
    (["model=gpt", "model.qk_norm=maybe"], "model.qk_norm: Value 'maybe' is not a valid bool"),
    (["model=gpt", "task=adding"], "model=gpt: needs a language-model task with token inputs (task=charlm), got "
                                   "task=adding"),
    (["schedule=cosine", "schedule.warmup_iters=-1"], "schedule.warmup_iters=-1: must be an integer >= 0"),
    (["schedule=cosine", "schedule.lr_decay_iters=0"], "schedule.lr_decay_iters=0: must be an integer >= 1"),
    (["schedule=cosine", "schedule.min_lr_ratio=1.5"], "schedule.min_lr_ratio=1.5: must be a number in [0, 1]"),
    (["schedule=cosine", "schedule.lr_decay_iters=${nope}"], "schedule.lr_decay_iters: Interpolation key 'nope' not"),
    (["optim=adamw", "optim.weight_decay=-0.1"], "optim.weight_decay=-0.1: must be a finite number >= 0"),
    (["model.cell=transformer"], "model.cell: Invalid value 'transformer', expected one of [lstm, gru, rnn]"),
    (["logger=wandb", "logger.mode=later"], "logger.mode: Invalid value 'later', expected one of [offline, online"),
]


@pytest.mark.parametrize("overrides,message", BAD, ids=[" ".join(overrides) for overrides, _ in BAD])
def test_bad_value_is_refused_on_one_line(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as refused:
        validate(make_cfg(*overrides))
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)


def test_every_rule_is_exercised(make_cfg):
    ruled = {f.name for f in dataclasses.fields(Config) if "rule" in f.metadata} | {f"optim.{k}" for k in OPTIM_RULES}
    for option, cls in component_classes(make_cfg).items():
        ruled |= {f"{option.split('=')[0]}.{f.name}" for f in dataclasses.fields(cls) if "rule" in f.metadata}
    assert ruled <= {re.match(r"[\w.]+", message).group() for _, message in BAD}


TRAIN, VALID = "the cat sat on the mat\n" * 5, "the dog sat\n"
CORPORA = [  # (files written over the good train.txt / valid.txt; None = a folder of that name; problem after "DIR: ")
    ({"train.txt": ""}, "train.txt is empty"),
    ({"valid.txt": " \n\t\n"}, "valid.txt is empty (whitespace only)"),
    ({"train.txt": b"caf\xe9 au lait"}, "train.txt is not UTF-8 text (byte 0xe9 at offset 3)"),
    ({"valid.txt": None}, "valid.txt is not a regular file"),
    ({"test.txt": b"\x00\xff"}, "test.txt is not UTF-8 text (byte 0xff at offset 1)"),
    ({"test.txt": ""}, "test.txt is empty"),
]


def write_corpus(folder: Path, files: dict) -> Path:
    folder.mkdir()
    for name, content in {"train.txt": TRAIN, "valid.txt": VALID, **files}.items():
        if content is None:
            (folder / name).mkdir()
        elif isinstance(content, bytes):
            (folder / name).write_bytes(content)
        else:
            (folder / name).write_text(content)
    return folder


@pytest.mark.parametrize("files,problem", CORPORA, ids=[problem for _, problem in CORPORA])
def test_unusable_corpus_is_refused_by_validate_and_load_corpus(make_cfg, tmp_path, files, problem):
    folder = write_corpus(tmp_path / "corpus", files)
    for read in (lambda: validate(make_cfg(f"task.data_dir={folder}")), lambda: load_corpus(str(folder))):
        with pytest.raises(ConfigError) as refused:
            read()
        assert str(refused.value) == f"task.data_dir={folder}: {problem}"


def test_unreadable_corpus_is_refused(make_cfg, tmp_path, monkeypatch):
    """Tests run as root, who can read a chmod 000 file: the PermissionError is simulated."""
    folder = write_corpus(tmp_path / "corpus", {})
    read_bytes = Path.read_bytes

    def denied(path):
        if path.name == "valid.txt":
            raise PermissionError(13, "Permission denied", str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(ConfigError, match=re.escape(f"={folder}: valid.txt is not readable (permission denied)")):
        validate(make_cfg(f"task.data_dir={folder}"))


@pytest.mark.parametrize("overrides,problem", [
    (["task.bptt=200"], "train.txt has 115 tokens at task.level=char; it needs at least 202 for task.bptt=200"),
    (["task.level=word", "task.bptt=40"], "train.txt has 35 tokens at task.level=word; it needs at least 42 for task.bptt=40"),
])
def test_corpus_too_short_for_bptt(make_cfg, tmp_path, overrides, problem):
    folder = write_corpus(tmp_path / "corpus", {})
    with pytest.raises(ConfigError) as refused:
        validate(make_cfg(f"task.data_dir={folder}", *overrides))
    assert str(refused.value) == f"task.data_dir={folder}: {problem}"


def test_one_character_valid_txt_is_too_short(make_cfg, tmp_path):
    folder = write_corpus(tmp_path / "corpus", {"valid.txt": "x"})
    with pytest.raises(ConfigError, match="valid.txt has 1 tokens at task.level=char; it needs at least 2"):
        validate(make_cfg(f"task.data_dir={folder}"))


def test_good_corpus_reads_as_text_mode_would(make_cfg, tmp_path):
    folder = write_corpus(tmp_path / "corpus", {"train.txt": TRAIN.replace("\n", "\r\n"), "test.txt": "a\rb"})
    validate(make_cfg(f"task.data_dir={folder}"))
    splits, _ = load_corpus(str(folder))
    assert splits == {"train": TRAIN, "valid": VALID, "test": "a\nb"}


@pytest.mark.parametrize("args,message", [
    (["setup=cliff", "task.goal=1"], "error: task.goal=1.0: must be a number in (0, 1)"),
    (["-m", "setup=cliff", "model.w0=5,nan"], "error: model.w0=nan: must be a finite number"),
    (["task.data_dir=../corpus"], "error: task.data_dir=../corpus: train.txt is not UTF-8 text (byte 0xe9 at offset 3)"),
])
def test_cli_refuses_on_one_line_and_creates_nothing(tmp_path, args, message):
    write_corpus(tmp_path / "corpus", {"train.txt": b"caf\xe9"})
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    result = run_cli(*args, "logger=none", cwd=cwd)
    assert result.returncode == 2
    assert result.stderr.strip().startswith(message) and len(result.stderr.strip().splitlines()) == 1
    assert list(cwd.iterdir()) == []
