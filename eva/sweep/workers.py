"""eva-sweep: G independent Optuna workers on one study; no batch waits for its slowest trial.

    eva-sweep --workers 4 hparams_search=optuna model=session6 hydra.sweeper.n_trials=40

runs `python -m eva -m <overrides>` as G worker processes:
  1. worker 0 starts first and creates the study and its MLflow parent run (once, no race);
  2. the other workers start as soon as it has; each asks for its next trial as soon as its
     last one ends, with its own sampler stream and its own slot (GPU k, or 1/G of the CPU
     cores). Together they stop at n_trials finished trials: running trials of other workers
     count, and a trial that fails or dies is run again by whoever is free;
  3. the worker that sees the study complete writes optimization_results.yaml and ends the
     parent run; after a failure or Ctrl-C, a last short process ends it FAILED / KILLED.
A killed worker's trial is failed at once by the others (eva/sweep/stale.py); when eva-sweep
itself is killed, its workers get SIGTERM and stop as after Ctrl-C.
On several machines, run the same command on each with one PostgreSQL storage
(hydra.sweeper.storage=postgresql://...) and one MLflow server (tracking.uri=http://...).
"""

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from eva.sweep.runner import OUTCOME_ENV, READY_ENV, ROLE_ENV
from eva.sweep.stale import LAUNCHER_ENV
from eva.sweep.trial import WORKER_ENV, WORKERS_ENV


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="eva-sweep",
        description="Run G Optuna workers on one study (python -m eva -m, eva_optuna sweeper).",
        epilog="Other arguments are eva overrides, e.g. hparams_search=optuna epochs=5.",
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument(
        "--train", type=Path, default=None, help="a script to run instead of python -m eva"
    )
    args, overrides = parser.parse_known_args(argv)
    if args.workers < 1:
        parser.error(f"--workers={args.workers}: need at least 1")
    if args.train is not None and not args.train.is_file():
        parser.error(f"--train={args.train}: no such file")
    args.overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    return args


def _pump(stream, prefix: str) -> None:
    for line in iter(stream.readline, ""):
        sys.stdout.write(f"{prefix}{line}")
        sys.stdout.flush()


def run_role(command: list[str], role: str, extra_env: dict | None = None) -> int:
    env = {**os.environ, ROLE_ENV: role, **(extra_env or {})}
    return subprocess.run(command, env=env).returncode


def start_worker(command: list[str], index: int, workers: int, extra_env: dict | None = None):
    env = {
        **os.environ,
        ROLE_ENV: "worker",
        LAUNCHER_ENV: str(os.getpid()),
        WORKER_ENV: str(index),
        WORKERS_ENV: str(workers),
        **(extra_env or {}),
    }
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )
    pump = threading.Thread(target=_pump, args=(proc.stdout, f"[w{index}] "), daemon=True)
    pump.start()
    return proc, pump


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    entry = [str(args.train)] if args.train is not None else ["-m", "eva"]
    command = [sys.executable, *entry, "-m", *args.overrides]
    if not any(o.startswith("hydra.sweep.dir=") for o in args.overrides):
        # One sweep dir for all workers; job folders are trial numbers, so none clash.
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        command.append(f"hydra.sweep.dir=multirun/${{name}}/{stamp}")

    started = time.perf_counter()
    interrupted = False
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"  # worker 0 creates it once the study and parent exist
        procs = [start_worker(command, 0, args.workers, {READY_ENV: str(ready)})]
        try:
            while not ready.exists() and procs[0][0].poll() is None:
                time.sleep(0.1)
        except KeyboardInterrupt:
            procs[0][0].wait()
            return 130
        if not ready.exists():  # it stopped before opening the study: its error is shown
            procs[0][1].join(timeout=5)
            return procs[0][0].returncode
        procs += [start_worker(command, i, args.workers) for i in range(1, args.workers)]
        codes, interrupted = wait_all(procs)
    failed = [c for c in codes if c != 0]
    outcome = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
    if outcome != "FINISHED":  # no worker saw the study complete: end its parent run here
        run_role(command, "finalize", {OUTCOME_ENV: outcome})
    print(
        f"eva-sweep: {args.workers} workers, exit codes {codes}, "
        f"{time.perf_counter() - started:.1f}s; {outcome}",
        file=sys.stderr,
    )
    if interrupted:
        return 130
    return failed[0] if failed else 0


def wait_all(procs) -> tuple[list[int], bool]:
    """Exit codes of all workers, and whether Ctrl-C came while waiting."""
    interrupted = False
    try:
        codes = [proc.wait() for proc, _ in procs]
    except KeyboardInterrupt:  # Ctrl-C reached the workers too; let them end their trials
        interrupted = True
        for proc, _ in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        codes = [proc.wait() for proc, _ in procs]
    for _, pump in procs:
        pump.join(timeout=5)
    return codes, interrupted


if __name__ == "__main__":
    sys.exit(main())
