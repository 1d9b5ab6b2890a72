"""What the SLURM launcher (``hydra/launcher=slurm``) hands to submitit: the callable an array task runs, and a job
watcher for clusters without accounting. Imported by the launcher when it launches, and in every array task."""

from __future__ import annotations

import subprocess

from submitit.helpers import Checkpointable
from submitit.slurm.slurm import SlurmInfoWatcher

from gradclip.sweep import Job


class Population(Checkpointable):
    """One array task: its runs trained together as a population (``gradclip.training.run_jobs``).

    On a time-out or preemption submitit calls ``checkpoint`` (Checkpointable's: the same call again) and requeues
    the task, at most ``max_num_timeout`` times for time-outs: its finished runs are skipped, the others resume from
    their last checkpoint (``checkpoint_every``)."""

    def __call__(self, jobs: list[Job]) -> list:
        from gradclip.training import run_jobs

        return run_jobs(jobs)


def has_accounting(job_id: str) -> bool:
    """Whether sacct answers for this job: not on a cluster without accounting storage (no slurmdbd)."""
    return subprocess.run(["sacct", "--noheader", "-j", job_id.split("_")[0]], capture_output=True).returncode == 0


class QueueWatcher(SlurmInfoWatcher):
    """submitit's SLURM job watcher, asking squeue instead of sacct (which fails without accounting storage, and then
    submitit would wait forever for a cancelled task). A task that squeue no longer lists is over (state GONE):
    submitit then reports it unfinished, unless its result is there."""

    def _make_command(self) -> list[str] | None:
        if not self._registered - self._finished:
            return None
        return ["squeue", "--me", "--states=all", "--array", "--noheader", "--format=%i|%T"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        listed = dict(line.strip().split("|", 1) for line in text.splitlines() if "|" in line)
        return {job: {"JobID": job, "State": listed.get(job, "GONE")} for job in self._registered}
