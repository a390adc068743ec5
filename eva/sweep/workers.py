"""eva-sweep: G Optuna workers on one study of eva (evasweep.workers, for `python -m eva`).

    eva-sweep --workers 4 hparams_search=optuna model=session6 hydra.sweeper.n_trials=40

Each worker asks for its next trial as soon as its last one ends (no batch waits for its
slowest trial), in its own slot (GPU k, or 1/G of the CPU cores); the worker that sees the
study complete ends its MLflow parent run. On several machines, run the same command on
each with one PostgreSQL storage (hydra.sweeper.storage=postgresql://...) and one MLflow
server (tracking.uri=http://...).
"""

import sys

from evasweep.workers import main as workers_main


def main(argv: list[str] | None = None) -> int:
    return workers_main(
        argv,
        prog="eva-sweep",
        module="eva",
        sweep_dir="multirun/${{name}}/{stamp}",
        epilog="Other arguments are eva overrides, e.g. hparams_search=optuna epochs=5.",
    )


if __name__ == "__main__":
    sys.exit(main())
