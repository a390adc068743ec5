"""The sweep loop of `hydra/sweeper=eva_optuna`: ask Optuna, launch jobs, tell Optuna.

    until the study has n_trials finished (COMPLETE + PRUNED) trials:
        mark trials whose process died FAIL (evasweep/stale.py)
        ask for as many trials as are missing, at most n_jobs (running ones count)
        launch them (basic launcher: one after another; joblib: in parallel)
        tell Optuna how each ended: its value(s), PRUNED, or FAIL

n_trials is the study's total, so the same command after a crash runs only what is
missing, and several processes (workers, other machines) share one study. evasweep.workers
runs the same command as several workers (EVASWEEP_ROLE=worker): the first one signals
when the study exists (EVASWEEP_READY), and whichever worker sees the study complete ends
the sweep for the app's integration (evasweep/integration.py).
"""

import importlib.util
import logging
import math
import os
import signal
import socket
import threading
import time
from pathlib import Path

from evasweep import study as studies
from evasweep.errors import SweepError
from evasweep.heartbeat import Heartbeat
from evasweep.job import (
    HEARTBEAT_ENV,
    JOB_ATTR,
    OBJECTIVES_ENV,
    PRUNER_ATTR,
    REPEAT_ENV,
    REPEATS_ENV,
    SEED_ENV,
    STORAGE_ENV,
    STUDY_ENV,
    TRIAL_ID_ENV,
    TRIAL_NUMBER_ENV,
)
from evasweep.outcome import outcome, tell
from evasweep.overrides import quoted
from evasweep.repeats import seeds, settle
from evasweep.sampling import build_sampler, derived_seed
from evasweep.space import (
    describe,
    from_search_space,
    grid,
    parse_space,
    probe_values,
    probes,
    single_probe,
    trial_overrides,
)
from evasweep.stale import DeadTrials, is_gone, stop_with_launcher

log = logging.getLogger(__name__)

ROLE_ENV = "EVASWEEP_ROLE"  # worker | finalize (evasweep.workers); unset: one plain command
READY_ENV = "EVASWEEP_READY"  # a file the first worker creates once the study is open
OUTCOME_ENV = "EVASWEEP_OUTCOME"  # finalize: how the sweep ends (FINISHED by default)
WORKER_ENV = "EVASWEEP_WORKER"  # set by evasweep.workers in each worker process: its index
WORKERS_ENV = "EVASWEEP_WORKERS"  # and how many workers run on this machine
PLACED_ENV = "EVASWEEP_PLACED"  # 1: an engine gave this worker devices of its own
# Launchers whose engine gives each job devices of its own (SLURM sets CUDA_VISIBLE_DEVICES
# per job, Ray per num_gpus): their jobs are slot 0 of 1. The others (basic, joblib,
# submitit_local) run a batch side by side on one machine's devices: slot k of n.
OWN_DEVICES = ("SlurmLauncher", "RayLauncher", "RayAWSLauncher")
MAX_REDRAWS = 20  # draws of an already-run parameter set before the space counts as exhausted
DIRECTIONS = ("maximize", "minimize")
# Samplers whose Optuna class imports a package Optuna does not require (at its first draw).
SAMPLER_NEEDS = {
    "optuna.samplers.CmaEsSampler": ("cmaes",),
    "optuna.samplers.QMCSampler": ("scipy",),
    "optuna.samplers.GPSampler": ("torch", "scipy"),
}


def _params_key(params: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in params.items()))


def job_dir(ret) -> str:
    """The job's own output folder (its log), from Hydra's JobReturn."""
    try:
        return str(ret.hydra_cfg.hydra.runtime.output_dir)
    except AttributeError:  # a launcher that returns no Hydra config, or a lost job
        return str(getattr(ret, "working_dir", None) or "the launcher's log")


def lost_jobs(error: Exception, n: int) -> list:
    """JobReturns for a batch the launcher could not bring back (a job killed, out of
    memory or cancelled makes submitit raise for the whole batch)."""
    from hydra.core.utils import JobReturn, JobStatus

    returns = []
    for _ in range(n):
        ret = JobReturn(status=JobStatus.FAILED)
        ret.return_value = error
        returns.append(ret)
    return returns


def launch_dir_of(hydra_cfg) -> Path:
    """The folder the command was started in (Hydra's runtime.cwd; the process's own working
    directory when Hydra did not record one): relative paths of the sweep start there."""
    return Path(hydra_cfg.runtime.get("cwd") or os.getcwd())


def directions_of(direction, default: str) -> list[str]:
    """hydra.sweeper.direction: maximize | minimize | a list of them | null (the app's)."""
    if direction is None:
        return [default]
    given = [direction] if isinstance(direction, str) else list(direction)
    names = [str(getattr(d, "name", d)).lower() for d in given]  # the official plugin's enum
    if not names or any(d not in DIRECTIONS for d in names):
        raise SweepError(
            f"hydra.sweeper.direction={direction}: expected maximize, minimize or a list "
            "of them (one per value the task returns)"
        )
    return names


def objectives_of(objectives, directions: list[str]) -> list[str] | None:
    """hydra.sweeper.objectives: None, or one distinct name per direction."""
    if objectives is None:
        return None
    names = [objectives] if isinstance(objectives, str) else [str(n) for n in objectives]
    if len(names) != len(directions) or len(set(names)) != len(names) or not all(names):
        raise SweepError(
            f"hydra.sweeper.objectives={names}: expected {len(directions)} distinct name(s), "
            f"one per direction (hydra.sweeper.direction={directions}); a study of several "
            "objectives sets both, e.g. direction=[maximize,minimize]"
        )
    return names


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


class StudyRunner:
    def __init__(self, settings, config, launcher, validate_batch, integration):
        self.s = settings  # the sweeper's config node (hydra.sweeper)
        self.config = config
        self.launcher = launcher
        self.validate_batch = validate_batch  # list of override lists -> composed configs
        self.app = integration
        self.launch_dir = launch_dir_of(config.hydra)
        self.sweep_dir = self.launch_dir / config.hydra.sweep.dir
        self.role = os.environ.get(ROLE_ENV, "")
        self.worker = int(os.environ.get(WORKER_ENV, "0"))
        self.workers = int(os.environ.get(WORKERS_ENV, "1"))
        self.placed = os.environ.get(PLACED_ENV) == "1" or type(launcher).__name__ in OWN_DEVICES
        self.in_flight: list = []
        self.started = False  # the integration's start() ran: end() is owed
        self._logged_at = -1

    # ------------------------------------------------------------------ setup

    def check_settings(self) -> None:
        s = self.s
        self.directions = directions_of(s.direction, self.app.default_direction)
        self.objectives = objectives_of(s.get("objectives"), self.directions)
        self.repeats = s.get("repeats", 1)
        if not isinstance(self.repeats, int) or isinstance(self.repeats, bool) or self.repeats < 1:
            raise SweepError(
                f"hydra.sweeper.repeats={self.repeats}: expected a whole number >= 1 (the "
                "seeds each trial trains)"
            )
        if s.n_trials < 0 or s.n_jobs < 1:
            raise SweepError(
                f"hydra.sweeper.n_trials={s.n_trials}, n_jobs={s.n_jobs}: need n_trials >= 0 "
                "and n_jobs >= 1"
            )
        if not 0.0 <= s.max_failure_rate <= 1.0:
            raise SweepError(f"hydra.sweeper.max_failure_rate={s.max_failure_rate}: not in [0, 1]")
        pruner = str(s.pruner._target_) if s.get("pruner") else ""
        if len(self.directions) > 1 and not pruner.endswith("NopPruner"):
            raise SweepError(
                f"hydra.sweeper.pruner={pruner.rsplit('.', 1)[-1]}: Optuna cannot prune a "
                f"multi-objective study ({len(self.directions)} directions); use "
                "hydra/sweeper/pruner=none"
            )
        target = str(s.sampler._target_)
        missing = [m for m in SAMPLER_NEEDS.get(target, ()) if importlib.util.find_spec(m) is None]
        if missing:  # Optuna imports them only at its first model-based draw
            raise SweepError(
                f"hydra.sweeper.sampler={target.rsplit('.', 1)[-1]} needs the Python "
                f"package(s) {', '.join(missing)}, which are not installed "
                f"(pip install {' '.join(missing)})"
            )
        self.extend = None
        if s.get("custom_search_space"):
            from hydra.utils import get_method

            try:
                self.extend = get_method(s.custom_search_space)
            except Exception as e:
                # Hydra's ImportError says "Error loading 'm.f':" on its first line; why is
                # in its cause (No module named 'm', or the module's own error)
                cause = e.__cause__ or e
                reason = type(cause).__name__
                if str(cause):
                    reason += f": {str(cause).splitlines()[0]}"
                raise SweepError(
                    f"hydra.sweeper.custom_search_space={s.custom_search_space}: cannot import "
                    f"it ({reason}); expected module.function(cfg, trial)"
                ) from None

    def trial_seeds(self) -> list[int] | None:
        """hydra.sweeper.repeats > 1: the seeds of each trial's jobs, from the seed the
        sweep's config (or a fixed override) has; None without repeats."""
        if self.repeats <= 1:
            return None
        key = self.s.get("seed_key") or "seed"
        where = f"hydra.sweeper.repeats={self.repeats}"
        if key in self.space.distributions:
            raise SweepError(
                f"{where} trains seeds of {key} itself: {key} cannot also be searched "
                f"({key}={describe(self.space.distributions[key])}); remove it from the params"
            )
        if key in self.space.fixed:
            base = self.space.fixed[key].split("=", 1)[1]
        else:
            from omegaconf import OmegaConf

            base = OmegaConf.select(self.config, key, default=None)
        try:
            base = int(str(base))
        except ValueError:
            raise SweepError(
                f"{where}: the seed {key}={base} is not a whole number; repeats train seeds "
                f"{key}, {key}+1, ... (hydra.sweeper.seed_key names the app's seed key)"
            ) from None
        return seeds(base, self.repeats)

    def params(self) -> dict | None:
        """hydra.sweeper.params; or the older search_space form, read as params."""
        s = self.s
        if s.get("search_space") is None:
            return s.params
        if s.params is not None:
            log.warning("hydra.sweeper.params and search_space both given: search_space ignored")
            return s.params
        log.warning("hydra.sweeper.search_space is deprecated: write hydra.sweeper.params")
        return from_search_space(s.search_space)

    def open(self, arguments: list[str]):
        from hydra.utils import instantiate
        from omegaconf import OmegaConf

        s = self.s
        self.check_settings()
        if self.objectives:
            self.app.check_objectives(self.config, self.objectives)
        self.app.prepare(self.config, self.launch_dir)  # e.g. a process of its own, meanwhile
        self.space = parse_space(self.params(), arguments)
        if not self.space.distributions and self.extend is None:
            raise SweepError(
                "the Optuna sweep has nothing to search: give hydra.sweeper.params or a sweep "
                "override such as 'x=interval(-5, 5)'"
            )
        self.seeds = self.trial_seeds()
        self.n_trials = s.n_trials
        if str(s.sampler._target_).endswith("GridSampler"):
            size = math.prod(len(v) for v in grid(self.space).values())
            if size < self.n_trials:
                log.info("grid has %d points: n_trials %d -> %d", size, self.n_trials, size)
                self.n_trials = size
        self.check_composes()  # before the study or anything of the app exists
        default = self.app.default_storage(self.config, self.launch_dir)
        self.url = studies.resolve_storage(s.storage, default, self.launch_dir)
        ident = studies.identity(self.space, self.directions, self.app.in_identity)
        if self.repeats > 1:  # a mean over 3 seeds is not comparable with one seed's value
            ident["repeats"] = self.repeats
        if self.objectives:
            ident["objectives"] = self.objectives
        name = s.study_name or studies.default_study_name(self.app.study_prefix(self.config), ident)
        self.study, self.storage = studies.open_study_locked(
            self.url, name, ident, self.directions, s.heartbeat_interval, s.grace_period
        )
        names = self.objectives or self.app.metric_names(self.config)
        if names and len(names) == len(self.directions) and self.study.metric_names != names:
            self.study.set_metric_names(list(names))  # optuna-dashboard shows them
        n_existing = len(self.study.get_trials(deepcopy=False))
        host = socket.gethostname() if WORKERS_ENV in os.environ else ""  # workers only
        seed = derived_seed(s.sampler.get("seed"), n_existing, self.worker, host)
        self.study.sampler = build_sampler(s.sampler, self.space, seed)
        if s.get("pruner"):
            pruner = OmegaConf.to_container(s.pruner, resolve=True)
            self.study.pruner = instantiate(pruner)
            if self.study.user_attrs.get(PRUNER_ATTR) != pruner:
                self.study.set_user_attr(PRUNER_ATTR, pruner)  # where jobs find it (evasweep.job)
        os.environ[STORAGE_ENV] = self.url  # jobs of this machine inherit it (job_overrides)
        self.dead = DeadTrials(
            self.study, self.storage, self.app.trial_died, s.heartbeat_interval, s.grace_period
        )
        self.app.start(self.config, self.study, self.space, self.url, self.sweep_dir)
        self.started = True
        log.info(
            "study %s in %s: %d of %d trials finished; searching %s",
            name,
            studies.redact(self.url),
            studies.finished(studies.counts(self.study)),
            self.n_trials,
            ", ".join(f"{k}: {v}" for k, v in self.space.describe().items()) or "(custom)",
        )

    # ------------------------------------------------------------------ the loop

    def run(self, arguments: list[str]) -> dict:
        import warnings

        # Heartbeats are marked experimental, and meant for study.optimize(); the sweeper
        # records them itself for the trials it asks (evasweep.sampling.Heartbeat).
        from optuna.exceptions import ExperimentalWarning

        warnings.filterwarnings("ignore", category=ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")

        previous = None  # SIGTERM: stop like Ctrl-C, cleanly (only the main thread can)
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)
        stop_with_launcher()  # a worker: SIGTERM when its launcher dies, even by kill -9
        try:
            self.open(arguments)
            if os.environ.get(READY_ENV):
                Path(os.environ[READY_ENV]).touch()  # the launcher may start the others
            if self.role != "finalize":
                with Heartbeat(self.storage, self.s.heartbeat_interval) as heartbeat:
                    self.loop(heartbeat)
            else:  # after the workers: trials of a killed one are not left RUNNING
                self.dead.fail()
            result = self.report()
            running = result["counts"].get("running", 0)
            complete = result["finished"] >= self.n_trials and running == 0
            if complete:
                self.finish()
            if self.role == "" or (self.role == "worker" and complete):
                self.end("FINISHED")  # workers: the last one to see the study done
            elif self.role == "finalize":  # the study is what the sweep stands for
                self.end("FINISHED" if complete else os.environ.get(OUTCOME_ENV, "FINISHED"))
            return result
        except KeyboardInterrupt:
            self.abandon("interrupted (Ctrl-C or SIGTERM)", "KILLED")
            raise
        except BaseException as e:
            self.abandon(f"{type(e).__name__}: {e}", "FAILED")
            raise
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def loop(self, heartbeat: Heartbeat) -> None:
        from optuna.trial import TrialState

        launched = failed = 0
        error = None
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
            if not trials:  # other workers asked the rest at the same moment
                continue
            # repeats: each trial is a job per seed; slots count jobs
            jobs = [(trial, k) for trial in trials for k in range(self.repeats)]
            slots = parallel * self.repeats
            batch = [self.job_overrides(t, i % slots, slots, k) for i, (t, k) in enumerate(jobs)]
            if launched == 0:  # values between the bounds check_composes() composed
                self.check_composes(batch)
            try:
                returns = self.launcher.launch(batch, initial_job_idx=trials[0].number)
            except Exception as e:
                returns = self.lost(jobs, e)
            by_trial: dict[int, list] = {t.number: [] for t in trials}
            for (trial, _), ret in zip(jobs, returns, strict=True):
                by_trial[trial.number].append(ret)
            for trial in trials:
                heartbeat.trial_ids.discard(trial._trial_id)
                self.in_flight.remove(trial)
                rets = by_trial[trial.number]
                if any(ret is None for ret in rets):  # a job may still run: it tells the study
                    continue
                state, reason = self.tell(trial, rets)
                ret = next((r for r in rets if r.status.name == "FAILED"), rets[0])  # its log
                launched += 1
                if state == TrialState.FAIL:
                    failed, error = failed + 1, reason
                    log.warning("trial %d failed: %s (log: %s)", trial.number, error, job_dir(ret))
            self.report()
            if failed and failed / launched > self.s.max_failure_rate:
                raise SweepError(
                    f"{failed} of {launched} trials failed, more than "
                    f"hydra.sweeper.max_failure_rate={self.s.max_failure_rate}; last: {error}"
                )

    def lost(self, jobs, error: Exception) -> list:
        """The launcher raised instead of returning the batch (submitit does when one job
        was killed): trials their jobs told are read from the study; the others FAIL
        unless their job is still at work (it stamped the trial and beats), in which case
        they are left to it (None) and judged by evasweep/stale.py like any other."""
        from optuna.trial import TrialState

        reason = str(error).strip().splitlines()
        reason = f"{type(error).__name__}: {reason[-1] if reason else ''}"
        numbers = sorted({t.number for t, _ in jobs})
        log.warning("the launcher lost the batch of trials %s: %s", numbers, reason)
        returns = lost_jobs(RuntimeError(f"the launcher lost the job ({reason})"), len(jobs))
        for i, (trial, _) in enumerate(jobs):
            stored = self.storage.get_trial(trial._trial_id)
            if stored.state == TrialState.RUNNING and JOB_ATTR in stored.user_attrs:
                if not is_gone(stored.user_attrs[JOB_ATTR]):
                    returns[i] = None
        return returns

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
                self.dead.claim(trial)  # a same-host rerun sees at once when we are gone
                if self.extend is not None:  # define-by-run params: trial.suggest_*(...)
                    self.extend_space(trial)
                key = _params_key(trial.params)
                if key not in taken:
                    break
                trial.set_user_attr(studies.DUPLICATE, True)  # drawn again: not run or counted
                self.study.tell(trial, state=TrialState.FAIL)
                heartbeat.trial_ids.discard(trial._trial_id)
            else:
                raise SweepError(
                    f"the sampler drew {MAX_REDRAWS} parameter sets in a row that already ran: "
                    f"the search space looks exhausted ({self.study.study_name})"
                )
            taken.add(key)
            trials.append(trial)
            self.in_flight.append(trial)
        return self.drop_surplus(trials, heartbeat)

    def drop_surplus(self, trials: list, heartbeat: Heartbeat) -> list:
        """Workers that counted the missing trials at the same moment may together ask
        more than n_trials: the trials numbered beyond the n_trials-th live one are
        withdrawn (FAIL, `surplus`, not launched or counted), so the study stops at its
        total. Trial numbers are the study's order, the same for every worker."""
        from optuna.trial import TrialState

        alive = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        numbers = sorted(t.number for t in self.study.get_trials(False, states=alive))
        if len(numbers) <= self.n_trials:
            return trials
        last = numbers[self.n_trials - 1] if self.n_trials else -1
        kept = []
        for trial in trials:
            if trial.number <= last:
                kept.append(trial)
                continue
            trial.set_user_attr(studies.SURPLUS, True)
            self.study.tell(trial, state=TrialState.FAIL)
            heartbeat.trial_ids.discard(trial._trial_id)
            self.in_flight.remove(trial)
        return kept

    def extend_space(self, trial) -> None:
        """custom_search_space(cfg, trial); a function that fails fails its trial and the
        sweep, in one line (it would fail every trial the same way)."""
        from optuna.trial import TrialState

        try:
            self.extend(self.config, trial)
        except Exception as e:
            reason = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            trial.set_user_attr("error", reason[:1000])
            self.study.tell(trial, state=TrialState.FAIL)
            raise SweepError(
                f"hydra.sweeper.custom_search_space={self.s.custom_search_space} failed on "
                f"trial {trial.number} ({reason}); expected module.function(cfg, trial)"
            ) from None

    def job_overrides(self, trial, position: int, parallel: int, repeat: int = 0) -> list[str]:
        """The trial's values, and its identity in the job's env (evasweep.job): every
        launcher carries hydra.job.env_set to the job, in this process or another. With
        repeats, the job of seed `repeat` of the trial."""
        slot = self.worker * parallel + position  # which device / core share the job takes
        slots = self.workers * parallel
        if self.placed:  # the engine chose the job's devices: all it sees are its own
            slot, slots = 0, 1
        env = {
            # A URL with a password stays out of the overrides, which launchers log: the
            # job inherits it from this process (for other hosts: PGPASSWORD, ~/.pgpass).
            **({STORAGE_ENV: self.url} if studies.redact(self.url) == self.url else {}),
            STUDY_ENV: self.study.study_name,
            TRIAL_ID_ENV: str(trial._trial_id),  # Optuna's storage id; the public API has none
            TRIAL_NUMBER_ENV: str(trial.number),
            HEARTBEAT_ENV: str(self.s.heartbeat_interval or 0),
            **self.app.job_env(trial, slot, slots),
        }
        if self.objectives:
            env[OBJECTIVES_ENV] = ",".join(self.objectives)
        fixed = dict(self.space.fixed)
        subdir = str(trial.number)  # job folders never clash across commands
        seed_lines = []
        if self.seeds:
            key, seed = self.s.get("seed_key") or "seed", self.seeds[repeat]
            fixed.pop(key, None)  # the trial's seeds replace a fixed seed
            seed_lines = [f"{key}={seed}"]
            env.update({REPEAT_ENV: str(repeat), REPEATS_ENV: str(self.repeats)})
            env[SEED_ENV] = str(seed)
            subdir = f"{trial.number}/{key}{seed}"
        return [
            *fixed.values(),
            *trial_overrides(trial.params),
            *seed_lines,
            *(f"++hydra.job.env_set.{k}={quoted(v)}" for k, v in env.items()),
            f"hydra.sweep.subdir={subdir}",
            # absolute: a job may start in another folder (a Ray worker starts in ray's)
            f"hydra.sweep.dir={quoted(str(self.sweep_dir.absolute()))}",
        ]

    def check_composes(self, batch=None) -> None:
        """Fail the sweep at once, in one line, when trial overrides do not compose or give a
        config the app refuses (Integration.check_job).

        Without a batch (StudyRunner.open, before the study or anything of the app exists):
        every choice and both bounds of each range/interval of the search space, as few
        lists as the key with the most values needs (evasweep.space.probes); a list that
        fails is retried one moved value at a time, so the error names the value at
        fault. A bad choice fails the command up front, not when a trial draws it.
        """
        if batch is not None:
            for overrides in batch:
                if (reason := self._compose_error(overrides)) is not None:
                    raise SweepError(f"a sweep value is refused before any trial: {reason}")
            return
        for changes, overrides in probes(self.space):
            reason = self._compose_error(overrides)
            if reason is None:
                continue
            if not changes:  # the first values, which every other list shares
                i, reason = self._culprit(overrides, reason)
                key = (list(self.space.fixed) + list(self.space.distributions))[i]
                if key not in self.space.distributions:  # a fixed line of the params
                    reason = reason.removeprefix(f"{overrides[i]}: ")
                    raise SweepError(
                        f"a sweep value is refused before any trial: {overrides[i]}: {reason}"
                    )
                changes = {key: probe_values(self.space.distributions[key])[0]}
            elif len(changes) > 1:  # which of the moved values is at fault, one by one
                for key, value in changes.items():
                    alone = self._compose_error(single_probe(self.space, key, value))
                    if alone is not None:
                        changes, reason = {key: value}, alone
                        break
            if len(changes) > 1:  # each value composes alone: only together they do not
                lines = " ".join(trial_overrides(changes))
                raise SweepError(
                    f"sweep values are refused together before any trial: {lines}: {reason}"
                )
            ((key, value),) = changes.items()
            (line,) = trial_overrides({key: value})
            reason = reason.removeprefix(f"{line}: ")
            raise SweepError(
                f"a sweep value is refused before any trial: {line} (a value of {key}: "
                f"{describe(self.space.distributions[key])}): {reason}"
            )

    def _compose_error(self, overrides: list[str]) -> str | None:
        """None when the overrides compose into a job's config the app accepts, else why
        not, in one line."""
        from hydra.errors import HydraException
        from omegaconf.errors import OmegaConfBaseException

        try:
            for job in self.validate_batch([overrides]):
                self.app.check_job(job)
        except (HydraException, OmegaConfBaseException, SweepError, *self.app.user_errors) as e:
            return self.app.explain(e)
        return None

    def _culprit(self, overrides: list[str], reason: str) -> tuple[int, str]:
        """(index, why) of the line of `overrides` (which do not compose, for `reason`)
        after which a prefix of the list stops composing."""
        for n in range(1, len(overrides)):
            if (error := self._compose_error(overrides[:n])) is not None:
                return n - 1, error
        return len(overrides) - 1, reason

    def tell(self, trial, rets: list):
        """How the trial ended, as the storage holds it: its job(s) may have told it first.
        rets: the JobReturn of each of its jobs (one per seed with repeats)."""
        outcomes = [outcome(ret, len(self.directions)) for ret in rets]
        if self.seeds is None:
            stored = tell(self.study, trial, *outcomes[0])
        else:
            by_seed = {k: (self.seeds[k], *o) for k, o in enumerate(outcomes)}
            stored = settle(self.study, trial, self.repeats, by_seed)
        state, values = stored.state, stored.values
        error = stored.user_attrs.get("error", next((o[2] for o in outcomes if o[2]), None))
        shown = ", ".join(f"{v:.4f}" for v in values) if values else state.name
        log.info("trial %d: %s", trial.number, shown)
        return state, error

    # ------------------------------------------------------------------ the end

    def report(self) -> dict:
        result = studies.summary(self.study, self.n_trials, self.url, self.app.best_details)
        path = studies.write_summary(result, self.sweep_dir)
        if self.started:
            self.app.record(result, path)
        if result["finished"] != self._logged_at and (
            "best_trial" in result or "solutions" in result
        ):
            self._logged_at = result["finished"]  # once per change, not again at the end
            if "best_trial" in result:
                best = f"trial {result['best_trial']}, value {result['best_value']:.4f}, "
                best += str(result["best_params"])
            else:
                best = f"Pareto front of trials {[t['number'] for t in result['solutions']]}"
            log.info("best: %s (%d/%d finished)", best, result["finished"], self.n_trials)
        return result

    def finish(self) -> None:
        """The study is complete: the app's last work on its best trials (Integration.finish),
        in every command that sees it so, a resumed one too. Its failure is logged; the
        trials stay as they are and the sweep still ends FINISHED."""
        from optuna.trial import TrialState

        if not self.started:
            return
        complete = self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            return
        best = self.study.best_trials if len(self.directions) > 1 else [self.study.best_trial]
        try:
            self.app.finish(self.study, sorted(best, key=lambda t: t.number))
        except Exception as e:
            log.warning("the last work on the best trials failed: %s: %s", type(e).__name__, e)

    def end(self, status: str, error: str | None = None) -> None:
        if self.started:
            self.started = False
            self.app.end(status, error)

    def abandon(self, why: str, status: str) -> None:
        """Stopped early: in-flight trials FAIL (they rerun next time), the sweep ended."""
        if self.in_flight:
            self.dead.stop(self.in_flight, why)
        self.in_flight.clear()
        if self.started:
            try:
                self.report()
            except Exception as e:
                log.warning("could not write the sweep results: %s", e)
            self.end(status, why)
