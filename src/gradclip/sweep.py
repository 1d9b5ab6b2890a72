"""Resuming a sweep: which jobs are finished, and whether a folder's results may be mixed with this code's; the
jobs below a folder and which of them failed (light imports: the exit status needs no plotting library).

A job is finished when its ``summary.json`` (written last, atomically) is valid: it parses, it was written by this
code version (or one recorded as computing the same bytes: ``equivalent_versions.yaml``, ``gradclip.equivalence``)
and file schema, its status is ``ok`` or ``diverged``, and its ``metrics.csv`` is there. A rerun of the
same sweep command (same ``hydra.sweep.dir``) skips finished jobs, resumes unfinished ones from their checkpoint and
reruns failed ones. A folder holding results of other code, another schema or another config is refused.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import yaml

from gradclip.component import ConfigError

SCHEMA_VERSION = 4  # layout of the job files (config.yaml, metrics.csv, summary.json); bump when it changes
IGNORED_KEYS = ("logger", "report")  # config keys that do not change a run's numbers


PRESENTATION = {"report", "stats.py", "screenshots.py", "callbacks.py", "logger.py", "files.py", "help.py",
                "equivalence.py"}
EQUIVALENT = Path(__file__).with_name("equivalent_versions.yaml")


@functools.cache
def code_version(package: Path = Path(__file__).parent) -> str:
    """The gradclip version and a hash of the source files that decide a run's numbers (not those that only report
    them, ``PRESENTATION``): results of other training code are never mixed in, and editing a report forces no
    retraining."""
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] not in PRESENTATION:
            digest.update(str(path.relative_to(package)).encode() + b"\0" + path.read_bytes())
    return f"{version('gradclip')}+{digest.hexdigest()[:12]}"


@dataclass
class Job:
    """One run of a sweep: its config, its folder, how the report and W&B name it, and the torch threads its
    launcher gives it when the config says threads=0 (auto; 0 here = torch's default, every core)."""

    cfg: object  # the job's DictConfig, without hydra's node
    job_dir: Path
    group: str
    name: str
    overrides: list[str]
    auto_threads: int = 0


NAME_SKIPS = ("logger", "threads", "report", "hydra", "+experiment", "task.split", "eval_every")  # not the arm


def job_labels(folder: Path, override_dirname: str) -> tuple[str, str]:
    """A job's W&B group, one per sweep (multirun/<date>/<time> -> <date>_<time>), and its run name: its overrides
    without those that do not tell runs apart (logger, threads, report...), at most 60 characters."""
    kept = [o for o in override_dirname.split(",") if o and not o.split("=")[0].startswith(NAME_SKIPS)]
    name = ",".join(kept) or "defaults"
    return "_".join(Path(folder).parts[-2:]), name if len(name) <= 60 else name[:59] + "…"


def stamp() -> dict:
    return {"code_version": code_version(), "schema_version": SCHEMA_VERSION}


def accepted_versions(path: Path = EQUIVALENT) -> set[str]:
    """This code's version and every version recorded in ``path`` in a group with it: versions whose runs,
    rerun by this code, gave the same bytes (``python -m gradclip.equivalence``)."""
    ours = code_version()
    groups = yaml.safe_load(path.read_text()) if path.is_file() else []
    return {ours}.union(*(g["versions"] for g in groups or [] if ours in g["versions"]))


def is_ours(found: dict) -> bool:
    """Whether a summary.json or sweep.json (``found``) is of this file schema and of code that computes this code's
    numbers."""
    return (isinstance(found, dict) and found.get("schema_version") == SCHEMA_VERSION
            and found.get("code_version") in accepted_versions())


def read_summary(job_dir: Path) -> dict | None:
    """The job's summary if the job is finished by this code (see module docstring), else None."""
    try:
        summary = json.loads((Path(job_dir) / "summary.json").read_text())
    except (OSError, ValueError):
        return None
    if not is_ours(summary):
        return None
    if summary.get("status") not in ("ok", "diverged") or not (Path(job_dir) / "metrics.csv").is_file():
        return None
    return summary


def results_config(resolved: dict) -> dict:
    """The part of a job's resolved config that decides its numbers."""
    return {k: v for k, v in resolved.items() if k not in IGNORED_KEYS and k != "hydra"}


class MixedResultsError(ConfigError):
    """A folder holds results this run must not be mixed with; the message is one line and says how to go on."""


_composed: dict[tuple, tuple] = {}  # composing takes ~0.1 s a job: the launcher reuses what the callback validated


def compose_job(loader, config, overrides: list[str], num: int):
    """Job ``num`` of a sweep as launchers compose it (``hydra.job.num`` and ``id`` set), and its folder."""
    from omegaconf import open_dict

    key = (str(config.hydra.sweep.dir), tuple(overrides), num)
    if key not in _composed:
        cfg = loader.load_sweep_config(config, list(overrides))
        with open_dict(cfg):
            cfg.hydra.job.id, cfg.hydra.job.num = f"{cfg.hydra.job.name}_{num}", num
        _composed[key] = cfg, Path(str(config.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
    return _composed[key]


def job_config(cfg) -> dict:
    """A job's resolved config as its config.yaml holds it (without hydra's own node)."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]), resolve=True,
                                  enum_to_str=True)


def check_folder(folder: Path, jobs: list[tuple[Path, dict]]) -> int:
    """Refuse a sweep (or run) folder holding results of other code, schema or config; return its finished jobs.

    ``jobs`` are (job folder, ``job_config``) of every job about to run.
    """
    fresh = f"use a new hydra.sweep.dir (or hydra.run.dir), or delete {folder} to start fresh"
    ours = stamp()
    for path in [folder / "sweep.json"] + [job_dir / "summary.json" for job_dir, _ in jobs]:
        try:
            found = json.loads(path.read_text()) if path.is_file() else ours
        except (OSError, ValueError):
            found = {}
        if not is_ours(found):
            key = "schema_version" if isinstance(found, dict) and found.get("code_version") in accepted_versions() \
                else "code_version"
            theirs = found.get(key, "unknown") if isinstance(found, dict) else "unknown"
            raise MixedResultsError(f"{path.parent} holds results of {key.replace('_', ' ')} {theirs} "
                                    f"(this is {ours[key]}); {fresh}")
    finished = 0
    for job_dir, resolved in jobs:
        config_path = job_dir / "config.yaml"
        if not config_path.is_file():
            continue
        try:
            stored = yaml.safe_load(config_path.read_text())
        except yaml.YAMLError:
            stored = None
        ours_yaml = yaml.safe_load(yaml.safe_dump(resolved))
        if not isinstance(stored, dict) or results_config(stored) != results_config(ours_yaml):
            raise MixedResultsError(f"{job_dir} holds a run of a different config; rerun the exact same command "
                                    f"to resume, or {fresh}")
        finished += read_summary(job_dir) is not None
    return finished


# ---------------------------------------------------------------- the jobs of a folder (report and exit status)
def job_summaries(folder: Path) -> list[tuple[Path, dict | None]]:
    """Every job folder below ``folder`` (it has a config.yaml or a summary.json), in job order, with its summary
    (None if missing or unreadable)."""
    found = {path.parent for name in ("config.yaml", "summary.json") for path in folder.rglob(name)
             if not {"report", "wandb", ".hydra"} & set(path.relative_to(folder).parts)}
    jobs = []
    for job_dir in sorted(found, key=lambda p: _natural_key(p.relative_to(folder))):
        try:
            summary = json.loads((job_dir / "summary.json").read_text())
        except (OSError, ValueError):
            summary = None
        jobs.append((job_dir, summary))
    return jobs


def run_name(folder: Path, job_dir: Path) -> str:
    return str(job_dir.relative_to(folder)) if job_dir != folder else job_dir.name


def _overrides(job_dir: Path, summary: dict | None) -> str:
    """A job's command-line overrides, from its summary or else from Hydra's .hydra/overrides.yaml."""
    if summary and "overrides" in summary:
        return " ".join(summary["overrides"])
    path = job_dir / ".hydra" / "overrides.yaml"
    return " ".join(yaml.safe_load(path.read_text()) or []) if path.is_file() else ""


def failed_runs(folder: Path) -> list[dict]:
    """Jobs that crashed (their summary.json says why) or never finished (no summary.json), one dict each."""
    return [{"run": run_name(folder, job_dir), "overrides": _overrides(job_dir, summary),
             "status": "failed" if summary else "unfinished",
             "error": summary.get("error", "") if summary else "no summary.json: killed, or still running"}
            for job_dir, summary in job_summaries(folder) if summary is None or summary.get("status") == "failed"]


def _natural_key(path: Path):
    """Job folders in numeric order (2 before 10); names sort after numbers."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in path.parts]
