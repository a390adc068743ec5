"""What every benchmark shares: --quick, A/B runs alternated, medians, a table, a JSON line.

Benchmarks are run by hand (`python benchmarks/NAME.py [--quick]`), never by the test suite
as a speed check: these machines are noisy. Each script prints a table for people and, as
its very last line, one JSON object for tools (`... | tail -1 | jq .ratio`).
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent  # the checkout: train.py, conf/, eva/
if str(REPO) not in sys.path:  # `python benchmarks/x.py` from anywhere imports this eva
    sys.path.insert(0, str(REPO))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")


def parser(description: str, quick: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    if quick:
        p.add_argument("--quick", action="store_true", help="fewer, smaller runs (< 1 minute)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
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


def machine() -> dict:
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def emit(result: dict) -> dict:
    """The last line of a benchmark's output: one JSON object."""
    print(json.dumps(result, sort_keys=True), flush=True)
    return result
