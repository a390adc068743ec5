"""Device selection: `device=auto | cpu | cuda | cuda:N`."""

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
