"""What `python -m eva` runs inside Hydra: the run dir, the MLflow context, clean errors.

Data flows one way: Hydra composed the config; here its option names are fixed; the mode
validates the whole of it first (eva/config/validate.py), then builds the run from it.
"""

import sys
from pathlib import Path

from omegaconf import DictConfig


def launch_context(cfg: DictConfig, hydra_cfg):
    """What the config alone does not say: launch dir, and in a sweep the parent run."""
    from hydra.types import RunMode

    from eva.tracking.callback import job_run_name, parent_from_env
    from eva.tracking.run import Launch, launch_dir_of

    launch = Launch(launch_dir=launch_dir_of(hydra_cfg))
    launch.overrides = list(hydra_cfg.overrides.task)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        from eva.sweep.integration import slot_from_env
        from evasweep import current_trial

        parent = parent_from_env()
        launch.trial = current_trial()
        if launch.trial is not None:
            launch.trial.ensure_running()  # a job that started late does not train for nothing
        launch.slot, launch.slots = slot_from_env()
        # In an Optuna sweep the job is named by its trial number, unique in the study.
        num = launch.trial.number if launch.trial else hydra_cfg.job.num
        overrides = list(hydra_cfg.overrides.task)
        fixed = parent["fixed_keys"] if parent else []
        base = cfg.tracking.run_name or cfg.name
        launch.run_name = job_run_name(base, num, overrides, fixed)
        sweep_dir = launch.launch_dir / hydra_cfg.sweep.dir  # an absolute dir stays as it is
        launch.tags = {"hydra_job_num": str(num), "sweep_dir": str(sweep_dir)}
        if launch.trial is not None and launch.trial.repeats > 1:  # one run per seed
            launch.tags["optuna_trial"] = str(launch.trial.number)
            launch.tags["repeat"] = f"{launch.trial.repeat + 1}/{launch.trial.repeats}"
        launch.parent_run_id = parent["run_id"] if parent else None
    return launch


def run_mode(cfg: DictConfig, output_dir: Path, launch) -> dict:
    """mode=train | test | lr_find -> the function that runs it (imported only when used)."""
    if cfg.mode == "test":
        from eva.modes.test import evaluate_checkpoint

        return evaluate_checkpoint(cfg, output_dir, launch)
    if cfg.mode == "lr_find":
        from eva.modes.lr_range_test import find_lr

        return find_lr(cfg, output_dir, launch)
    from eva.modes.train import train  # validate() rejects any other mode

    return train(cfg, output_dir, launch)


def run_job(cfg: DictConfig) -> float | None:
    """Hydra task function body. Returns the sweep objective (see eva.modes.train.train).

    An EvaError fails this job only in a sweep; a single run prints it as one line.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from eva.cli.errors import full_errors, one_line
    from eva.config.validate import fill_names
    from eva.engine.timing import job_started_at
    from eva.errors import EvaError

    started = job_started_at()
    hydra_cfg = HydraConfig.get()
    output_dir = Path(hydra_cfg.runtime.output_dir)
    try:
        fill_names(cfg, dict(hydra_cfg.runtime.choices))  # the mode validates the rest
        launch = launch_context(cfg, hydra_cfg)
        launch.started_at = started
        results = run_mode(cfg, output_dir, launch)
        if results.get("pruned_at_epoch"):
            from evasweep import TrialPruned

            # The sweeper marks the trial PRUNED; the run itself finished cleanly.
            raise TrialPruned(f"pruned at epoch {results['pruned_at_epoch']}")
        return sweep_value(results, launch.trial)
    except KeyboardInterrupt:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # the sweep stops too; its parent run ends KILLED
        killed = "MLflow run marked KILLED; " if cfg.tracking.enabled else ""
        again = ""
        if cfg.mode == "train":
            again = f"; to continue: resume=true hydra.run.dir={output_dir}"
        print(f"Interrupted: {killed}outputs so far in {output_dir}{again}", file=sys.stderr)
        sys.exit(130)
    except EvaError as e:
        if hydra_cfg.mode == RunMode.MULTIRUN or full_errors():
            raise  # the sweeper records it; HYDRA_FULL_ERROR=1 shows the traceback
        print(f"Error: {one_line(e)}", file=sys.stderr)  # not Hydra's "Error executing job"
        remove_if_untouched(output_dir, Path(hydra_cfg.runtime.cwd))
        sys.exit(1)


def sweep_value(results: dict, trial) -> float | list[float] | None:
    """What the job returns: the objective (None for mode=lr_find), or in a sweep with
    hydra.sweeper.objectives those numbers of results.json, in order (checked up front
    by eva.sweep.integration.EvaIntegration.check_objectives)."""
    if trial is not None and trial.objectives:
        return [float(results[name]) for name in trial.objectives]
    return results.get("objective")


def remove_if_untouched(output_dir: Path, launch_dir: Path) -> None:
    """A run refused before any work leaves no folder: Hydra made it for the job, with its
    .hydra/ and a log of the refusal only. A folder with anything else (a run to resume,
    a checkpoint) is left as it is."""
    import shutil

    here = launch_dir.absolute()
    if not output_dir.is_dir() or output_dir.absolute() in (here, *here.parents):
        return  # hydra.run.dir=. : the launch folder itself is never removed
    entries = {p.name for p in output_dir.iterdir()}
    if (
        entries <= {".hydra", "train.log", ".eva.lock"}
        and not (output_dir / "checkpoints").exists()
    ):
        shutil.rmtree(output_dir, ignore_errors=True)
        # and outputs/<name>/, outputs/ when they held only this run (never the launch dir)
        parent, launch_dir = output_dir.parent.absolute(), launch_dir.absolute()
        while parent != launch_dir and launch_dir in parent.parents and not any(parent.iterdir()):
            parent.rmdir()
            parent = parent.parent
