"""The arithmetic an encoder trains in on its device: float32 on the CPU, mixed on a GPU.

On a GPU, autocast runs the matrix products in bfloat16 where the GPU has it (Ampere and
later), else in float16; the weights, the optimizer's state and the reductions autocast keeps
in float32 (softmax, cross-entropy, norms) stay float32. float16 has a narrow exponent, so its
small gradients are scaled up before the backward pass and back down before the step
(GradScaler); bfloat16 has float32's exponent and needs no scaling.

On the CPU nothing changes: float32 throughout, the same operations as before devices existed,
so the same seed gives the same weights and metrics.
"""

from __future__ import annotations

import contextlib
import dataclasses

import torch

FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
FLOAT16 = "float16"


@dataclasses.dataclass
class Precision:
    """How one training on one device computes: its device, autocast type and loss scaler."""

    device: torch.device
    name: str
    """``float32``, ``bfloat16`` or ``float16``: what the version's manifest records."""
    scaler: torch.amp.GradScaler | None = None
    """float16 only: scales the loss so that small gradients survive."""

    @property
    def device_name(self) -> str:
        """``cpu`` or ``cuda:N``, as the manifest records it."""
        if self.device.type == "cuda":
            return f"cuda:{self.device.index or 0}"
        return self.device.type

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The forward pass's context: autocast to the lower precision on a GPU, else nothing."""
        if self.name == FLOAT32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == BFLOAT16 else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        """Backward pass and optimizer step (through the loss scaler in float16)."""
        if self.scaler is None:
            loss.backward()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.step(optimizer)  # skips the step when a gradient overflowed
        self.scaler.update()


def for_device(device: str) -> Precision:
    """The precision training uses on ``device``: ``cpu`` or ``cuda:N`` (devices.resolve)."""
    where = torch.device(device or "cpu")
    if where.type != "cuda":
        return Precision(where, FLOAT32)
    if torch.cuda.is_bf16_supported():
        return Precision(where, BFLOAT16)
    return Precision(where, FLOAT16, torch.amp.GradScaler("cuda"))
