"""Data parallelism for an engine's training loop: which share of each epoch this process trains.

A single process is world size 1 and changes nothing. With world size N (Ray Train workers with a
torch.distributed process group), every process builds the same features and model from the same
seed, trains on its 1/N of each epoch's order with 1/N of the batch, and averages gradients with
the others after each backward pass, so one step sees the same global batch size as one process.

Gradients are averaged by DistributedDataParallel around a model's forward pass (``wrap``), or by
hand after the backward pass (``average_gradients``) where steps do not go through the model's
forward (the encoder engines run the head over cached lower layers).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    import numpy as np
    import torch
    from torch import nn


@dataclasses.dataclass(frozen=True)
class DataParallel:
    """This process's place among the processes training one job."""

    rank: int = 0
    world_size: int = 1

    def share(self, order: np.ndarray) -> np.ndarray:
        """This process's rows of an epoch's order.

        The order is cut to a multiple of the world size first: every process then runs the same
        number of steps (a process with one step more would wait forever for the others' gradients).
        At most world_size - 1 rows sit out an epoch, different ones each epoch.
        """
        if self.world_size == 1:
            return order
        usable = len(order) - len(order) % self.world_size
        return order[self.rank : usable : self.world_size]

    def share_size(self, rows: int) -> int:
        """Rows per epoch each process trains on."""
        return rows // self.world_size

    def local_batch(self, batch_size: int) -> int:
        """Rows per step in this process, so that one step of all processes is ``batch_size``."""
        return max(1, batch_size // self.world_size)

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module to train through: the model itself, or a gradient-averaging wrapper."""
        if self.world_size == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model)

    def average_gradients(self, parameters: Iterable[torch.Tensor]) -> None:
        """Replace each parameter's gradient with its mean over the processes (one process: no-op).

        Every process must pass the same parameters in the same order, with gradients on the same
        ones: they all run the same model on the same epoch's settings, so they do. Parameters
        without a gradient (frozen, or unused by the step) are skipped. The gradients travel as
        one flat buffer per call: one collective a step, not one per tensor.
        """
        if self.world_size == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in parameters if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([grad.reshape(-1) for grad in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for grad in grads:
            grad.copy_(flat[offset : offset + grad.numel()].view_as(grad))
            offset += grad.numel()


SINGLE_PROCESS = DataParallel()
