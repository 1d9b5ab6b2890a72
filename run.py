"""Train and compare: `python run.py -m clip=none,norm1` (any config key can be overridden; see README)."""

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gradclip.config import exit_on_config_error, register_schemas
from gradclip.help import register_help


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    from gradclip.callbacks import launcher_threads
    from gradclip.sweep import Job, job_labels
    from gradclip.training import run_jobs

    hc = HydraConfig.get()
    group, name = job_labels(hc.sweep.dir if hc.mode.name == "MULTIRUN" else hc.run.dir, hc.job.override_dirname)
    run_jobs([Job(cfg, Path(hc.runtime.output_dir), group, name, list(hc.overrides.task), launcher_threads(hc))])


if __name__ == "__main__":
    register_schemas()
    register_help(Path(__file__).resolve().parent / "conf")
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # config errors come back to us, to be printed on one line
    launcher = [arg.split("=", 1)[1] for arg in sys.argv if arg.startswith("hydra/launcher=")]
    workers = {"-m", "--multirun"} & set(sys.argv) and launcher in ([], ["population"])
    if workers:
        from hydra_plugins.gradclip_population.launcher import start_worker_server, stop_worker_server

        start_worker_server()  # the population launcher's workers: their imports overlap Hydra's start-up
    try:
        main()
    except KeyboardInterrupt:
        from gradclip.callbacks import exit_interrupted

        exit_interrupted()
    except Exception as exc:
        exit_on_config_error(exc)
    finally:
        if workers:
            stop_worker_server()  # at once, even mid-import: a refused command leaves no process behind
