"""`hydra/sweeper=eva_optuna`: the Hydra side; the work is in eva/sweep/runner.py."""

import sys
from typing import Any

from hydra.plugins.sweeper import Sweeper
from omegaconf import DictConfig, OmegaConf


class EvaOptunaSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        # Kept as one config node: sampler and pruner stay instantiable configs.
        self.settings = OmegaConf.create(settings)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context = None

    def setup(self, *, hydra_context, task_function, config: DictConfig) -> None:
        from hydra.core.plugins import Plugins

        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def check_batch(self, batch) -> None:
        """Each job's overrides compose (Hydra) and give a config eva can run (eva's own
        validation, which builds nothing): a bad search value fails before any trial."""
        from eva.config.validate import validate_job

        for overrides in batch:
            job = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            validate_job(job)

    def sweep(self, arguments: list[str]) -> Any:
        from eva.cli.errors import full_errors
        from eva.errors import EvaError
        from eva.sweep.runner import StudyRunner

        runner = StudyRunner(self.settings, self.config, self.launcher, self.check_batch)
        try:
            return runner.run(arguments)
        except EvaError as e:
            if full_errors():
                raise
            print(f"Error: {e}", file=sys.stderr)  # one line, no traceback
            sys.exit(1)
        except KeyboardInterrupt:
            print(
                "Interrupted: running trials marked FAIL, MLflow parent run KILLED; the same "
                "command continues the study",
                file=sys.stderr,
            )
            sys.exit(130)
