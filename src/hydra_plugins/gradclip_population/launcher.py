"""The fast launcher for many small runs: `python run.py -m hydra/launcher=population ...`.

Jobs that share task and model (they may differ in seed, clipping, optimizer and lr) are trained together as
populations, one population per worker process and one core per worker. Workers are forked from a server process
that imports torch and gradclip once, started by run.py as the command starts (``start_worker_server``) so that
its imports overlap Hydra composing and checking the jobs; the task is built once per population, and MLPs of one
shape share batched matrix products wherever that is bit-identical to each run alone
(``gradclip.models.batching_is_exact``). Every job still gets its own folder and
files (with Hydra's .hydra/ folder, though no run.log), as with Hydra's basic launcher, and the report is built
once, after all jobs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import signal
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from gradclip.files import write_atomic
from gradclip.sweep import Job, compose_job, job_labels

log = logging.getLogger(__name__)
# What every worker imports, once, in the server it is forked from (~3 s in each worker otherwise; torch.optim's
# optimizers import torch._dynamo on first use). scikit-learn (0.8 s, the digits and regression tasks only) is left
# to the workers that need it, which import it side by side.
PRELOAD = ["torch", "torch._dynamo", "gradclip.training"]
LIST_JOBS = 20  # a sweep of at most this many jobs lists them at its start; a larger one says how many
WORKER_EXIT_SECONDS = 20  # how long a Ctrl-C waits for the workers to end their populations
START_METHOD = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def start_worker_server() -> None:
    """Start the process the workers are forked from (it imports ``PRELOAD``); returns at once, idempotent.

    The server ignores Ctrl-C (a traceback from its imports otherwise): run.py stops it and says so on one line."""
    if START_METHOD == "forkserver":
        from multiprocessing import forkserver

        forkserver.set_forkserver_preload(PRELOAD)
        handler = signal.signal(signal.SIGINT, signal.SIG_IGN)  # inherited: an ignored signal stays ignored
        try:
            forkserver.ensure_running()
        finally:
            signal.signal(signal.SIGINT, handler)


def stop_worker_server() -> None:
    """Stop the worker server now, even in the middle of its imports: a refused command leaves no process behind.

    multiprocessing has no public stop; its own ``_stop`` (for its tests) closes the server's pipe and waits until
    the server notices, which it does only after its imports (~3 s, 200-300 MB meanwhile). So the server is
    terminated first, by the pid multiprocessing keeps, then ``_stop`` reaps it and removes its socket."""
    if START_METHOD == "forkserver":
        from multiprocessing import forkserver

        server = forkserver._forkserver
        if server._forkserver_pid is not None:
            os.kill(server._forkserver_pid, signal.SIGTERM)
            server._stop()


def population_key(cfg: DictConfig) -> str:
    """Runs with the same key can share a population: same task (same data), model shape, device and precision."""
    return OmegaConf.to_yaml({"task": cfg.task, "model": cfg.model, "device": cfg.device.value,
                              "precision": cfg.precision.value})


def split(indices: list[int], parts: int) -> list[list[int]]:
    """``indices`` dealt round-robin into ``parts`` non-empty lists of near-equal size."""
    parts = max(1, min(parts, len(indices)))
    return [indices[i::parts] for i in range(parts)]


interrupted = training = False  # in a worker: Ctrl-C came; a population is being trained


def on_interrupt(signum, frame) -> None:
    """A worker's Ctrl-C (the terminal's, or passed on by ``launch``): its population stops, once, and no other
    starts; the KeyboardInterrupt goes back to the launcher, so the worker prints no traceback."""
    global interrupted
    first, interrupted = not interrupted, True
    if first and training:
        raise KeyboardInterrupt


def init_worker(steps) -> None:
    """A worker's start: Ctrl-C handled by ``on_interrupt``, and its steps counted in the sweep's shared ``steps``.

    tqdm's default lock is a multiprocessing RLock: created in a forkserver worker, it is a named semaphore that the
    resource tracker reports as leaked when the worker ends without its exit handlers (a Ctrl-C's extra line on
    stderr). A worker's bars need only a thread lock."""
    import threading

    from tqdm import tqdm

    import gradclip.training

    tqdm.set_lock(threading.RLock())
    signal.signal(signal.SIGINT, on_interrupt)
    gradclip.training.shared_steps = steps


def train_population(jobs: list[Job]) -> list:
    """One worker's share: its population (runs in the worker process)."""
    global training
    from gradclip.training import run_jobs

    if interrupted:
        return []
    training = True
    try:
        return run_jobs(jobs)
    finally:
        training = False


def save_hydra_files(cfg: DictConfig, job: DictConfig, job_dir: Path, overrides: list[str]) -> None:
    """The job's .hydra/ folder as Hydra's own launchers write it: config.yaml, hydra.yaml, overrides.yaml."""
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(job_dir.absolute())
    write_atomic(job_dir / ".hydra" / "config.yaml", OmegaConf.to_yaml(job))
    write_atomic(job_dir / ".hydra" / "hydra.yaml", OmegaConf.to_yaml({"hydra": cfg.hydra}))
    write_atomic(job_dir / ".hydra" / "overrides.yaml", OmegaConf.to_yaml(list(overrides)))


def prepare_jobs(hydra_context, config: DictConfig, job_overrides, initial_job_idx: int):
    """Every job of the sweep composed (reusing the callback's compositions), its .hydra/ folder written unless it
    is a resumed job's, as (hydra configs, ``Job`` objects); the sweep folder created."""
    setup_globals()
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)
    configs, jobs = [], []
    for idx, overrides in enumerate(job_overrides):
        cfg, job_dir = compose_job(hydra_context.config_loader, config, overrides, initial_job_idx + idx)
        job = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])
        if not (job_dir / ".hydra" / "overrides.yaml").is_file():  # a resumed job's folder stays as it was
            save_hydra_files(cfg, job, job_dir, overrides)
        configs.append(cfg)
        jobs.append(Job(job, job_dir, *job_labels(sweep_dir, cfg.hydra.job.override_dirname), list(overrides)))
    if len(jobs) <= LIST_JOBS:
        for idx, overrides in enumerate(job_overrides):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
    return configs, jobs


def job_returns(job_overrides, configs: list[DictConfig], jobs: list[Job], summaries: dict) -> list[JobReturn]:
    """What Hydra expects back from a launcher; a job's return value is its summary (None: it did not finish)."""
    return [JobReturn(overrides=list(overrides), cfg=jobs[i].cfg, hydra_cfg=configs[i],
                      working_dir=str(jobs[i].job_dir), task_name=configs[i].hydra.job.name,
                      status=JobStatus.COMPLETED, _return_value=summaries.get(i))
            for i, overrides in enumerate(job_overrides)]


class PopulationLauncher(Launcher):
    """Hydra launcher: populations of compatible jobs, ``n_jobs`` worker processes (-1 = one per core)."""

    def __init__(self, n_jobs: int = -1, max_population: int = 16) -> None:
        self.n_jobs, self.max_population = n_jobs, max_population
        self.config = self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context  # the task function is run_jobs, not run.py's main

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        configs, jobs = prepare_jobs(self.hydra_context, self.config, job_overrides, initial_job_idx)
        groups = defaultdict(list)
        for idx, job in enumerate(jobs):
            groups[population_key(job.cfg)].append(idx)
        cores = os.cpu_count() or 1
        workers = self.n_jobs if self.n_jobs > 0 else cores
        per_group = [max(1, round(workers * len(members) / len(jobs))) for members in groups.values()]
        populations = [part for members, parts in zip(groups.values(), per_group)
                       for part in split(members, max(parts, math.ceil(len(members) / self.max_population)))]
        workers = min(workers, len(populations))
        threads = max(1, cores // workers)
        for job in jobs:
            job.auto_threads = threads
        log.info(f"Population launcher: {len(jobs)} jobs in {len(populations)} populations "
                 f"({', '.join(str(len(p)) for p in populations)} runs), {workers} workers x {threads} threads, "
                 f"sweep output dir: {self.config.hydra.sweep.dir}")
        start_worker_server()
        context = multiprocessing.get_context(START_METHOD)
        steps = context.Value("q", 0)  # every worker adds its steps: one progress bar for the whole sweep
        with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker, initargs=(steps,)) as pool:
            try:
                futures = [pool.submit(train_population, [jobs[i] for i in members]) for members in populations]
                with tqdm(total=sum(int(job.cfg.steps) for job in jobs), unit="step", desc=f"{len(jobs)} runs",
                          disable=bool(os.environ.get("CI")) or None, mininterval=0.5, smoothing=0.05) as bar:
                    while wait(futures, timeout=0.5).not_done:
                        bar.update(steps.value - bar.n)
                    bar.update(steps.value - bar.n)
                results = [future.result() for future in futures]
            except KeyboardInterrupt:  # the workers stop too, and exit as usual; a rerun resumes from the checkpoints
                pool.shutdown(wait=False, cancel_futures=True)
                workers = multiprocessing.active_children()
                for worker in workers:  # in case only this process got the Ctrl-C
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(worker.pid, signal.SIGINT)
                for worker in workers:  # gone before run.py stops their server (which alone can say they ended)
                    worker.join(timeout=WORKER_EXIT_SECONDS)
                raise
        summaries = {i: s for members, result in zip(populations, results) for i, s in zip(members, result)}
        return job_returns(job_overrides, configs, jobs, summaries)
