"""Weights & Biases logging, offline by default. The local files in the job directory stay the source of truth.

W&B trouble never stops a job: ``logger.mode=online`` without an API key or without a reachable server logs
offline instead, and an exception from wandb is reported on stderr and otherwise ignored. Either way one warning
line per process; later jobs in the same process fall back silently.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import threading
from dataclasses import dataclass
from enum import Enum
from typing import Optional
from urllib.parse import urlsplit

from omegaconf import MISSING

from gradclip.component import Component, any_value, label, rule

CONNECT_TIMEOUT_S = 2.0  # pre-flight TCP connection to the W&B server, name lookup included
INIT_TIMEOUT_S = 20.0  # wandb.init in online mode (wandb's default is 90 s)
_warned = False


def _warn(message: str) -> None:
    """Print one warning line on stderr, the first time in this process only."""
    global _warned
    if not _warned:
        _warned = True
        print(f"warning: {message}", file=sys.stderr, flush=True)


def _describe(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def _guarded(what: str, then: str, call, *args, **kwargs):
    """``call(*args, **kwargs)``; if it raises an Exception, warn (once) and return None."""
    try:
        return call(*args, **kwargs)
    except Exception as error:
        _warn(f"W&B {what} failed ({_describe(error)}); {then}")
        return None


def _reachable(url: str) -> bool:
    """Whether the server at ``url`` accepts a TCP connection within CONNECT_TIMEOUT_S.

    The connection is tried in a daemon thread because the timeout of ``create_connection`` does not cover the
    name lookup.
    """
    parts = urlsplit(url)
    address = (parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
    connected = []

    def connect():
        try:
            socket.create_connection(address, timeout=CONNECT_TIMEOUT_S).close()
            connected.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(CONNECT_TIMEOUT_S)
    return bool(connected)


def _online_problem() -> str | None:
    """Why ``mode=online`` cannot work here (no usable API key, server unreachable), or None.

    Uses wandb's own lookups (server from WANDB_BASE_URL or the settings files; credentials from WANDB_API_KEY,
    an identity token file, .netrc or the settings files) without contacting the server beyond one TCP connect.
    """
    from wandb.sdk import wandb_setup
    from wandb.sdk.lib import wbauth

    host = wandb_setup.singleton().settings.base_url
    try:
        auth = wbauth.authenticate_session(host=host, source="gradclip", prompt=False, update_session=False)
    except Exception as error:
        return f"unusable API key ({_describe(error)})"
    if auth is None:
        return "no API key (set WANDB_API_KEY or run `wandb login`)"
    if not _reachable(host):
        return f"cannot connect to {host}"
    return None


class Mode(Enum):
    offline = "offline"
    online = "online"
    disabled = "disabled"


def _wandb_project(name: str) -> bool:
    return label(name) and len(name) <= 128 and not set(name) & set("/\\#?%:")  # W&B's own rule for project names


class Logger(Component):
    """Base of the loggers (conf/logger/)."""


@dataclass
class NoLogger(Logger):
    """No W&B at all: the job folder's own files only."""


@dataclass
class WandB(Logger):
    mode: Mode = MISSING
    project: str = rule(_wandb_project, "a W&B project name: 1 to 128 printable characters, none of / \\ # ? % :")
    entity: Optional[str] = any_value("null = the account's default; W&B checks the name itself, when it syncs")


GRADIENT_KEYS = {"grad_norm", "grad_norm_clipped", "clip_scale", "clipped", "skipped", "update_norm", "cosine",
                 "smoothness"}


def section(key: str) -> str:
    """W&B's panel sections: val/<metric> for held-out scores, grad/<...> for the gradient and clipping, train/ else."""
    if key.startswith("val_"):
        return f"val/{key[4:]}"
    return f"grad/{key}" if key in GRADIENT_KEYS else f"train/{key}"


class RunLogger:
    """One W&B run per job, or nothing with ``logger=none``. ``finish()`` must be called at the end of every job.

    Never raises (except KeyboardInterrupt and SystemExit); without a working W&B run, ``log``/``finish`` do nothing.
    """

    def __init__(self, cfg: Logger, job_dir: str, group: str, name: str, config: dict, tags: tuple = ()):
        self.run = None
        if not isinstance(cfg, WandB):
            return
        # The environment must be set before wandb.init; mode= alone is not enough for every code path.
        os.environ["WANDB_MODE"] = mode = cfg.mode.value
        os.environ["WANDB_ERROR_REPORTING"] = "false"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        offline = f"logging offline to {os.path.join(job_dir, 'wandb')} instead"
        settings = None
        if mode == "online":
            problem = _guarded("online check", "trying online anyway", _online_problem)
            if problem:
                _warn(f"W&B online mode: {problem}; {offline}")
                mode = os.environ["WANDB_MODE"] = "offline"
            else:
                settings = wandb.Settings(init_timeout=INIT_TIMEOUT_S)
        init = dict(project=cfg.project, entity=cfg.entity, group=group, name=name, dir=job_dir, config=config,
                    tags=list(tags), reinit="create_new")  # runs of a population log side by side
        self.run = _guarded("init", offline if mode == "online" else "continuing without W&B",
                            wandb.init, mode=mode, settings=settings, **init)
        if self.run is None and mode == "online":
            os.environ["WANDB_MODE"] = "offline"
            self.run = _guarded("offline init", "continuing without W&B", wandb.init, mode="offline", **init)

    def log(self, row: dict, step: int) -> None:
        if self.run is not None:
            row = {section(k): v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}
            _guarded("log", "continuing without it", self.run.log, row, step=step)

    def finish(self, summary: dict) -> None:
        if self.run is not None:
            run, self.run = self.run, None
            summary = {k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))}
            _guarded("summary", "continuing without it", run.summary.update, summary)
            _guarded("finish", "continuing without it", run.finish)
