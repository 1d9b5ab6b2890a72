"""What a component is: a task, a model, a clipping method or a logger (optimizers are torch's own, from their yaml).

A component is a dataclass in its own module. Its group option's yaml names it with ``_target_`` (Hydra's
convention) and gives every field its value: defaults live in the yaml alone, every field here is ``MISSING`` (a
test checks it). A field says which
values it takes with ``rule(test, allowed)``; Enum and bool fields need none. ``check()`` adds the rules that involve
several fields. ``typed`` turns a composed yaml node into the component: a wrong type, a missing or unknown key or a
value out of range is a one-line ``ConfigError``. Component modules import torch only inside the methods that
train, so that checking a config stays fast (importing torch takes ~2 s).
"""

from __future__ import annotations

import math
from dataclasses import field, fields
from enum import Enum
from typing import Any, Callable

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A config value that cannot work; the message is one line naming the key and what is allowed."""


def rule(test: Callable[[Any], bool], allowed: str) -> Any:
    """A field whose values pass ``test`` (``allowed`` says which, in words); MISSING: its yaml gives the value."""
    return field(default=MISSING, metadata={"rule": (test, allowed)})


def any_value(why: str) -> Any:
    """A field for which every value of its type works, and ``why``."""
    return field(default=MISSING, metadata={"any": why})


def positive(x) -> bool:
    return x is not None and math.isfinite(x) and x > 0


def non_negative(x) -> bool:
    return math.isfinite(x) and x >= 0


def finite(x) -> bool:
    return math.isfinite(x)


SEED = (lambda v: 0 <= v < 2**32, "an integer in [0, 4294967295] (the seeds numpy and scikit-learn accept)")


def label(text: str) -> bool:
    return text.strip() != "" and text.isprintable()


def shown(value) -> str:
    """A value as a message shows it: strings quoted, so an empty or multi-line one stays visible on one line."""
    return repr(value) if isinstance(value, str) else str(value)


def check_value(key: str, value, test: Callable[[Any], bool], allowed: str) -> None:
    try:
        ok = test(value)
    except (TypeError, ValueError):  # a value of another type than the rule expects
        ok = False
    if not ok:
        raise ConfigError(f"{key}={shown(value)}: must be {allowed}")


def check_fields(obj, schema: type, prefix: str = "") -> None:
    """Check every field of ``obj`` (a dataclass instance or a typed DictConfig) against its rule; None is left to
    the type (a field that may be null says so with Optional)."""
    for f in fields(schema):
        value = getattr(obj, f.name)
        if "rule" in f.metadata and value is not None:
            check_value(f"{prefix}{f.name}", value, *f.metadata["rule"])


class Component:
    """Base of every component: a dataclass of settings, each field with its rule."""

    def check(self) -> None:
        """Rules that involve several fields: raise ConfigError."""


def component_class(group: str, node: DictConfig) -> type:
    """The class a group option's ``_target_`` names (imported, and so checked, here)."""
    from hydra.utils import get_class

    target = node.get("_target_")
    try:
        cls = get_class(target) if isinstance(target, str) else None
    except Exception as exc:
        raise ConfigError(f"{group}._target_={shown(target)}: cannot be imported ({str(exc).splitlines()[0]})"
                          ) from None
    if cls is None or not issubclass(cls, Component):
        raise ConfigError(f"{group}._target_={shown(target)}: must name a gradclip component class (a dataclass "
                          "subclass of gradclip.component.Component; docs/extending.md)")
    return cls


def typed(group: str, node: DictConfig) -> Component:
    """The component a composed group node describes, its types, fields and rules checked."""
    cls = component_class(group, node)
    try:  # interpolations (e.g. lr_decay_iters: ${steps}) resolved in the whole config
        given = OmegaConf.to_container(node, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as exc:
        key = exc.full_key if str(exc.full_key).startswith(f"{group}.") else f"{group}.{exc.full_key}"
        raise ConfigError(f"{key}: {str(exc.msg).splitlines()[0]}") from None
    values = {k: v for k, v in given.items() if k != "_target_"}
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), values))
    except OmegaConfBaseException as exc:
        raise ConfigError(f"{group}.{exc.full_key}: {str(exc.msg).splitlines()[0]}") from None
    check_fields(obj, cls, f"{group}.")
    obj.check()
    return obj


def settings(obj: Component) -> dict:
    """A component's field values as plain JSON values (Enums by value)."""
    return {f.name: getattr(obj, f.name).value if isinstance(getattr(obj, f.name), Enum) else getattr(obj, f.name)
            for f in fields(obj)}


def component_name(cls: type) -> str:
    """A component's name in summaries and reports: its module's name (gradclip.clipping.norm -> norm)."""
    return cls.__module__.rpartition(".")[2]
