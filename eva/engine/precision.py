"""How the net computes: `precision=fp32 | bf16 | fp16`, `channels_last`, `compile`.

All three are off by default and matter on a GPU: bf16/fp16 autocast runs convolutions and
matmuls on tensor cores (fp16 adds a GradScaler, so small gradients do not flush to zero),
channels_last is the memory layout those kernels want, and torch.compile fuses the rest.
On a CPU they run too (tests check the logic), mostly without a speed-up.
"""

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from eva.errors import EvaError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Precision:
    name: str  # fp32 | bf16 | fp16
    device_type: str  # cpu | cuda: where autocast applies
    scaler: torch.amp.GradScaler | None = None  # fp16 only; saved in last.pt for resume

    @property
    def dtype(self) -> torch.dtype | None:
        return DTYPES[self.name]

    def autocast(self):
        """The forward pass (and loss) in the run's precision; a no-op for fp32."""
        if self.dtype is None:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """loss.backward() then optimizer.step(), through the GradScaler when there is one
        (it skips the step when a gradient overflowed and lowers its scale)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)
        self.scaler.update()


def build_precision(name: str, device: torch.device) -> Precision:
    if name not in DTYPES:
        raise EvaError(f"precision={name!r}: expected one of {', '.join(DTYPES)}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise EvaError(
            f"precision=bf16: {torch.cuda.get_device_name(device)} has no bfloat16; "
            "use precision=fp16"
        )
    scaler = torch.amp.GradScaler(device.type) if name == "fp16" else None
    return Precision(name, device.type, scaler)


def memory_format(channels_last: bool) -> torch.memory_format:
    """Layout each batch is given: NHWC for channels_last, else left as it comes."""
    return torch.channels_last if channels_last else torch.preserve_format


def compiled(model: torch.nn.Module, enabled: bool, backend: str = "inductor") -> torch.nn.Module:
    """The module the loop calls: torch.compile(model) or the model itself.

    The compiled wrapper shares the model's parameters; checkpoints keep saving the plain
    model's state_dict (no `_orig_mod.` prefixes), so they load with or without compile.
    """
    if not enabled:
        return model
    return torch.compile(model, backend=backend)
