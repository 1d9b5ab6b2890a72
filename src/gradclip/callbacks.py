"""Hydra glue: check every job's config and output folder before anything is written; resume a sweep; build the
report when the jobs are done; exit non-zero when a job failed."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import yaml
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gradclip.config import ConfigError, exit_on_config_error, validate
from gradclip.files import write_json
from gradclip.sweep import check_folder, compose_job, failed_runs, job_config, stamp


def default_params(config: DictConfig) -> dict:
    """``hydra.sweeper.default_params`` (conf/config.yaml: seed 0,1,2,3): what a -m sweep of the command line alone
    also sweeps, for each key the command line does not set. A sweep with params of its own, an experiment
    (``+experiment=NAME``: its ``hydra.sweeper.params`` are all its jobs) or a jobs file gets none of them."""
    return dict(config.hydra.sweeper.get("default_params") or {})


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """The overrides of every job the sweep launches, in order: the basic sweeper's product of the command line and
    ``hydra.sweeper.params`` (without params, after it the ``default_params`` the command line does not set); or,
    with ``hydra.sweeper.jobs_file``, the command line's then each listed job's."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = config.hydra.sweeper.get("params") or {}
    task = list(config.hydra.overrides.task)
    parser = OverridesParser.create()
    jobs_file = config.hydra.sweeper.get("jobs_file")
    if jobs_file is None:
        parsed = parser.parse_overrides([f"{key}={value}" for key, value in params.items()] + task)
        if not params and "experiment" not in config.hydra.runtime.choices:  # a sweep of the command line alone:
            # the defaults it does not set (seed=0,1,2,3), after it
            given = {o.key_or_group for o in parsed}
            parsed += parser.parse_overrides([f"{key}={value}" for key, value in default_params(config).items()
                                              if key not in given])
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    key = f"hydra.sweeper.jobs_file={jobs_file}"
    sweeps = [o.input_line for o in parser.parse_overrides(task) if o.is_sweep_override()]
    if params or sweeps:
        given = f"hydra.sweeper.params ({', '.join(params)})" if params else f"the sweep override {sweeps[0]}"
        raise ConfigError(f"{key}: the file lists every job, so {given} cannot go with it; put it in the file")
    try:
        jobs = yaml.safe_load(Path(jobs_file).read_text())
    except OSError as exc:
        raise ConfigError(f"{key}: cannot read it ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}: not valid YAML ({' '.join(str(exc).split())})") from None
    if not (isinstance(jobs, list) and jobs and all(isinstance(job, list) for job in jobs)
            and all(isinstance(o, str) for job in jobs for o in job)):
        raise ConfigError(f"{key}: expected a non-empty list of jobs, each a list of override strings "
                          '(e.g. [["clip=none", "seed=0"], ["clip=norm1", "seed=0"]])')
    for num, job in enumerate(jobs):
        try:
            sweep = next((o.input_line for o in parser.parse_overrides(job) if o.is_sweep_override()), None)
        except HydraException as exc:
            raise ConfigError(f"{key}: job {num}: {' '.join(str(exc).split())}") from None
        if sweep:
            raise ConfigError(f"{key}: job {num}: {sweep} is a sweep; list each of its jobs instead")
    return [task + job for job in jobs]


def check_writable(folder: Path) -> None:
    """A ConfigError unless ``folder`` exists as a writable folder or can be created (nothing is created here)."""
    existing = folder.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{folder}: cannot write there ({existing} is a file, not a folder)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{folder}: cannot write there (no write permission on {existing})")


def check_launcher(config: DictConfig) -> None:
    """A ConfigError when the sweep's launcher cannot work here: SLURM's (submitit) without sbatch and srun, or with
    a time-out warning that would come as each task starts."""
    launcher = config.hydra.launcher
    if "SlurmLauncher" in str(launcher.get("_target_", "")):
        missing = [command for command in ("sbatch", "srun") if shutil.which(command) is None]
        if missing:
            choice = f"hydra/launcher={config.hydra.runtime.choices.get('hydra/launcher')}"
            raise ConfigError(f"{choice}: no SLURM here ({' and '.join(missing)} not found on PATH); run it on the "
                              f"cluster (e.g. its login node), or without {choice} to run here")
        limit, delay = 60 * launcher.timeout_min, launcher.get("signal_delay_s", 0)
        if delay + 30 >= limit:
            raise ConfigError(f"hydra.launcher.signal_delay_s={delay}: with timeout_min={launcher.timeout_min} "
                              "SLURM's time-out warning (signal_delay_s before the limit, up to 30 s earlier) would "
                              f"come as each task starts; use signal_delay_s < {limit - 30} or a longer timeout_min")


def launcher_threads(hydra_cfg) -> int:
    """Torch threads per job when the config says threads=0 (auto): the cores shared among the launcher's parallel
    workers (joblib: cores / n_jobs; submitit: cpus_per_task), else 0 = torch's default (every core)."""
    launcher = hydra_cfg.get("launcher") or {}
    target = str(launcher.get("_target_", ""))
    cores = os.cpu_count() or 1
    if "joblib" in target:
        n_jobs = int(launcher.get("n_jobs") or 1)
        workers = n_jobs if n_jobs > 0 else max(1, cores + 1 + n_jobs)  # joblib: -1 = every core
        return max(1, cores // workers)
    if "submitit" in target:
        return int(launcher.get("cpus_per_task") or 0)
    return 0


resume_command: str | None = None  # this command with its output folder named, once that is known


def set_resume_command(key: str, folder: Path) -> None:
    """Remember this command as typed, with ``key=folder`` (hydra.run.dir or hydra.sweep.dir) in place of any."""
    global resume_command
    argv = [arg for arg in sys.orig_argv if not arg.lstrip("+").startswith(f"{key}=")]
    resume_command = shlex.join([*argv, f"{key}={folder}"])


def exit_interrupted() -> None:
    """Ctrl-C: one line on stderr with the command that resumes the work (finished jobs are skipped, the others go
    on from their checkpoints), and exit status 130."""
    print(f"interrupted; resume with: {resume_command}" if resume_command else "interrupted before any job started",
          file=sys.stderr)
    sys.exit(130)


class SuiteCallback(Callback):
    """Hydra turns exceptions raised in callbacks into warnings, so a bad config exits here (SystemExit)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        folder = Path(config.hydra.run.dir)
        set_resume_command("hydra.run.dir", folder)
        try:
            validate(config)
            self.prepare(folder, [(folder, job_config(config))])
        except Exception as exc:
            exit_on_config_error(exc)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        loader = GlobalHydra.instance().config_loader()
        folder = Path(config.hydra.sweep.dir)
        set_resume_command("hydra.sweep.dir", folder)
        try:
            check_launcher(config)
            composed = [compose_job(loader, config, o, num) for num, o in enumerate(sweep_job_overrides(config))]
            for job, _ in composed:
                validate(job)
            self.prepare(folder, [(job_dir, job_config(job)) for job, job_dir in composed])
        except Exception as exc:
            exit_on_config_error(exc)

    @staticmethod
    def prepare(folder: Path, jobs: list[tuple[Path, dict]]) -> None:
        """Refuse an unwritable folder or one holding other results; say what a rerun resumes; stamp the folder."""
        check_writable(folder)
        finished = check_folder(folder, jobs)
        if finished:
            print(f"{folder}: {finished} of {len(jobs)} jobs finished before; skipping them, resuming the rest")
        if not (folder / "sweep.json").is_file():
            write_json(folder / "sweep.json", stamp())
        if len(jobs) > 1:
            print(f"sweep folder: {folder} (run the same command with hydra.sweep.dir={folder} to resume it)")

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        self.finish(Path(config.hydra.runtime.output_dir), config)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        self.finish(Path(config.hydra.sweep.dir), config)

    def finish(self, folder: Path, config: DictConfig) -> None:
        """Build the report (if asked), then exit with status 1 when any job failed or did not finish."""
        if config.report:
            print(f"report: {self.build_report(folder, config).resolve()}")
        if any(folder.glob("*/wandb/offline-run-*")):
            print(f"W&B runs are offline; upload them with: wandb sync {folder}/*/wandb/offline-run-*")
        failed = failed_runs(folder)
        if failed:
            print(f"error: {len(failed)} job(s) failed or did not finish: {', '.join(f['run'] for f in failed)} "
                  "(errors in their summary.json and in the report)", file=sys.stderr)
            sys.exit(1)

    def build_report(self, folder: Path, config: DictConfig) -> Path:
        """The sweep's report; a subclass may add to it (experiments/ adds the claims of an experiment sweep)."""
        from gradclip.report import build_report

        return build_report(folder)
