"""The SLURM launcher: `python run.py -m hydra/launcher=slurm ...` (conf/hydra/launcher/slurm.yaml).

hydra-submitit-launcher's SlurmLauncher (same options: partition, timeout_min, cpus_per_task, array_parallelism,
max_num_timeout...), with one difference: an array task trains a population of up to ``max_population`` runs that
share task and model (as the population launcher does on one machine), since each task pays 2-3 s of imports.
Jobs finished before are not submitted again; a task cancelled or killed leaves its runs unfinished (the command
says so and exits 1), and the same command run again resumes them from their checkpoints.
"""

import logging
import math
from collections import defaultdict
from dataclasses import dataclass

from hydra.core.config_store import ConfigStore
from hydra.core.utils import JobReturn
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf, SlurmQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from hydra_plugins.gradclip_population.launcher import LIST_JOBS, job_returns, population_key, prepare_jobs, split

log = logging.getLogger(__name__)


@dataclass
class PopulationSlurmConf(SlurmQueueConf):
    _target_: str = "hydra_plugins.gradclip_population.submitit_slurm.PopulationSlurmLauncher"
    max_population: int = 4  # runs per array task, at most


ConfigStore.instance().store(group="hydra/launcher", name="submitit_slurm_population", node=PopulationSlurmConf,
                             provider="gradclip")


class PopulationSlurmLauncher(SlurmLauncher):
    def __init__(self, max_population: int = 4, **params) -> None:
        super().__init__(**params)
        self.max_population = max_population

    def executor(self):
        """submitit's executor with this config's parameters, translated as hydra-submitit-launcher does."""
        import submitit

        params = dict(self.params)
        folder, max_num_timeout = params.pop("submitit_folder"), params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=max_num_timeout)
        generic = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in generic else f"slurm_{k}": v for k, v in params.items()})
        return executor

    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        from submitit.core.utils import FailedJobError, UncompletedJobError

        from gradclip.cluster import Population, QueueWatcher, has_accounting
        from gradclip.summary import RunSummary
        from gradclip.sweep import read_summary

        configs, jobs = prepare_jobs(self.hydra_context, self.config, job_overrides, initial_job_idx)
        summaries, groups = {}, defaultdict(list)
        for idx, job in enumerate(jobs):
            job.auto_threads = int(self.params.get("cpus_per_task") or 1)
            if (finished := read_summary(job.job_dir)) is not None:
                summaries[idx] = RunSummary.from_dict(finished)
            else:
                groups[population_key(job.cfg)].append(idx)
        populations = [part for members in groups.values()
                       for part in split(members, math.ceil(len(members) / self.max_population))]
        if not populations:
            return job_returns(job_overrides, configs, jobs, summaries)
        tasks = self.executor().map_array(Population(), [[jobs[i] for i in members] for members in populations])
        log.info(f"SLURM launcher: {sum(map(len, populations))} jobs in {len(tasks)} array tasks of job "
                 f"{tasks[0].job_id.split('_')[0]} ({', '.join(str(len(p)) for p in populations)} runs), "
                 f"sweep output dir: {self.config.hydra.sweep.dir}")
        if len(tasks) <= LIST_JOBS:
            for task, members in zip(tasks, populations):
                log.info(f"\t{task.job_id}: jobs {', '.join(jobs[i].job_dir.name for i in members)}")
        if not has_accounting(tasks[0].job_id):
            watcher = QueueWatcher(delay_s=60)
            for task in tasks:
                task.watcher = watcher
        try:
            for task, members in zip(tasks, populations):
                try:
                    summaries.update(zip(members, task.results()[0]))
                except (UncompletedJobError, FailedJobError):
                    log.warning(f"array task {task.job_id} ended without its results; its logs: "
                                f"{task.paths.stderr}")
        except KeyboardInterrupt:  # the tasks are cancelled: the same command then resumes them, never twice at once
            for task in tasks:
                task.cancel(check=False)
            raise
        return job_returns(job_overrides, configs, jobs, summaries)
