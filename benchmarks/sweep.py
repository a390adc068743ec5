"""eva's Optuna sweep against the bare Optuna loop, and 2 workers x 1 thread vs 1 worker x 2.

    python benchmarks/sweep.py --quick                  # bare vs eva: 5 pairs, 8 trials each
    python benchmarks/sweep.py --pairs 9                # more pairs
    python benchmarks/sweep.py --compare workers        # 2 workers x 1 thread vs 1 x 2

--compare bare (the default): the same study of --trials one-epoch trials of session6 on
Fashion-MNIST, each side a fresh process in a fresh temporary folder, one torch thread:
  bare: this script's bare_loop(), written plainly: one process, the data loaded once, a
        TensorDataset and DataLoader, study.optimize over a training function, no tracking,
        no files. The same net (eva's Session6Net), images (the subsets eva draws),
        batch size, optimizer, one-cycle schedule, L1 term, search space and sampler seed.
  eva:  `python train.py -m hparams_search=optuna ...` with eva's defaults: an MLflow run per
        trial, checkpoints, results.json, and the reports and logged model for the best
        trial once the study is complete (report.trials=best), on an existing MLflow store
        (mlflow.db made once, unmeasured, and copied into each folder: the everyday case).
The pruner is off on both sides (every trial trains its epoch). One measurement is the wall
time of the whole process, launch to exit. --pairs runs bare, eva, bare, eva, ...; the JSON's
"ratio" is the median over the pairs of eva's wall time over bare's (1.0: eva costs
nothing), next to trials per hour of each side. Each side is checked: --trials COMPLETE
trials, the same parameters drawn by both, and on eva's side the reports and the MLflow
model made for the best trial and for no other; else the script stops with one line.

--compare workers: `eva-sweep --workers 2 ... threads=1` (two worker processes) against
`python train.py -m ... threads=2` (one process, trials one after another), the same study
on 2,000 images, --repeats runs of each alternated; its "ratio" is the one-process wall time
over the two workers'.

Data: Fashion-MNIST from $EVA_DATA (else data/ in the checkout), filled from the Debian
package dataset-fashion-mnist when missing; --compare workers falls back to dataset=synthetic.
"""

import argparse
import json
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import REPO, alternate, command_line, emit, machine, median, parser, publish, table

TRAIN = REPO / "train.py"
COMPARE = ("bare", "workers")

# --------------------------------------------------------------------------- bare vs eva
# What eva's defaults train (conf/model/session6.yaml, optimizer/sgd.yaml,
# scheduler/onecycle.yaml, dataset/fashion_mnist.yaml, train.yaml): the bare loop uses the
# same numbers, and tests/test_benchmark_sweep.py checks that they still agree.
SEED = 1  # eva's `seed`: the subsets, the initial weights, the sampler's seed
BATCH = 128  # images per step
LR = 0.05  # SGD's lr; the one-cycle schedule sets every step's LR from max_lr
SGD = {"momentum": 0.9, "nesterov": True, "weight_decay": 5.0e-4}
ONECYCLE = {
    "pct_start": 0.25,
    "div_factor": 10.0,
    "final_div_factor": 100.0,
    "anneal_strategy": "linear",
    "base_momentum": 0.85,
    "max_momentum": 0.95,
}
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST's, in [0, 1] units
BARE_SIDES = {"bare": "bare Optuna loop", "eva": "eva's default sweep"}


def suggest(trial) -> dict:
    """The search of conf/hparams_search/optuna.yaml, asked the way a bare loop asks."""
    return {
        "scheduler.max_lr": trial.suggest_float("scheduler.max_lr", 0.005, 0.5, log=True),
        "model.dropout": trial.suggest_float("model.dropout", 0.0, 0.3),
        "l1_weight": trial.suggest_categorical("l1_weight", [0.0, 1e-6, 1e-5, 1e-4]),
    }


def bare_loop(trials: int, root: Path, train_subset: int, test_subset: int, threads: int) -> dict:
    """eva's sweep written plainly: one process, the data loaded once, no tracking, no
    files. Returns each trial's value, params and seconds of its training loop (timed as
    eva times an epoch: the loop over the batches), in trial order."""
    import numpy as np
    import optuna
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset
    from torchvision.datasets import FashionMNIST

    from eva.models.session6 import Session6Net  # the same net
    from evasweep.sampling import derived_seed

    torch.set_num_threads(threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    def split(train: bool, n: int) -> TensorDataset:
        data = FashionMNIST(str(root), train=train, download=False)
        # the subset eva draws for seed 1 (eva/data/__init__.py split_indices)
        rng = np.random.default_rng([SEED, 0 if train else 1])
        pick = torch.from_numpy(np.sort(rng.permutation(len(data.data))[:n]))
        images = data.data[pick].float().div(255).sub(MEAN).div(STD).unsqueeze(1)  # N,1,28,28
        return TensorDataset(images, data.targets[pick])

    train_set, test_set = split(True, train_subset), split(False, test_subset)

    @torch.no_grad()
    def accuracy(model) -> float:
        model.eval()
        correct = sum(
            (model(x).argmax(1) == y).sum().item() for x, y in DataLoader(test_set, BATCH)
        )
        return correct / len(test_set)

    train_seconds = []

    def objective(trial) -> float:
        p = suggest(trial)
        torch.manual_seed(SEED)
        model = Session6Net(in_channels=1, num_classes=10, dropout=p["model.dropout"])
        weights = [m.weight for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
        order = torch.Generator().manual_seed(SEED)
        loader = DataLoader(train_set, BATCH, shuffle=True, generator=order)
        optimizer = torch.optim.SGD(model.parameters(), lr=LR, **SGD)
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=p["scheduler.max_lr"], total_steps=len(loader), **ONECYCLE
        )
        model.train()
        start = time.perf_counter()
        for x, y in loader:  # one epoch
            loss = F.cross_entropy(model(x), y)
            if p["l1_weight"]:
                loss = loss + p["l1_weight"] * sum(w.abs().sum() for w in weights)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        train_seconds.append(time.perf_counter() - start)
        return accuracy(model)

    # the seed eva's sweeper gives its sampler for a new study (evasweep/sampling.py)
    sampler = optuna.samplers.TPESampler(seed=derived_seed(SEED, 0, 0), constant_liar=True)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=trials)
    return {
        "values": [t.value for t in study.trials],
        "params": [t.params for t in study.trials],
        "train_seconds": sum(train_seconds),
    }


def eva_command(trials: int, root: Path, train_subset: int, test_subset: int, threads: int):
    """eva's side, as a user types it: its defaults, the pruner off as on the bare side."""
    return [
        sys.executable,
        str(TRAIN),
        "-m",
        "hparams_search=optuna",
        "hydra/sweeper/pruner=none",
        f"hydra.sweeper.n_trials={trials}",
        "model=session6",
        *data_overrides("fashion_mnist", root, train_subset, test_subset),
        "epochs=1",
        "progress=false",
        f"threads={threads}",
    ]


def bare_command(trials: int, root: Path, train_subset: int, test_subset: int, threads: int):
    args = {"trials": trials, "root": str(root), "train_subset": train_subset}
    args.update(test_subset=test_subset, threads=threads)
    return [sys.executable, str(Path(__file__).resolve()), "--bare-run", json.dumps(args)]


def make_store(folder: Path) -> Path:
    """An MLflow sqlite store with eva's experiment, as a folder that ran eva before has;
    made in a process of its own, unmeasured (creating one takes seconds)."""
    db = folder / "mlflow.db"
    code = (
        "import sys; from eva.tracking.store import prepare_experiment; "
        "prepare_experiment(sys.argv[1], 'eva', 10.0)"
    )
    subprocess.run([sys.executable, "-c", code, f"sqlite:///{db}"], env=child_env(), check=True)
    return db


def eva_artefacts(folder: Path) -> dict:
    """Which trials of the study in folder/optuna.log got the reports and the MLflow model,
    and the seconds of their training loops (results.json's epoch_seconds):
    {"best": n, "reports": [trial numbers], "models": [...], "params": [...],
    "train_seconds": s}."""
    import optuna

    from evasweep.storage import open_storage

    storage = open_storage(f"journal:///{folder / 'optuna.log'}")
    (name,) = optuna.get_all_study_names(storage)
    study = optuna.load_study(study_name=name, storage=storage)
    reports, models, train_seconds = [], [], 0.0
    for t in study.get_trials(deepcopy=False):
        results = json.loads((Path(t.user_attrs["output_dir"]) / "results.json").read_text())
        train_seconds += sum(row["epoch_seconds"] for row in results["history"])
        if results["artefacts"]["reports"] == "made" and results.get("reports"):
            reports.append(t.number)
        if results["artefacts"]["model"] == "made" and results.get("mlflow_model_uri"):
            models.append(t.number)
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    return {
        "best": study.best_trial.number,
        "reports": reports,
        "models": models,
        "params": [t.params for t in trials],
        "train_seconds": train_seconds,
    }


def same_params(a: list[dict], b: list[dict]) -> bool:
    """Both sides drew the same trials (floats equal to 1e-9, as JSON round-trips them)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b, strict=True):
        if x.keys() != y.keys():
            return False
        if any(abs(float(x[k]) - float(y[k])) > 1e-9 * max(1.0, abs(float(x[k]))) for k in x):
            return False
    return True


def check_bare(side: str, rc: int, facts: dict | None, trials: int, log: Path) -> str | None:
    """Why a side of the bare comparison failed (one line), or None."""
    shown = BARE_SIDES[side]
    if rc != 0:
        return f"{shown}: exit code {rc}; see {log}"
    n = len((facts or {}).get("params", []))
    if n != trials:
        return f"{shown}: {n} trials, expected {trials}; see {log}"
    if side == "eva" and facts.get("states", {}).get("COMPLETE") != trials:
        return f"{shown}: trials by state {facts.get('states')}, expected {trials} COMPLETE"
    if side == "eva" and not facts["reports"] == facts["models"] == [facts["best"]]:
        return (
            f"{shown}: reports for trials {facts['reports']} and models for {facts['models']}, "
            f"expected the best trial {facts['best']} only; see {log}"
        )
    return None


def run_bare_side(side: str, command: list[str], store: Path, trials: int, keep: bool) -> dict:
    """One run of a side in a fresh folder (eva's with a copy of the store); its facts."""
    folder = Path(tempfile.mkdtemp(prefix=f"eva-bench-{side}-"))
    if side == "eva":
        shutil.copy(store, folder / "mlflow.db")
    rc, wall, log = run_logged(command, folder)
    facts, problem = None, None
    try:
        if rc == 0 and side == "bare":
            facts = json.loads(log.read_text().strip().splitlines()[-1])
        elif rc == 0:
            facts = {**eva_artefacts(folder), "states": study_summary(folder)["states"]}
    except Exception as e:  # no study, unreadable output: the side failed
        problem = (
            f"{BARE_SIDES[side]}: cannot read its results ({type(e).__name__}: {e}); see {log}"
        )
    problem = problem or check_bare(side, rc, facts, trials, log)
    if problem:
        sys.exit(f"sweep.py: {problem}")  # the folder stays, for the log
    print(
        f"  {BARE_SIDES[side]}: {wall:.1f} s, {trials / wall * 3600:.0f} trials/hour"
        + (f", reports and model for trial {facts['best']} only" if side == "eva" else "")
        + (f", kept {folder}" if keep else ""),
        flush=True,
    )
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return {"wall": wall, **facts}


def summarize_bare(runs: dict[str, list[dict]], trials: int) -> dict:
    """The pairs' ratios eva / bare and their median; each side's median wall time; and the
    wall time split into training loops and the rest ("outside"), which the machine's
    noise moves less: eva's extra seconds outside the loops, and the ratio they alone give
    (as if eva's loops had taken the bare loop's time in that pair)."""
    both = list(zip(runs["bare"], runs["eva"], strict=True))
    pairs = [round(e["wall"] / b["wall"], 3) for b, e in both]
    wall = {side: median([r["wall"] for r in records]) for side, records in runs.items()}
    extra = [(e["wall"] - e["train_seconds"]) - (b["wall"] - b["train_seconds"]) for b, e in both]
    alone = [1 + x / b["wall"] for x, (b, _) in zip(extra, both, strict=True)]
    loops = [e["train_seconds"] / b["train_seconds"] for b, e in both]
    return {
        "ratio": round(median(pairs), 3),
        "pair_ratios": pairs,
        "bare_seconds": [round(r["wall"], 1) for r in runs["bare"]],
        "eva_seconds": [round(r["wall"], 1) for r in runs["eva"]],
        "bare_train_seconds": [round(r["train_seconds"], 1) for r in runs["bare"]],
        "eva_train_seconds": [round(r["train_seconds"], 1) for r in runs["eva"]],
        "extra_seconds": round(median(extra), 2),
        "ratio_outside": round(median(alone), 3),
        "loop_ratio": round(median(loops), 3),
        "bare_trials_per_hour": round(trials / wall["bare"] * 3600),
        "eva_trials_per_hour": round(trials / wall["eva"] * 3600),
        "same_params": all(same_params(b["params"], e["params"]) for b, e in both),
        "trials": trials,
    }


def compare_bare(args, root: Path) -> dict:
    why = fashion_mnist_missing(root)
    if why:
        sys.exit(f"sweep.py: --compare bare needs Fashion-MNIST: not loadable from {root} ({why})")
    sizes = (args.trials, root, args.train_subset, args.test_subset, 1)
    commands = {"bare": bare_command(*sizes), "eva": eva_command(*sizes)}
    print(
        f"{args.trials} trials of 1 epoch, fashion_mnist, train {args.train_subset} / test "
        f"{args.test_subset} images, 1 torch thread, {args.pairs} pairs; eva's side:\n  "
        + " ".join(shown_overrides(commands["eva"][2:])),
        flush=True,
    )
    warm_caches()
    template = Path(tempfile.mkdtemp(prefix="eva-bench-store-"))
    store = make_store(template)
    runs: dict[str, list[dict]] = {side: [] for side in BARE_SIDES}

    def side(name: str):
        def run() -> float:
            record = run_bare_side(name, commands[name], store, args.trials, args.keep)
            runs[name].append(record)
            return record["wall"]

        return run

    try:
        alternate({name: side(name) for name in BARE_SIDES}, args.pairs, warmup=0)
    finally:
        shutil.rmtree(template, ignore_errors=True)
    result = summarize_bare(runs, args.trials)
    r = result
    columns = ("bare_seconds", "eva_seconds", "bare_train_seconds", "eva_train_seconds")
    rows = [
        [i + 1, f"{bw:.1f}", f"{ew:.1f}", f"{ratio:.3f}", f"{bt:.1f}", f"{et:.1f}",
         f"{bw - bt:.1f}", f"{ew - et:.1f}"]
        for i, (bw, ew, bt, et, ratio) in enumerate(
            zip(*(r[c] for c in columns), r["pair_ratios"], strict=True)
        )
    ]  # fmt: skip
    middle = [median(r[c]) for c in columns]
    rows.append(
        ["median", *(f"{m:.1f}" for m in middle[:2]), f"**{r['ratio']:.3f}**",
         *(f"{m:.1f}" for m in middle[2:]), "", ""]
    )  # fmt: skip
    results = table(
        ["pair", "bare loop s", "eva sweep s", "eva / bare", "bare training s",
         "eva training s", "bare rest s", "eva rest s"],
        rows,
    )  # fmt: skip
    per_hour = (
        f"Trials per hour (1-epoch trials, medians): bare {r['bare_trials_per_hour']}, "
        f"eva {r['eva_trials_per_hour']}. Same parameters drawn by both sides: "
        f"{'yes' if r['same_params'] else 'no'}. eva made the reports and the MLflow "
        "model for the best trial only, every time."
    )
    split = (
        "Training s: the trials' loops over their batches (each side times them the same "
        "way); rest s: the wall time outside them. eva's training loops took "
        f"{r['loop_ratio']:.3f}x the bare loop's, and eva spent {r['extra_seconds']:+.1f} s "
        f"more outside them per sweep ({r['extra_seconds'] / args.trials:+.2f} s per trial; "
        f"medians of the pairs): with the bare loop's training time, eva / bare = "
        f"{r['ratio_outside']:.3f}."
    )
    summary = f"ratio = eva wall / bare wall = {r['ratio']:.3f} (median of {args.pairs} pairs)"
    print(f"\n{results}\n\n{per_hour}\n\n{split}\n\n{summary}")
    if args.publish:
        setup = (
            f"{args.trials} trials of 1 epoch, session6 on Fashion-MNIST, train "
            f"{args.train_subset} / test {args.test_subset} images, 1 torch thread; eva's side: "
            f"`python train.py -m {' '.join(shown_overrides(commands['eva'][3:]))}`"
        )
        markdown = "\n\n".join([setup + ".", results, per_hour, split, summary + "."])
        publish("sweeps.md", "sweep-bare", markdown, command_line(__file__, args.argv))
    return result


WORKERS = 2  # side A's processes; side B uses as many threads in one process
SIDES = {  # JSON key -> how it is shown
    "two_workers": f"eva-sweep, {WORKERS} workers x 1 thread",
    "one_worker": f"train.py -m, 1 worker x {WORKERS} threads",
}
# Environment of a sweep eva itself may have set (when this runs inside a job): not passed on.
KEEP_ENV = ("EVA_DATA",)
DROP_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_RUN_ID")


def data_root() -> Path:
    """Where the jobs look for data: $EVA_DATA, else data/ in the checkout (absolute, since
    the jobs run in a temporary folder)."""
    return Path(os.environ.get("EVA_DATA") or REPO / "data").expanduser().absolute()


def fashion_mnist_missing(root: Path) -> str | None:
    """None when eva loads Fashion-MNIST from root without a download, else why not.

    Loading it here also unpacks the Debian copy once, so neither side pays for that.
    """
    from eva.data.datasets import fashion_mnist
    from eva.errors import EvaError

    try:
        for train in (True, False):
            fashion_mnist(train, root, download=False)
    except (EvaError, OSError) as e:
        return str(e).splitlines()[0]
    return None


def data_overrides(dataset: str, root: Path, train_subset: int, test_subset: int) -> list[str]:
    if dataset == "synthetic":  # generated: its sizes are the sizes
        return [
            "dataset=synthetic",
            f"dataset.train_size={train_subset}",
            f"dataset.test_size={test_subset}",
        ]
    return [
        f"dataset={dataset}",
        f"dataset.root={root}",
        f"dataset.train_subset={train_subset}",
        f"dataset.test_subset={test_subset}",
    ]


def sweep_overrides(trials: int, data: list[str]) -> list[str]:
    """What both sides train: a tiny study of `trials` one-epoch trials."""
    return [
        "hparams_search=optuna",
        "hydra/sweeper/pruner=none",  # a pruned trial is not COMPLETE and trains less
        f"hydra.sweeper.n_trials={trials}",
        "model=session6",
        *data,
        "epochs=1",
        "progress=false",
        "report.enabled=false",
        "tracking.log_model=false",
    ]


def side_command(side: str, overrides: list[str], python: str = sys.executable) -> list[str]:
    """The command of one side. eva-sweep runs as `python -m eva.sweep.workers` (what the
    eva-sweep script runs) so that both sides use this interpreter and this checkout."""
    if side == "two_workers":
        launcher = ["-m", "eva.sweep.workers", f"--workers={WORKERS}", f"--train={TRAIN}"]
        return [python, *launcher, *overrides, "threads=1"]
    if side == "one_worker":
        return [python, str(TRAIN), "-m", *overrides, f"threads={WORKERS}"]
    raise ValueError(f"side {side!r}: expected one of {', '.join(SIDES)}")


def shown(command: list[str]) -> str:
    """A command as people type it: `eva-sweep` / `python train.py`, shared overrides elided."""
    if command[1:3] == ["-m", "eva.sweep.workers"]:
        return f"eva-sweep {command[3]} ... {command[-1]}"
    return f"python train.py -m ... {command[-1]}"


def shown_overrides(overrides: list[str]) -> list[str]:
    """The overrides as the docs show them: the data folder of this machine as <root>."""
    return ["dataset.root=<root>" if o.startswith("dataset.root=") else o for o in overrides]


def child_env() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in DROP_ENV and (not key.startswith("EVA_") or key in KEEP_ENV)
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def run_logged(command: list[str], folder: Path) -> tuple[int, float, Path]:
    """Run command in folder, its output to folder/sweep.log: (exit code, wall s, log)."""
    log = folder / "sweep.log"
    with open(log, "w") as out:
        out.write(f"$ {shlex.join(command)}\n")
        out.flush()
        start = time.perf_counter()
        rc = subprocess.call(
            command, cwd=folder, env=child_env(), stdout=out, stderr=subprocess.STDOUT
        )
        return rc, time.perf_counter() - start, log


def children_cpu() -> float:
    """CPU seconds (user + system) of all waited-for child processes so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine_busy() -> float | None:
    """CPU seconds all processes on this machine have used since boot (from /proc/stat:
    everything but idle and iowait, steal included); None where there is no /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return None
    ticks = [int(f) for f in fields[:8]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def study_summary(folder: Path) -> dict:
    """The one study in folder/optuna.log: trials by state, and how many processes trained
    its COMPLETE trials (user attribute job_process, set by eva for each job)."""
    import optuna

    from evasweep.storage import open_storage

    storage = open_storage(f"journal:///{folder / 'optuna.log'}")
    names = optuna.get_all_study_names(storage)
    if len(names) != 1:
        raise RuntimeError(f"{folder / 'optuna.log'} holds {len(names)} studies, expected 1")
    study = optuna.load_study(study_name=names[0], storage=storage)
    states: dict[str, int] = {}
    processes = set()
    for trial in study.get_trials(deepcopy=False):
        states[trial.state.name] = states.get(trial.state.name, 0) + 1
        job = trial.user_attrs.get("job_process")
        if trial.state.name == "COMPLETE" and isinstance(job, dict):
            processes.add((job.get("host"), job.get("pid")))
    return {"study": names[0], "states": states, "processes": len(processes)}


def logged_threads(folder: Path) -> list[str]:
    """The distinct `threads` params of the trials' MLflow runs in folder/mlflow.db."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{folder / 'mlflow.db'}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, "tags.mlflow.parentRunId != ''", max_results=1000)
    return sorted({run.data.params.get("threads", "?") for run in runs})


def check(side: str, rc: int, summary: dict | None, trials: int, log: Path) -> str | None:
    """Why a side failed (one line), or None."""
    if rc != 0:
        return f"{SIDES[side]}: exit code {rc}; see {log}"
    complete = (summary or {}).get("states", {}).get("COMPLETE", 0)
    if complete != trials:
        states = (summary or {}).get("states")
        return f"{SIDES[side]}: {complete} COMPLETE trials, expected {trials} ({states}); see {log}"
    return None


def run_side(side: str, command: list[str], trials: int, keep: bool) -> dict:
    """Run one side in a fresh folder, output to its sweep.log; its measurements."""
    folder = Path(tempfile.mkdtemp(prefix=f"eva-bench-sweep-{side}-"))
    cpu_before, busy_before = children_cpu(), machine_busy()
    rc, wall, log = run_logged(command, folder)
    cpu = children_cpu() - cpu_before
    busy = machine_busy()
    # CPU the rest of the machine took meanwhile (other users' jobs): > 0.2 cores is noise.
    others = None if busy is None else max(0.0, (busy - busy_before - cpu) / wall)
    summary, threads, problem = None, [], None
    try:
        summary = study_summary(folder) if rc == 0 else None
        threads = logged_threads(folder) if rc == 0 else []
    except Exception as e:  # no study, unreadable store: the side failed
        problem = f"{SIDES[side]}: cannot read its results ({type(e).__name__}: {e}); see {log}"
    problem = problem or check(side, rc, summary, trials, log)
    if problem:
        sys.exit(f"sweep.py: {problem}")  # the folder stays, for the log
    complete = summary["states"].get("COMPLETE", 0)
    print(
        f"  {SIDES[side]}: {wall:.1f} s, {complete}/{trials} COMPLETE, "
        f"{summary['processes']} process(es), cpu {cpu / wall:.2f} cores, threads={threads}"
        + (f", others took {others:.2f} cores" if others is not None else "")
        + (f", kept {folder}" if keep else ""),
        flush=True,
    )
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    return {
        "wall": wall,
        "cpu_seconds": cpu,
        "others_cores": others,
        "complete": complete,
        "states": summary["states"],
        "processes": summary["processes"],
        "threads_logged": threads,
    }


def warm_caches() -> None:
    """Import what every job imports once, unmeasured, so the first side measured does not
    pay for reading torch, MLflow and Optuna from a cold disk."""
    subprocess.run(
        [sys.executable, "-c", "import torch, torchvision, mlflow, optuna, hydra, eva.cli"],
        env=child_env(),
        stdout=subprocess.DEVNULL,
        check=False,
    )


def summarize(runs: dict[str, list[dict]], trials: int) -> dict:
    """Medians over the repeats of each side, and the ratio B / A of their wall times."""
    wall = {side: median([r["wall"] for r in records]) for side, records in runs.items()}
    cpu = {  # cores used: median over the runs of CPU seconds / wall seconds
        side: median([r["cpu_seconds"] / r["wall"] for r in records])
        for side, records in runs.items()
    }
    return {
        "ratio": round(wall["one_worker"] / wall["two_workers"], 3),
        "two_workers_seconds": round(wall["two_workers"], 1),
        "one_worker_seconds": round(wall["one_worker"], 1),
        "two_workers_per_trial_seconds": round(wall["two_workers"] / trials, 2),
        "one_worker_per_trial_seconds": round(wall["one_worker"] / trials, 2),
        "two_workers_cpu_cores": round(cpu["two_workers"], 2),
        "one_worker_cpu_cores": round(cpu["one_worker"], 2),
        "two_workers_complete": [r["complete"] for r in runs["two_workers"]],
        "one_worker_complete": [r["complete"] for r in runs["one_worker"]],
        "two_workers_processes": [r["processes"] for r in runs["two_workers"]],
        "one_worker_processes": [r["processes"] for r in runs["one_worker"]],
        "two_workers_threads_logged": runs["two_workers"][-1]["threads_logged"],
        "one_worker_threads_logged": runs["one_worker"][-1]["threads_logged"],
        "two_workers_others_cores": others(runs["two_workers"]),
        "one_worker_others_cores": others(runs["one_worker"]),
        "trials": trials,
    }


def others(records: list[dict]) -> list[float | None]:
    """CPU cores other processes took during each run of a side (rounded)."""
    return [None if r["others_cores"] is None else round(r["others_cores"], 2) for r in records]


def compare_workers(args, root: Path) -> dict:
    dataset, note = args.dataset, None
    if dataset == "fashion_mnist":
        why = fashion_mnist_missing(root)
        if why:
            dataset, note = "synthetic", f"Fashion-MNIST not loadable from {root} ({why})"
            print(f"note: {note}; using dataset=synthetic", flush=True)
    overrides = sweep_overrides(
        args.trials, data_overrides(dataset, root, args.train_subset, args.test_subset)
    )
    commands = {side: side_command(side, overrides) for side in SIDES}

    print(
        f"{args.trials} trials of 1 epoch, {dataset}, train {args.train_subset} / test "
        f"{args.test_subset} images, {args.repeats} run(s) per side; shared overrides:\n  "
        + " ".join(overrides),
        flush=True,
    )
    warm_caches()
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}

    def side(name: str):
        def run() -> float:
            record = run_side(name, commands[name], args.trials, args.keep)
            runs[name].append(record)
            return record["wall"]

        return run

    alternate({name: side(name) for name in SIDES}, args.repeats, warmup=0)
    result = summarize(runs, args.trials)

    rows = []
    for name in SIDES:
        wall = result[f"{name}_seconds"]
        rows.append(
            [
                SIDES[name],
                f"`{shown(commands[name])}`",
                f"{wall:.1f}",
                f"{result[f'{name}_per_trial_seconds']:.2f}",
                "/".join(str(c) for c in result[f"{name}_complete"]) + f" of {args.trials}",
            ]
        )
    results = table(["how", "command", "wall s", "per trial s", "trials COMPLETE"], rows)
    print(f"\n{results}")
    busiest = max((c for side in SIDES for c in result[f"{side}_others_cores"] if c), default=0)
    noisy = f"other processes took up to {busiest:.2f} cores during a run: noisy"
    if busiest > 0.2:
        print(f"\nwarning: {noisy}")
    summary = (
        f"ratio = 1x{WORKERS} wall / {WORKERS}x1 wall = {result['ratio']:.2f} "
        f"(> 1: {WORKERS} one-thread workers are faster; medians of {args.repeats} run(s))"
    )
    print(f"\n{summary}")
    if args.publish:
        setup = (
            f"{args.trials} trials of 1 epoch, {dataset}, train {args.train_subset} / test "
            f"{args.test_subset} images, {args.repeats} run(s) per side; shared overrides: "
            f"`{' '.join(shown_overrides(overrides))}`"
        )
        parts = [setup + ".", results, summary + "."]
        parts += [f"Warning: {noisy}."] if busiest > 0.2 else []
        markdown = "\n\n".join(parts)
        publish("sweeps.md", "sweep-workers", markdown, command_line(__file__, args.argv))
    result.update(
        compare="workers",
        dataset=dataset,
        train_subset=args.train_subset,
        test_subset=args.test_subset,
        repeats=args.repeats,
        note=note,
        machine=machine(),
    )
    return result


def main(argv: list[str] | None = None) -> dict:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--compare", choices=COMPARE, default="bare", help="bare (default) | workers")
    p.add_argument("--trials", type=int, default=8, help="trials of the study (default 8)")
    p.add_argument("--pairs", type=int, default=None, help="bare: bare/eva pairs (default 5)")
    p.add_argument("--repeats", type=int, default=1, help="workers: runs of each side")
    p.add_argument("--train-subset", type=int, default=None, help="training images per trial")
    p.add_argument("--test-subset", type=int, default=1000, help="test images per trial")
    p.add_argument("--dataset", default="fashion_mnist", help="workers: fashion_mnist | synthetic")
    p.add_argument("--keep", action="store_true", help="keep each run's folder (and its log)")
    p.add_argument("--bare-run", metavar="JSON", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.bare_run:  # one bare side, in a process of its own (run_bare_side starts it)
        spec = json.loads(args.bare_run)
        return emit(bare_loop(spec["trials"], Path(spec["root"]), spec["train_subset"],
                              spec["test_subset"], spec["threads"]))  # fmt: skip
    args.argv = argv
    # --quick: the figure the docs quote (5 pairs); without it, more pairs for a tighter median
    args.pairs = args.pairs or (5 if args.quick else 9)
    if args.train_subset is None:  # the study: ~10 s trials, so trials dominate
        args.train_subset = 5000 if args.compare == "bare" else 2000
    if min(args.trials, args.pairs, args.repeats, args.train_subset, args.test_subset) < 1:
        p.error("--trials, --pairs, --repeats and the subsets must be at least 1")
    # --threads (from common.parser) would change what is compared: both sides set their own.
    if args.threads:
        p.error("--threads: each side sets its own (bare: 1 each; workers: 1 per worker, 2 alone)")
    root = data_root()
    if args.compare == "workers":
        result = compare_workers(args, root)
    else:
        result = compare_bare(args, root)
        result.update(
            compare="bare",
            train_subset=args.train_subset,
            test_subset=args.test_subset,
            pairs=args.pairs,
            machine=machine(),
        )
    return emit(result)


if __name__ == "__main__":
    main()
