"""How a trial ended, from what its job returned, told to the study once.

The job tells the study itself when it ends (evasweep.job.JobReporter), so a job that
outlives its sweep process still counts; the sweep process tells it again from the
launcher's JobReturn, which is a no-op when the job was first (or the job could not reach
the storage). Either way the storage holds the one outcome both then read.
"""

import math


def returned(ret):
    """The job's return value, or its exception raised here. A pruned job is not reported
    as an error: JobReturn.return_value would print "Error executing job" first."""
    from hydra.core.utils import JobStatus

    error = getattr(ret, "_return_value", None)  # Hydra 1.3's JobReturn keeps it there
    if ret.status == JobStatus.FAILED and isinstance(error, BaseException):
        raise error
    return ret.return_value


def values_of(value, n: int) -> list[float]:
    """The task's return value as one float per direction (n), or ValueError why not."""
    try:  # a list, tuple, ListConfig, numpy array; else a float or what float() takes
        values = [value] if isinstance(value, str | dict) else list(value)
    except TypeError:
        values = [value]
    if len(values) != n:
        raise ValueError(f"the task returned {value!r}: {n} direction(s) need {n} float value(s)")
    try:
        values = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"the task returned {value!r}, not float value(s)") from None
    for v in values:
        if not math.isfinite(v):
            raise ValueError(f"objective is {v}")
    return values


def outcome(ret, n: int):
    """(TrialState, values or None, error or None) of a Hydra JobReturn, for n directions."""
    import optuna
    from optuna.trial import TrialState

    try:
        return TrialState.COMPLETE, values_of(returned(ret), n), None
    except optuna.TrialPruned:
        return TrialState.PRUNED, None, None
    except Exception as e:
        return TrialState.FAIL, None, f"{type(e).__name__}: {e}"


def tell(study, trial, state, values, error):
    """Tell the study how `trial` ended unless it already knows; the FrozenTrial it holds."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    try:
        if state == TrialState.FAIL and error:
            storage.set_trial_user_attr(trial._trial_id, "error", error[:1000])
        study.tell(trial, values, state=state, skip_if_finished=True)
    except UpdateFinishedTrialError:  # the job, or a sweep that judged it dead, was first
        pass
    except RuntimeError as e:  # GridSampler stops the study once the grid is done
        if "Study.stop" not in str(e):
            raise
    return storage.get_trial(trial._trial_id)
