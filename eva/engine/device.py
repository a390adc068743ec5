"""Device selection: `device=auto | cpu | cuda | cuda:N`."""

import os

import torch

from eva.errors import EvaError


def resolve_device(spec: str) -> torch.device:
    """The torch device for the config value, failing clearly when it is not there."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise EvaError(f"device={spec!r}: expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = 0 if device.index is None else device.index
        if index >= count:
            raise EvaError(f"device={spec!r}: this machine has {count} CUDA device(s)")
    elif device.type != "cpu":
        raise EvaError(f"device={spec!r}: expected auto, cpu, cuda or cuda:N")
    return device


def slot_device(spec: str, slot: int | None) -> str:
    """In a parallel sweep, `device=auto` gives the job in slot k GPU k (mod the count).

    One trial per GPU: jobs never share a device. An explicit device is left as it is.
    """
    if spec != "auto" or slot is None or not torch.cuda.is_available():
        return spec
    return f"cuda:{slot % torch.cuda.device_count()}"


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))  # the cores this process may use
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def slot_threads(threads: int | None, slots: int) -> int | None:
    """torch threads of one job when `slots` jobs share this machine's cores.

    `threads=N` wins; otherwise each job gets an equal share (at least 1), so that parallel
    jobs do not oversubscribe the cores. None: one job alone keeps torch's default.
    """
    if threads:
        return threads
    if slots > 1:
        return max(1, cpu_count() // slots)
    return None


def auto_workers(num_workers: int | None, device: torch.device, slots: int = 1) -> int:
    """DataLoader workers for per-image augmentation: `dataset.num_workers`, or when null
    one per core of this job's share (at most 8) feeding a GPU, and none on a CPU run,
    whose cores are busy training (there the workers would only take turns with it)."""
    if num_workers is not None:
        return num_workers
    if device.type != "cuda":
        return 0
    return max(1, min(8, cpu_count() // max(1, slots) - 1))  # one core stays with the loop
