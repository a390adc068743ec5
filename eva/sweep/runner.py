"""The sweep loop of `hydra/sweeper=eva_optuna`: ask Optuna, launch jobs, tell Optuna.

    until the study has n_trials finished (COMPLETE + PRUNED) trials:
        mark trials whose process died FAIL (eva/sweep/stale.py), end their MLflow runs
        ask for as many trials as are missing, at most n_jobs (running ones count)
        launch them (basic launcher: one after another; joblib: in parallel)
        tell Optuna how each ended: its value, PRUNED, or FAIL

n_trials is the study's total, so the same command after a crash runs only what is
missing, and several processes (eva-sweep workers, other machines) share one study.
eva-sweep runs the same command as several workers (EVA_SWEEP_ROLE=worker): the first one
signals when the study and its parent run exist (EVA_SWEEP_READY), and whichever worker
sees the study complete ends the parent run.
"""

import json
import logging
import math
import os
import signal
import socket
import time
from pathlib import Path

from eva.errors import EvaError
from eva.sweep import study as studies
from eva.sweep.sampling import Heartbeat, build_sampler, derived_seed
from eva.sweep.space import (
    describe,
    grid,
    parse_space,
    probe_values,
    probes,
    trial_overrides,
)
from eva.sweep.stale import DeadTrials, stop_with_launcher
from eva.sweep.trial import (
    SLOT_ENV,
    SLOTS_ENV,
    STUDY_ENV,
    TRIAL_ID_ENV,
    TRIAL_NUMBER_ENV,
    WORKER_ENV,
    WORKERS_ENV,
)
from eva.tracking.run import launch_dir_of

log = logging.getLogger(__name__)

ROLE_ENV = "EVA_SWEEP_ROLE"  # worker | finalize (eva-sweep); unset: one plain command
READY_ENV = "EVA_SWEEP_READY"  # a file the first worker creates once the study is open
OUTCOME_ENV = "EVA_SWEEP_OUTCOME"  # finalize: how the parent run ends (FINISHED by default)
MAX_REDRAWS = 20  # draws of an already-run parameter set before the space counts as exhausted


def _params_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def job_dir(ret) -> str:
    """The job's own output folder (its train.log), from Hydra's JobReturn."""
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except AttributeError:  # a launcher that returns no Hydra config
        return str(ret.working_dir)


class StudyRunner:
    def __init__(self, settings, config, launcher, validate_batch):
        self.s = settings  # the sweeper's config node (hydra.sweeper)
        self.config = config
        self.launcher = launcher
        self.validate_batch = validate_batch
        self.launch_dir = launch_dir_of(config.hydra)
        self.sweep_dir = self.launch_dir / config.hydra.sweep.dir
        self.role = os.environ.get(ROLE_ENV, "")
        self.worker = int(os.environ.get(WORKER_ENV, "0"))
        self.workers = int(os.environ.get(WORKERS_ENV, "1"))
        self.in_flight: list = []
        self.parent = None
        self._logged_at = -1

    # ------------------------------------------------------------------ setup

    def open(self, arguments: list[str]):
        from hydra.utils import instantiate

        from eva.sweep.parent import StudyParent

        s = self.s
        if s.direction not in ("maximize", "minimize"):
            raise EvaError(f"hydra.sweeper.direction={s.direction}: expected maximize or minimize")
        if s.n_trials < 0 or s.n_jobs < 1:
            raise EvaError(
                f"hydra.sweeper.n_trials={s.n_trials}, n_jobs={s.n_jobs}: need n_trials >= 0 "
                "and n_jobs >= 1"
            )
        if not 0.0 <= s.max_failure_rate <= 1.0:
            raise EvaError(f"hydra.sweeper.max_failure_rate={s.max_failure_rate}: not in [0, 1]")
        self.space = parse_space(s.params, arguments)
        if not self.space.distributions:
            raise EvaError(
                "the Optuna sweep has nothing to search: give hydra.sweeper.params or a sweep "
                "override such as 'model.dropout=interval(0, 0.5)'"
            )
        self.n_trials = s.n_trials
        if str(s.sampler._target_).endswith("GridSampler"):
            size = math.prod(len(v) for v in grid(self.space).values())
            if size < self.n_trials:
                log.info("grid has %d points: n_trials %d -> %d", size, self.n_trials, size)
                self.n_trials = size
        self.check_composes()  # before the study and the MLflow parent run exist
        self.url = studies.resolve_storage(s.storage, self.config.tracking, self.launch_dir)
        ident = studies.identity(self.space, s.direction)
        name = s.study_name or studies.default_study_name(self.config.name, ident)
        self.study, self.storage = studies.open_study_locked(
            self.url, name, ident, s.direction, s.heartbeat_interval, s.grace_period
        )
        n_existing = len(self.study.get_trials(deepcopy=False))
        host = socket.gethostname() if WORKERS_ENV in os.environ else ""  # eva-sweep only
        seed = derived_seed(s.sampler.seed, n_existing, self.worker, host)
        self.study.sampler = build_sampler(s.sampler, self.space, seed)
        self.study.pruner = instantiate(s.pruner)
        self.dead = DeadTrials(self.study, self.storage)
        os.environ[STUDY_ENV] = json.dumps({"storage": self.url, "study": name})
        self.parent = StudyParent.open(
            self.config, self.study, self.space, self.url, self.sweep_dir
        )
        self.dead.end_orphan_runs(self.parent.tracker)  # the store of the trials' runs
        log.info(
            "study %s in %s: %d of %d trials finished; searching %s",
            name,
            studies.redact(self.url),
            studies.finished(studies.counts(self.study)),
            self.n_trials,
            ", ".join(f"{k}: {v}" for k, v in self.space.describe().items()),
        )

    # ------------------------------------------------------------------ the loop

    def run(self, arguments: list[str]) -> dict:
        import warnings

        # Heartbeats are marked experimental, and meant for study.optimize(); eva records
        # them itself for the trials it asks (eva.sweep.sampling.Heartbeat).
        from optuna.exceptions import ExperimentalWarning

        from eva.tracking.run import install_sigterm_interrupt

        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")

        previous = install_sigterm_interrupt()  # SIGTERM: stop like Ctrl-C, cleanly
        stop_with_launcher()  # an eva-sweep worker: SIGTERM when eva-sweep dies, even by -9
        try:
            self.open(arguments)
            if os.environ.get(READY_ENV):
                Path(os.environ[READY_ENV]).touch()  # eva-sweep may start the other workers
            if self.role != "finalize":
                with Heartbeat(self.storage, self.s.heartbeat_interval) as heartbeat:
                    self.loop(heartbeat)
            else:  # eva-sweep after its workers: trials of a killed one are not left RUNNING
                self.dead.fail()
            result = self.report()
            running = result["counts"].get("running", 0)
            complete = result["finished"] >= self.n_trials and running == 0
            if self.role == "" or (self.role == "worker" and complete):
                self.parent.end("FINISHED")  # workers: the last one to see the study done
            elif self.role == "finalize":  # the study is what the parent run stands for
                self.parent.end("FINISHED" if complete else os.environ.get(OUTCOME_ENV, "FINISHED"))
            return result
        except KeyboardInterrupt:
            self.abandon("interrupted (Ctrl-C or SIGTERM)", "KILLED")
            raise
        except BaseException as e:
            self.abandon(f"{type(e).__name__}: {e}", "FAILED")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)

    def loop(self, heartbeat: Heartbeat) -> None:
        from optuna.trial import TrialState

        launched = failed = 0
        waiting_logged = False
        parallel = 1 if type(self.launcher).__name__ == "BasicLauncher" else self.s.n_jobs
        while True:
            self.dead.fail()
            by_state = studies.counts(self.study)
            done = studies.finished(by_state)
            missing = self.n_trials - done - by_state["RUNNING"]
            if done >= self.n_trials:
                return
            if missing <= 0:  # the rest is running in other processes: wait, they may fail
                if not waiting_logged:
                    log.info("waiting on %d trial(s) running elsewhere", by_state["RUNNING"])
                    waiting_logged = True
                time.sleep(self.s.poll_seconds)
                continue
            waiting_logged = False
            trials = self.ask(min(self.s.n_jobs, missing), heartbeat)
            batch = [self.job_overrides(t, i % parallel, parallel) for i, t in enumerate(trials)]
            if launched == 0:  # values between the bounds check_composes() composed
                self.check_composes(batch)
            returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            for trial, ret in zip(trials, returns, strict=True):
                state, error = self.tell(trial, ret)
                heartbeat.trial_ids.discard(trial._trial_id)
                self.in_flight.remove(trial)
                launched += 1
                if state == TrialState.FAIL:
                    failed += 1
                    log.warning("trial %d failed: %s (log: %s)", trial.number, error, job_dir(ret))
            self.report()
            if failed and failed / launched > self.s.max_failure_rate:
                raise EvaError(
                    f"{failed} of {launched} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.s.max_failure_rate}; last: {error}"
                )

    def ask(self, n: int, heartbeat: Heartbeat) -> list:
        """n new trials, none repeating a parameter set that finished or is running.

        A FAIL trial's set may come again (one whose process was killed may well succeed),
        but is not re-enqueued: its values may be what got it killed (OOM), and would loop.
        """
        from optuna.trial import TrialState

        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        taken = {_params_key(t.params) for t in self.study.get_trials(False, states=alive)}
        trials = []
        for _ in range(n):
            for _ in range(MAX_REDRAWS):
                trial = self.study.ask(self.space.distributions)
                heartbeat.add(trial._trial_id)
                key = _params_key(trial.params)
                if key not in taken:
                    self.dead.claim(trial)  # a same-host rerun sees at once when we are gone
                    break
                trial.set_user_attr("duplicate", True)  # drawn again: not run, not counted
                self.study.tell(trial, state=TrialState.FAIL)
                heartbeat.trial_ids.discard(trial._trial_id)
            else:
                raise EvaError(
                    f"the sampler drew {MAX_REDRAWS} parameter sets in a row that already ran: "
                    f"the search space looks exhausted ({self.study.study_name})"
                )
            taken.add(key)
            trials.append(trial)
            self.in_flight.append(trial)
        return trials

    def job_overrides(self, trial, position: int, parallel: int) -> list[str]:
        slot = self.worker * parallel + position  # which device / core share the job takes
        env = {
            TRIAL_ID_ENV: trial._trial_id,  # Optuna's storage id; the public API has none
            TRIAL_NUMBER_ENV: trial.number,
            SLOT_ENV: slot,
            SLOTS_ENV: self.workers * parallel,
        }
        return [
            *self.space.fixed.values(),
            *trial_overrides(trial.params),
            *(f"++hydra.job.env_set.{k}={v}" for k, v in env.items()),
            f"hydra.sweep.subdir={trial.number}",  # job folders never clash across commands
        ]

    def check_composes(self, batch=None) -> None:
        """Fail the sweep at once, in one line, when trial overrides do not compose or give a
        config eva refuses (eva.config.validate).

        Without a batch (StudyRunner.open, before the study or any MLflow run exists):
        every choice and both bounds of each range/interval of the search space, each in
        one list with the other keys at their first value (eva.sweep.space.probes), so a
        bad choice fails the command up front, not when a trial happens to draw it.
        """
        if batch is not None:
            for overrides in batch:
                if (reason := self._compose_error(overrides)) is not None:
                    raise EvaError(f"a sweep value is refused before any trial: {reason}")
            return
        for key, value, overrides in probes(self.space):
            reason = self._compose_error(overrides)
            if reason is None:
                continue
            if key is None:  # the first values, which every other list shares
                i, reason = self._culprit(overrides, reason)
                key = (list(self.space.fixed) + list(self.space.distributions))[i]
                if key not in self.space.distributions:  # a fixed line of the params
                    reason = reason.removeprefix(f"{overrides[i]}: ")
                    raise EvaError(
                        f"a sweep value is refused before any trial: {overrides[i]}: {reason}"
                    )
                value = probe_values(self.space.distributions[key])[0]
            (line,) = trial_overrides({key: value})
            reason = reason.removeprefix(f"{line}: ")
            raise EvaError(
                f"a sweep value is refused before any trial: {line} (a value of {key}: "
                f"{describe(self.space.distributions[key])}): {reason}"
            )

    def _compose_error(self, overrides: list[str]) -> str | None:
        """None when the overrides compose into a job's config, else why not, in one line."""
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        from eva.cli.errors import one_line

        try:
            self.validate_batch([overrides])
        except (HydraException, OmegaConfBaseException, EvaError) as e:
            return one_line(e)
        return None

    def _culprit(self, overrides: list[str], reason: str) -> tuple[int, str]:
        """(index, why) of the line of `overrides` (which do not compose, for `reason`)
        after which a prefix of the list stops composing."""
        for n in range(1, len(overrides)):
            if (error := self._compose_error(overrides[:n])) is not None:
                return n - 1, error
        return len(overrides) - 1, reason

    def tell(self, trial, ret):
        import optuna
        from optuna.trial import TrialState

        try:
            value = float(ret.return_value)  # re-raises the job's exception, if any
            if not math.isfinite(value):
                raise ValueError(f"objective is {value}")
            state, error = TrialState.COMPLETE, None
        except optuna.TrialPruned:
            state, error, value = TrialState.PRUNED, None, None
        except Exception as e:
            state, error, value = TrialState.FAIL, f"{type(e).__name__}: {e}", None
            trial.set_user_attr("error", error[:1000])
        try:
            self.study.tell(trial, value if state == TrialState.COMPLETE else None, state=state)
        except RuntimeError as e:  # GridSampler stops the study once the grid is done
            if "Study.stop" not in str(e):
                raise
        shown = f"{value:.4f}" if value is not None else state.name
        log.info("trial %d: %s", trial.number, shown)
        return state, error

    # ------------------------------------------------------------------ the end

    def report(self) -> dict:
        result = studies.summary(self.study, self.n_trials, self.url)
        path = studies.write_summary(result, self.sweep_dir)
        if self.parent is not None:
            self.parent.record(result, path)
        if "best_trial" in result and result["finished"] != self._logged_at:
            self._logged_at = result["finished"]  # once per change, not again at the end
            log.info(
                "best: trial %d, value %.4f, %s (%d/%d finished)",
                result["best_trial"],
                result["best_value"],
                result["best_params"],
                result["finished"],
                self.n_trials,
            )
        return result

    def abandon(self, why: str, status: str) -> None:
        """Stopped early: in-flight trials FAIL (they rerun next time), parent run ended."""
        if self.in_flight:
            self.dead.stop(self.in_flight, why)
        self.in_flight.clear()
        if self.parent is not None:
            try:
                self.report()
            except Exception as e:
                log.warning("could not write the sweep results: %s", e)
            self.parent.end(status, why)
