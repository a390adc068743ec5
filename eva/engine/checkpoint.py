"""Checkpoints: written atomically, read back safely (weights_only=True)."""

import os
from pathlib import Path

import torch


def save_checkpoint(state: dict, path: Path) -> None:
    """Write to a temp file in the same folder, fsync, then rename over the target.

    A run killed mid-write leaves the previous checkpoint intact, never a truncated one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)  # only still there when the write failed


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Tensors and plain containers only: a checkpoint cannot run code when loaded."""
    return torch.load(path, map_location=map_location, weights_only=True)
