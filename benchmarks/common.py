"""What every benchmark shares: --quick, A/B runs alternated, medians, a table, a JSON line.

Benchmarks are run by hand (`python benchmarks/NAME.py [--quick]`), never by the test suite
as a speed check: these machines are noisy. Each script prints a table for people and, as
its very last line, one JSON object for tools (`... | tail -1 | jq .ratio`). With
`--publish` it also writes its table into its generated block of the docs (publish()),
headed by the command, the machine and the date, so a figure in the docs always says
where it came from.
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout: train.py, conf/, eva/
DOCS = REPO / "docs"
for _folder in (REPO, REPO / "tools"):  # this eva, and tools/blocks.py, from anywhere
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

# Options that only say where results are stored: the published command leaves them out,
# since they name folders of the machine it ran on and change no figure.
STORAGE_OPTIONS = ("--uri", "--outputs", "--tracking-uri")


def parser(description: str, quick: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if quick:
        p.add_argument("--quick", action="store_true", help="fewer, smaller runs (< 1 minute)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument(
        "--publish", action="store_true", help="write the table into its block of the docs"
    )
    return p


def set_threads(threads: int | None) -> int:
    import torch

    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def alternate(sides: dict[str, Callable[[], float]], repeats: int, warmup: int = 1) -> dict:
    """Run each side `warmup` times unmeasured, then A, B, A, B, ... `repeats` times each.

    Every side returns its own measurement (seconds, or img/s); alternating spreads the
    machine's slow moments over both sides. Returns {side: [measurements]}.
    """
    for _ in range(warmup):
        for run in sides.values():
            run()
    measured: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(repeats):
        for name, run in sides.items():
            measured[name].append(run())
    return measured


def median(values: list[float]) -> float:
    return statistics.median(values)


def timed(fn: Callable[[], object]) -> float:
    """Seconds fn() takes (wall clock)."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def table(headers: list[str], rows: list[list]) -> str:
    """A markdown table (pastes into the README as it is)."""
    cells = [[str(c) for c in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "| " + " | ".join("-" * w for w in widths) + " |"
    return "\n".join([line(cells[0]), rule, *map(line, cells[1:])])


def cpu_model() -> str | None:
    """The processor's name: /proc/cpuinfo's model name on Linux, else platform's."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def counted(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def machine_line(facts: dict) -> str:
    """machine() in words: "2 CPU cores (Intel Xeon), 2 torch threads, torch 2.x, no GPU"."""
    cores = counted(facts["cpu_count"], "CPU core")
    cores += f" ({facts['cpu']})" if facts.get("cpu") else ""
    gpu = f"GPU {facts['cuda']}" if facts.get("cuda") else "no GPU"
    threads = counted(facts["threads"], "torch thread")
    return f"{cores}, {threads}, torch {facts['torch']}, {gpu}"


def command_line(script: str, argv: list[str] | None) -> str:
    """How the benchmark was run, as people type it: `python benchmarks/NAME.py ARGS`,
    without --publish and the storage options (STORAGE_OPTIONS)."""
    args = list(sys.argv[1:] if argv is None else argv)
    shown, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        name = arg.split("=", 1)[0]
        if name in STORAGE_OPTIONS:
            skip = name == arg  # `--uri X`: X goes too; `--uri=X` is one word
        elif arg != "--publish":
            shown.append(arg)
    return shlex.join(["python", f"benchmarks/{Path(script).name}", *shown])


def publish(page: str, block: str, markdown: str, command: str, date: str | None = None) -> bool:
    """Write a benchmark's markdown into block `block` of a docs page (a name in docs/, or a
    path), under one line that says what ran, on what machine, and when.

    `date` (YYYY-MM-DD, or a range) is when the figures were measured: today unless the
    figures were read back from runs made earlier. Returns whether the page changed; a page
    without the block's markers is refused (tools/blocks.py raises, naming both).
    """
    from blocks import replace_block

    path = Path(page) if Path(page).is_absolute() else DOCS / page
    when = date or datetime.date.today().isoformat()
    header = f"Measured {when} with `{command}` on {machine_line(machine())}."
    changed = replace_block(path, block, f"{header}\n\n{markdown.strip()}\n")
    # on stderr: a benchmark's last line of stdout is its JSON
    said = "" if changed else " (unchanged)"
    print(f"published block {block} in {path}{said}", file=sys.stderr)
    return changed


def emit(result: dict) -> dict:
    """The last line of a benchmark's output: one JSON object."""
    print(json.dumps(result, sort_keys=True), flush=True)
    return result
