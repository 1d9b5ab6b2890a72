"""Weights & Biases logging, offline by default. The local files in the job directory stay the source of truth."""

from __future__ import annotations

import math
import os


class RunLogger:
    """One W&B run per job, or nothing with ``logger=none``. ``finish()`` must be called at the end of every job."""

    def __init__(self, cfg, job_dir: str, group: str, name: str, config: dict):
        self.run = None
        if cfg.name == "none":
            return
        # The environment must be set before wandb.init; mode= alone is not enough for every code path.
        os.environ["WANDB_MODE"] = cfg.mode.value
        os.environ["WANDB_ERROR_REPORTING"] = "false"
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        self.run = wandb.init(project=cfg.project, entity=cfg.entity, group=group, name=name, dir=job_dir,
                              config=config, mode=cfg.mode.value, reinit="finish_previous")

    def log(self, row: dict, step: int) -> None:
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if not (isinstance(v, float) and math.isnan(v))}, step=step)

    def finish(self, summary: dict) -> None:
        if self.run is not None:
            self.run.summary.update({k: v for k, v in summary.items() if isinstance(v, (int, float, str, bool))})
            self.run.finish()
            self.run = None
