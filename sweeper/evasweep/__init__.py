"""evasweep: an Optuna sweeper for any Hydra app (`hydra/sweeper=eva_optuna`).

In a job of a sweep:

    from evasweep import TrialPruned, current_trial

    trial = current_trial()            # None outside a sweep
    trial.report(accuracy, epoch)      # intermediate values, for the pruner
    if trial.should_prune():
        raise TrialPruned()

An app that adds its own bookkeeping to sweeps: evasweep.integration.
"""

from evasweep.integration import Integration, use_integration
from evasweep.job import current_trial

__all__ = ["Integration", "TrialPruned", "current_trial", "use_integration"]


def __getattr__(name: str):
    if name == "TrialPruned":  # Optuna's own: the sweeper marks the trial PRUNED
        from optuna import TrialPruned

        return TrialPruned
    raise AttributeError(f"module 'evasweep' has no attribute {name!r}")
