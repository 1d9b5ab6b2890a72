"""Hydra glue: validate every job's config before anything is written; build the report when the jobs are done."""

from __future__ import annotations

from pathlib import Path

from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from gradclip.config import exit_on_config_error, validate


def sweep_job_overrides(config: DictConfig) -> list[list[str]]:
    """The overrides of every job the basic sweeper will launch (command line and hydra.sweeper.params)."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    params = config.hydra.sweeper.get("params") or {}
    arguments = [f"{key}={value}" for key, value in params.items()] + list(config.hydra.overrides.task)
    parsed = OverridesParser.create().parse_overrides(arguments)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


class SuiteCallback(Callback):
    """Hydra turns exceptions raised in callbacks into warnings, so a bad config exits here (SystemExit)."""

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        try:
            validate(config)
        except Exception as exc:
            exit_on_config_error(exc)

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        loader = GlobalHydra.instance().config_loader()
        try:
            for overrides in sweep_job_overrides(config):
                validate(loader.load_sweep_config(config, list(overrides)))
        except Exception as exc:
            exit_on_config_error(exc)

    def on_run_end(self, config: DictConfig, **kwargs) -> None:
        if config.report:
            print(f"report: {self.build_report(Path(config.hydra.runtime.output_dir), config).resolve()}")

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        if config.report:
            print(f"report: {self.build_report(Path(config.hydra.sweep.dir), config).resolve()}")

    def build_report(self, folder: Path, config: DictConfig) -> Path:
        """The sweep's report; a subclass may add to it (experiments/ adds the claims of an experiment sweep)."""
        from gradclip.report import build_report

        return build_report(folder)
