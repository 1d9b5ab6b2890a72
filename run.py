"""Train and compare: `python run.py -m clip=none,norm1` (any config key can be overridden; see README)."""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradclip.config import exit_on_config_error, register_schemas


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    import torch

    from gradclip.callbacks import launcher_threads
    from gradclip.training import run_job

    hc = HydraConfig.get()
    folder = Path(hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir)
    group = "_".join(folder.parts[-2:])  # one W&B group per sweep: multirun/<date>/<time> -> <date>_<time>
    if cfg.threads == 0 and (threads := launcher_threads(hc)) > 0:
        torch.set_num_threads(threads)  # parallel workers share the cores: one slice each
    run_job(cfg, hc.runtime.output_dir, group=group, name=hc.job.override_dirname or "defaults",
            overrides=list(hc.overrides.task))


if __name__ == "__main__":
    register_schemas()
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # config errors come back to us, to be printed on one line
    launcher = [arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("hydra/launcher=")]
    if {"-m", "--multirun"} & set(sys.argv) and launcher in ([], ["population"]):
        from hydra_plugins.gradclip_population.launcher import start_worker_server

        start_worker_server()  # the population launcher's workers: their imports overlap Hydra's start-up
    try:
        main()
    except Exception as exc:
        exit_on_config_error(exc)
