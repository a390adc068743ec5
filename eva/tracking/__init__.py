"""MLflow tracking: every run a recorded MLflow run, every multirun a parent with children."""

from eva.tracking.run import Launch, Tracker

__all__ = ["Launch", "Tracker"]
