"""`hydra/sweeper=eva_optuna`: the Hydra side; the work is in evasweep/runner.py."""

import os
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
        from hydra.types import HydraContext

        from evasweep.compose import ComposeCache
        from evasweep.job import JobReporter

        self.config = config
        # The launcher composes each job through it: in full once per shape of overrides,
        # then from a copy (evasweep/compose.py).
        loader = hydra_context.config_loader
        if not isinstance(loader, ComposeCache):
            loader = ComposeCache(loader)
        hydra_context = HydraContext(config_loader=loader, callbacks=hydra_context.callbacks)
        self.hydra_context = hydra_context
        # Each job sends its trial's heartbeats and tells its outcome itself: launchers
        # carry the context's callbacks to the job's process, wherever it runs.
        callbacks = hydra_context.callbacks.callbacks
        if not any(isinstance(c, JobReporter) for c in callbacks):
            callbacks.append(JobReporter())
        self.launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )

    def compose(self, batch) -> list[DictConfig]:
        """Each job's config, as Hydra composes it for the launcher (nothing runs)."""
        loader = self.hydra_context.config_loader
        return [loader.load_sweep_config(self.config, list(overrides)) for overrides in batch]

    def sweep(self, arguments: list[str]) -> Any:
        from evasweep.errors import SweepError
        from evasweep.integration import active_integration
        from evasweep.runner import StudyRunner

        app = active_integration()
        runner = StudyRunner(self.settings, self.config, self.launcher, self.compose, app)
        try:
            return runner.run(arguments)
        except (SweepError, *app.user_errors) as e:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"Error: {app.explain(e)}", file=sys.stderr)  # one line, no traceback
            sys.exit(1)
        except KeyboardInterrupt:
            print(
                "Interrupted: running trials marked FAIL; the same command continues the study",
                file=sys.stderr,
            )
            sys.exit(130)
