"""The arithmetic an encoder trains in on its device: mixed where the hardware has it.

On a GPU, autocast runs the matrix products in bfloat16 where the GPU has it (Ampere and
later), else in float16; the weights, the optimizer's state and the reductions autocast keeps
in float32 (softmax, cross-entropy, norms) stay float32. float16 has a narrow exponent, so its
small gradients are scaled up before the backward pass and back down before the step
(GradScaler); bfloat16 has float32's exponent and needs no scaling.

On a CPU that multiplies bfloat16 in hardware (AMX or AVX512-BF16), autocast runs the products
in bfloat16 too: fine-tuning the encoder's upper layers takes about 0.7 times as long at the same
validation accuracy (engines/frozen_layers.py). Elsewhere the CPU computes in float32 throughout.
Either way the same seed gives the same weights and metrics on the same machine.
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
from collections.abc import Callable
from pathlib import Path

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
        """The forward pass's context: autocast to the lower precision, or nothing in float32."""
        if self.name == FLOAT32:
            return contextlib.nullcontext()
        dtype = torch.bfloat16 if self.name == BFLOAT16 else torch.float16
        return torch.autocast(device_type=self.device.type, dtype=dtype)

    def step(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        before_step: Callable[[], None] | None = None,
    ) -> None:
        """Backward pass and optimizer step (through the loss scaler in float16).

        ``before_step`` runs between the two: a data-parallel process averages its gradients
        with the others there. In float16 the gradients it sees are still scaled; every process
        has the same scale (they all start alike and see the same averaged gradients, so they
        skip and rescale together), so their average is the average of the unscaled ones, scaled.
        """
        if self.scaler is None:
            loss.backward()
            if before_step is not None:
                before_step()
            optimizer.step()
            return
        self.scaler.scale(loss).backward()
        if before_step is not None:
            before_step()
        self.scaler.step(optimizer)  # skips the step when a gradient overflowed
        self.scaler.update()


def native_bfloat16() -> bool:
    """Whether the CPU multiplies bfloat16 in hardware (AMX or AVX512-BF16; Linux only).

    Elsewhere bfloat16 is emulated, slower than float32: this reads the CPU's flags rather than
    torch's bfloat16 check, which says yes to any AVX-512 CPU.
    """
    try:
        cpu = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", cpu) is not None


def for_device(device: str) -> Precision:
    """The precision training uses on ``device``: ``cpu`` or ``cuda:N`` (devices.resolve)."""
    where = torch.device(device or "cpu")
    if where.type != "cuda":
        return Precision(where, BFLOAT16 if native_bfloat16() else FLOAT32)
    if torch.cuda.is_bf16_supported():
        return Precision(where, BFLOAT16)
    return Precision(where, FLOAT16, torch.amp.GradScaler("cuda"))
