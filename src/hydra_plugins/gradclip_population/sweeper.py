"""Hydra's basic sweeper without its second composition of every job, and with a jobs file (``hydra/sweeper=checked``,
the default).

Before a sweep starts, gradclip's callback composes and validates every job (and the population launcher reuses
those configs); the basic sweeper would then compose each job once more only to see that it composes: ~0.1 s a
job, 40 s for a sweep of 400 runs. ``jobs_file`` (a YAML list of jobs, each a list of overrides) runs exactly those
jobs, in file order, instead of a product. The jobs come from ``gradclip.callbacks.sweep_job_overrides``, the list
the callback checked; ``params`` and ``max_batch_size`` work as in the basic sweeper. ``default_params`` (seed
0,1,2,3 in conf/config.yaml) are swept too by a sweep of the command line alone (no params, no jobs file), for each
key the command line does not set: `python run.py -m clip=none,norm1` runs 4 seeds per arm, `... seed=7` one.
"""

from __future__ import annotations

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from gradclip.callbacks import sweep_job_overrides


class CheckedSweeper(BasicSweeper):
    def __init__(self, max_batch_size: int | None = None, params: dict | None = None, jobs_file: str | None = None,
                 default_params: dict | None = None):
        super().__init__(max_batch_size, params)  # jobs_file, like params, is read from the config's sweeper node

    def split_arguments(self, overrides, max_batch_size) -> list[list[list[str]]]:
        """The jobs of ``sweep_job_overrides`` in batches of ``max_batch_size`` (``overrides`` are the same ones)."""
        return list(self.split_overrides_to_chunks(sweep_job_overrides(self.config), max_batch_size))

    def validate_batch_is_legal(self, batch) -> None:
        """Nothing left to check: ``gradclip.callbacks.SuiteCallback.on_multirun_start`` composed every job."""
