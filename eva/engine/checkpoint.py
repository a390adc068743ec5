"""Checkpoints: written atomically, read back safely (weights_only=True)."""

from pathlib import Path

import torch

from eva.files import write_atomically


def save_checkpoint(state: dict, path: Path) -> None:
    """Atomically (eva/files.py): a run killed mid-write leaves the previous checkpoint
    intact, never a truncated one."""
    write_atomically(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Tensors and plain containers only: a checkpoint cannot run code when loaded."""
    return torch.load(path, map_location=map_location, weights_only=True)
