"""Data parallelism for an engine's training loop: which share of each epoch this process trains.

A single process is world size 1 and changes nothing. With world size N (Ray Train workers with a
torch.distributed process group), every process builds the same features and model from the same
seed, trains on its 1/N of each epoch's order with 1/N of the batch, and averages gradients with
the others after each backward pass, so one step sees the same global batch size as one process.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
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


SINGLE_PROCESS = DataParallel()
