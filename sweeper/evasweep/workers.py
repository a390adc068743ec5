"""Async workers: G sweep processes share one study, no batch waits for its slowest trial.

    evasweep --workers 4 --train my_app.py hydra.sweeper.n_trials=40   (or --module pkg)

runs `python my_app.py -m <overrides>` (hydra/sweeper=eva_optuna) as G worker processes:
  1. worker 0 starts first and creates the study (once, no race);
  2. the other workers start as soon as it has; each asks for its next trial as soon as its
     last one ends, with its own sampler stream and its own slot (which jobs run at once
     where: eva gives slot k GPU k). Together they stop at n_trials finished trials:
     running trials of other workers count, and a trial that fails or dies is run again
     by whoever is free;
  3. the worker that sees the study complete writes optimization_results.yaml and ends
     the sweep for the app's integration; after a failure or Ctrl-C, a last short
     process ends it FAILED / KILLED.
A killed worker's trial is failed at once by the others (evasweep/stale.py); when this
launcher itself is killed, its workers get SIGTERM and stop as after Ctrl-C.
On several machines, run the same command on each with one database storage
(hydra.sweeper.storage=postgresql://...), or let an engine start the workers there:
`--launcher submitit_slurm` (or an app's preset, e.g. eva's slurm_gpu) makes each worker
a SLURM job, `--launcher ray` a Ray task (evasweep/engines.py).
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

from evasweep.errors import SweepError
from evasweep.runner import (
    OUTCOME_ENV,
    PLACED_ENV,
    READY_ENV,
    ROLE_ENV,
    WORKER_ENV,
    WORKERS_ENV,
)
from evasweep.stale import LAUNCHER_ENV

# Hydra's default sweep dir holds ${now:...}, which each worker would resolve on its own.
SWEEP_DIR = "multirun/{stamp}"


def parse_args(argv: list[str], prog: str, module: str | None, epilog: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run G Optuna workers on one study (hydra/sweeper=eva_optuna).",
        epilog=epilog,
    )
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--train", type=Path, default=None, help="the Hydra app's script")
    parser.add_argument(
        "--module", default=module, help=f"python -m MODULE instead (default: {module})"
    )
    parser.add_argument(
        "--launcher",
        default=None,
        help="run each worker as a job of an engine: a hydra/launcher option of the app "
        "(submitit_slurm, submitit_local, ray, or a preset of them); default: processes here",
    )
    args, overrides = parser.parse_known_args(argv)
    if args.workers < 1:
        parser.error(f"--workers={args.workers}: need at least 1")
    if args.train is not None and not args.train.is_file():
        parser.error(f"--train={args.train}: no such file")
    if args.train is None and args.module is None:
        parser.error("give the app: --train my_app.py or --module my_package")
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


def main(
    argv: list[str] | None = None,
    prog: str = "evasweep",
    module: str | None = None,
    sweep_dir: str = SWEEP_DIR,
    epilog: str = "Other arguments are the app's overrides, e.g. hydra.sweeper.n_trials=40.",
) -> int:
    """The launcher; an app's own (eva-sweep) passes its module and sweep dir pattern."""
    args = parse_args(sys.argv[1:] if argv is None else argv, prog, module, epilog)
    entry = [str(args.train)] if args.train is not None else ["-m", args.module]
    command = [sys.executable, *entry, "-m", *args.overrides]
    if not any(o.startswith("hydra.sweep.dir=") for o in args.overrides):
        # One sweep dir for all workers; job folders are trial numbers, so none clash.
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        command.append("hydra.sweep.dir=" + sweep_dir.format(stamp=stamp))

    started = time.perf_counter()
    interrupted = False
    if args.launcher is not None:
        codes, interrupted = run_on_engine(args, entry, command, prog)
        if codes is None:
            return 1
    else:
        codes, interrupted = run_here(args, command)
        if isinstance(codes, int):
            return codes
    failed = [c for c in codes if c != 0]
    outcome = "KILLED" if interrupted else ("FAILED" if failed else "FINISHED")
    if outcome != "FINISHED":  # no worker saw the study complete: end the sweep here
        run_role(command, "finalize", {OUTCOME_ENV: outcome})
    print(
        f"{prog}: {args.workers} workers, exit codes {codes}, "
        f"{time.perf_counter() - started:.1f}s; {outcome}",
        file=sys.stderr,
    )
    if interrupted:
        return 130
    return failed[0] if failed else 0


def run_here(args, command: list[str]):
    """Workers as processes of this machine: (exit codes, interrupted), or an exit code
    when worker 0 stopped before the study existed."""
    with tempfile.TemporaryDirectory() as tmp:
        ready = Path(tmp) / "ready"  # worker 0 creates it once the study exists
        procs = [start_worker(command, 0, args.workers, {READY_ENV: str(ready)})]
        try:
            while not ready.exists() and procs[0][0].poll() is None:
                time.sleep(0.1)
        except KeyboardInterrupt:
            procs[0][0].wait()
            return 130, True
        if not ready.exists():  # it stopped before opening the study: its error is shown
            procs[0][1].join(timeout=5)
            return procs[0][0].returncode, False
        procs += [start_worker(command, i, args.workers) for i in range(1, args.workers)]
        return wait_all(procs)


def run_on_engine(args, entry: list[str], command: list[str], prog: str):
    """Workers as jobs of the engine of --launcher: (exit codes, interrupted); (None, False)
    when the launcher is refused or worker 0 stopped before the study existed."""
    from evasweep import engines

    (pattern,) = [o.split("=", 1)[1] for o in command if o.startswith("hydra.sweep.dir=")]
    # In its job a worker runs its trials one after another, on what the engine gave it.
    worker = [c for c in command if not engines.is_launcher_override(c)]
    worker.append("hydra/launcher=basic")
    try:
        config, sweep_dir = engines.launcher_config(
            [sys.executable, *entry], args.launcher, args.overrides, pattern
        )
        engine = engines.open_engine(config, args.launcher)
    except SweepError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return None, False
    sweep_dir = Path(sweep_dir).absolute()  # engine jobs may start in another folder
    sweep_dir.mkdir(parents=True, exist_ok=True)
    ready = sweep_dir / f".ready-{os.getpid()}"  # on the file system the jobs share
    cwd = str(Path.cwd())

    def env(index: int) -> dict[str, str]:
        return {
            ROLE_ENV: "worker",
            WORKER_ENV: str(index),
            WORKERS_ENV: str(args.workers),
            **({PLACED_ENV: "1"} if engine.placed else {}),
            **({READY_ENV: str(ready)} if index == 0 else {}),
        }

    jobs = [engine.start(0, worker, env(0), cwd)]
    interrupted = False
    try:
        while not ready.exists() and engine.running(jobs[0]):
            time.sleep(0.5)
        if not ready.exists():
            code = engine.wait(jobs[0])
            print(
                f"{prog}: worker 0 stopped (exit {code}) before the study existed: see its log",
                file=sys.stderr,
            )
            return None, False
        jobs += [engine.start(i, worker, env(i), cwd) for i in range(1, args.workers)]
        codes = [engine.wait(job) for job in jobs]
    except KeyboardInterrupt:  # the jobs are not this process's children: stop them
        interrupted = True
        for job in jobs:
            engine.cancel(job)
        codes = [engine.wait(job) for job in jobs]
    finally:
        ready.unlink(missing_ok=True)
        engine.close()
    return codes, interrupted


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
