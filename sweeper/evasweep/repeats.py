"""Repeats over seeds (`hydra.sweeper.repeats=N`): one trial, N jobs, one value.

Each trial runs as N jobs that differ only in the app's seed (`hydra.sweeper.seed_key`,
default `seed`): seed s, s+1, ..., s+N-1 from the seed the sweep's config has. The
trial's value is the mean of its seeds' values (per objective); the sample standard
deviation and each seed's value are trial user attrs (`std`, `seed_values`).

Every job records its own outcome in the study (a user attr per seed), so whichever of a
trial's jobs ends last tells the trial, as a single job does without repeats; the sweep
process settles it again from the launcher's returns (a no-op when a job was first).
A seed that fails fails its trial; a pruned seed prunes it.

Pruning decides on the mean over the seeds: each job records its curve (a user attr per
seed); at an epoch that every seed of the trial has reached, the mean is reported as the
trial's intermediate value, and the pruner judges that. Seeds that run side by side
(joblib, SLURM, Ray, workers) are judged as they train; seeds that run one after another
(the basic launcher) only during the last seed, once the others' curves are complete.
"""

import math
import statistics

SEED_ATTR = "evasweep_seed."  # + repeat index: {"seed": s, "values": [...]} of a finished job
CURVE_ATTR = "evasweep_curve."  # + repeat index: [[step, value], ...] reported so far
STD_ATTR = "std"  # sample std over the seeds: a float, or a list for several objectives
SEED_VALUES_ATTR = "seed_values"  # {seed: value (or [values])}


def seeds(base: int, n: int) -> list[int]:
    """The seeds of a trial's n jobs: repeat k trains seed base + k (repeat 0 is the
    run without repeats, so repeats=1 changes nothing)."""
    return [base + k for k in range(n)]


def attr_key(key: str, repeat: int, repeats: int) -> str:
    """Where a job of repeat `repeat` keeps its own user attr `key`: `key.k` with repeats,
    so that the seeds of one trial do not overwrite each other's."""
    return key if repeats <= 1 else f"{key}.{repeat}"


def mean_and_std(rows: list[list[float]]) -> tuple[list[float], list[float]]:
    """Per objective: the mean and the sample standard deviation (0 for one seed)."""
    columns = list(zip(*rows, strict=True))
    means = [math.fsum(c) / len(c) for c in columns]
    stds = [statistics.stdev(c) if len(c) > 1 else 0.0 for c in columns]
    return means, stds


def recorded(attrs: dict, n: int) -> dict[int, dict]:
    """{repeat: {"seed", "values"}} of the seeds whose job completed, from user attrs."""
    found = {}
    for k in range(n):
        entry = attrs.get(f"{SEED_ATTR}{k}")
        if entry is not None:
            found[k] = entry
    return found


def _one(values: list[float]):
    return values[0] if len(values) == 1 else values


def settle(study, trial, n: int, outcomes: dict[int, tuple]):
    """Record the seeds' outcomes and tell the trial once it can be told: FAIL when a
    seed failed, PRUNED when one was pruned, COMPLETE with the means once every seed's
    values are recorded. outcomes: {repeat: (seed, state, values, error)}. Returns the
    trial as stored."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    from evasweep.outcome import tell

    storage = study._storage
    trial_id = trial._trial_id
    stored = storage.get_trial(trial_id)
    if stored.state.is_finished():
        return stored
    try:
        for k, (seed, state, values, _) in sorted(outcomes.items()):
            if state == TrialState.COMPLETE and f"{SEED_ATTR}{k}" not in stored.user_attrs:
                storage.set_trial_user_attr(
                    trial_id, f"{SEED_ATTR}{k}", {"seed": seed, "values": list(values)}
                )
    except UpdateFinishedTrialError:  # another seed's job ended the trial meanwhile
        return storage.get_trial(trial_id)
    for _, (seed, state, _, error) in sorted(outcomes.items()):
        if state == TrialState.FAIL:
            return tell(study, trial, state, None, f"seed {seed} failed: {error}")
    if any(state == TrialState.PRUNED for _, state, _, _ in outcomes.values()):
        return tell(study, trial, TrialState.PRUNED, None, None)
    done = recorded(storage.get_trial(trial_id).user_attrs, n)
    if len(done) < n:
        return storage.get_trial(trial_id)  # the other seeds' jobs tell it
    rows = [done[k]["values"] for k in range(n)]
    means, stds = mean_and_std(rows)
    try:
        storage.set_trial_user_attr(trial_id, STD_ATTR, _one(stds))
        by_seed = {str(done[k]["seed"]): _one(done[k]["values"]) for k in range(n)}
        storage.set_trial_user_attr(trial_id, SEED_VALUES_ATTR, by_seed)
    except UpdateFinishedTrialError:
        return storage.get_trial(trial_id)
    return tell(study, trial, TrialState.COMPLETE, means, None)


def report_mean(storage, trial_id: int, repeat: int, n: int, curve: list, value, step: int):
    """A seed's intermediate value: appended to its curve; once every seed has reached
    `step`, their mean is the trial's intermediate value there. Returns the curve."""
    curve = [*curve, [int(step), float(value)]]
    storage.set_trial_user_attr(trial_id, f"{CURVE_ATTR}{repeat}", curve)
    stored = storage.get_trial(trial_id)
    if step in stored.intermediate_values:
        return curve
    at_step = []
    for k in range(n):
        points = dict((s, v) for s, v in stored.user_attrs.get(f"{CURVE_ATTR}{k}", []))
        if step not in points:
            return curve  # a seed that has not got there yet reports the mean when it does
        at_step.append(points[step])
    storage.set_trial_intermediate_value(trial_id, step, math.fsum(at_step) / n)
    return curve


def best_repeat(trial, maximize: bool) -> int | None:
    """Which seed of a trial with repeats did best on its (first) value: where the sweep
    takes the trial's reports and model from. None for a trial without repeats."""
    done = recorded(trial.user_attrs, len(trial.user_attrs.get(SEED_VALUES_ATTR) or ()))
    if not done:
        return None
    sign = 1 if maximize else -1
    return max(sorted(done), key=lambda k: sign * done[k]["values"][0])


def attr_of(trial, key: str, repeat: int | None):
    """A job's user attr `key` on its trial: of seed `repeat`, or the trial's own (None)."""
    return trial.user_attrs.get(key if repeat is None else f"{key}.{repeat}")


def all_of(attrs: dict, key: str) -> list:
    """Every job's user attr `key` of a trial: its own, or one per seed with repeats."""
    return [v for k, v in sorted(attrs.items()) if (k == key or k.startswith(f"{key}.")) and v]
