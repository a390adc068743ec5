"""What an app adds to its sweeps: the interface the generic sweeper calls.

The sweeper works for any Hydra app whose task returns a float (or a sequence of floats for
a multi-objective study). An app that wants more (a tracking parent run, its own checks
of a trial's config, device slots for its jobs) writes a subclass of Integration and opts
in once, before its Hydra main runs:

    import evasweep

    evasweep.use_integration("mylab.sweeps:MyIntegration")  # or an instance

A "module:name" string is imported only when a sweep starts, so single runs pay nothing.
Every method has a default that does nothing; override what you need. eva's own is
eva.sweep.integration.EvaIntegration.

Called in the sweep process, in this order:
    prepare(config, launch_dir)           first: slow set-up start() needs may begin meanwhile
    check_objectives(config, names)       hydra.sweeper.objectives, when given
    check_job(job_cfg)                    each probe of the search space, then the first batch
    explain(error)                        a refused trial config, in one line
    start(config, study, space, url, dir) once the study is open, before any trial
    job_env(trial, slot, slots)           for each trial launched: extra env for its job
    trial_died(number, attrs, why, until) a trial FAIL because a process died or the sweep stops
    record(result, results_file)          after each batch, with optimization_results.yaml
    finish(study, best)                   the study is complete: its best trial(s)
    end(status, error)                    FINISHED, FAILED or KILLED, once per command
"""

from pathlib import Path

_chosen = None  # what use_integration() was given


class Integration:
    #: Exceptions that mean bad input: shown as one line (no traceback), exit 1.
    user_errors: tuple[type[BaseException], ...] = ()
    #: hydra.sweeper.direction when the sweep config leaves it null: what the task returns
    #: is better when smaller (a loss) unless the app says otherwise (eva: an accuracy).
    default_direction: str = "minimize"

    def study_prefix(self, config) -> str:
        """The default study name is `<prefix>-<hash of what the trials run>`."""
        return str(config.hydra.job.name)

    def default_storage(self, config, launch_dir: Path) -> str | None:
        """Where a study lives when hydra.sweeper.storage is null; None: the journal
        file optuna.log in the launch folder."""
        return None

    def metric_names(self, config) -> list[str] | None:
        """What the task's value(s) measure, one name per direction, shown by
        optuna-dashboard instead of "Objective 0" (Optuna's study.set_metric_names);
        None: unnamed."""
        return None

    def check_objectives(self, config, names: list[str]) -> None:
        """Raise (one of user_errors) when hydra.sweeper.objectives names a value the task
        cannot return; checked before the study or any trial exists."""

    def in_identity(self, key: str) -> bool:
        """Does a fixed override of `key` change what a trial computes? Keys that do not
        (e.g. a device or a number of loader workers) leave the study's identity alone."""
        return True

    def prepare(self, config, launch_dir: Path) -> None:
        """The sweep starts: begin what start() will need and is slow to make (a tracking
        store, in a process of its own) while the sweeper checks the search space. A
        failure here should wait for start() to be raised: bad input fails first."""

    def explain(self, error: BaseException) -> str:
        """A refused trial config (from Hydra, OmegaConf or check_job) in one line."""
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        return lines[0] if lines else type(error).__name__

    def check_job(self, job_cfg) -> None:
        """Raise (one of user_errors) when the composed config of a trial would be refused,
        so a bad search value fails the sweep before any trial runs."""

    def start(self, config, study, space, storage_url: str, sweep_dir: Path) -> None:
        """The study is open and about to get trials from this command."""

    def job_env(self, trial, slot: int, slots: int) -> dict[str, str]:
        """Environment of the trial's job, on top of the sweeper's own (evasweep.job).
        slot: 0..slots-1, which of the jobs this command runs at once this is."""
        return {}

    def best_details(self, trial) -> dict:
        """More keys for optimization_results.yaml about the best trial (single objective)."""
        return {}

    def trial_died(self, number: int, attrs: dict, why: str, until: float) -> None:
        """Trial `number` is FAIL because its process died or this sweep stops. attrs: its
        user attrs; until: a time.monotonic() deadline up to which its job, if alive, may
        still end its own work."""

    def record(self, result: dict, results_file: Path) -> None:
        """How the study stands (what optimization_results.yaml says), after each batch."""

    def finish(self, study, best: list) -> None:
        """The study is complete; `best` holds its best trial, or its Pareto front, as
        FrozenTrials. Every command that sees the study complete calls it (a resumed one
        too, which may find the work done), so it must be idempotent: e.g. make the
        expensive records that only the best trials get, skipping what already exists.
        An exception is logged as a warning; the sweep still ends FINISHED."""

    def end(self, status: str, error: str | None = None) -> None:
        """This command's sweep ends: FINISHED, FAILED (error says why) or KILLED."""


def use_integration(integration) -> None:
    """Opt in: an Integration instance, a subclass, or "module:name" of either."""
    global _chosen
    _chosen = integration


def active_integration() -> Integration:
    """The integration of this process's sweeps: what use_integration() chose, built."""
    chosen = _chosen
    if chosen is None:
        return Integration()
    if isinstance(chosen, str):
        import importlib

        module, _, name = chosen.partition(":")
        chosen = getattr(importlib.import_module(module), name)
    return chosen() if isinstance(chosen, type) else chosen
