"""Optuna sweeps: the search space, the study, the sweep loop, the job side, eva-sweep."""
