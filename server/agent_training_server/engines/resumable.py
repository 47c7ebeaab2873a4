"""Checkpoint bookkeeping shared by the engines that train in epochs of mini-batches.

A checkpoint stands for a point between two optimizer steps: ``epoch`` epochs done and
``step_in_epoch`` batches of the next one. It holds the model, the optimizer, the best weights so
far, the torch random generator (dropout draws from it) and the epoch's running sums. Each epoch's
batch order derives from (seed, epoch) alone, so a resumed run skips the batches it had done and
then sees exactly the batches the uninterrupted run saw: same seed, same threads, same numbers.

Checkpoints are written at the end of every epoch, every ``every_steps`` optimizer steps inside
long epochs, and at once when the job must stop (cancelled, out of time, or its worker is
shutting down). A routine one that comes while the previous is still being flushed to the disk
is skipped, so training never waits for the disk; a stop's checkpoint always waits and is written.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agent_training_server.engines.base import (
    Reporter,
    TrainingCancelled,
    TrainingTimedOut,
    TrainSettings,
)
from agent_training_server.engines.checkpoint import CheckpointWriter, load_checkpoint

Sums = Callable[[], dict[str, float]]
"""Returns an epoch's running sums as plain numbers; called only when a checkpoint is written."""


def _no_sums() -> dict[str, float]:
    return {}


class ResumableLoop:
    """The resumable state of one training loop and the checkpoints that keep it."""

    def __init__(
        self,
        workdir: Path,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: TrainSettings,
        every_steps: int = 0,
    ) -> None:
        self._writer = CheckpointWriter(workdir)
        self._workdir = workdir
        self._model = model
        self._optimizer = optimizer
        self._settings = settings
        self._every_steps = every_steps
        self._steps_since_checkpoint = 0
        self._behind = False
        """A routine checkpoint was skipped since the last one written."""
        self.state: dict[str, Any] = {
            "epoch": 0,
            "step_in_epoch": 0,
            "sums": {},
            "best_loss": float("inf"),
            "best_epoch": 0,
            "stale": 0,
            "stopped_early": False,
        }
        self.best = _copy(model.state_dict())
        self.resumed = False

    def resume(self) -> bool:
        """Load the job's checkpoint into the model, optimizer and RNG, if there is one."""
        checkpoint = load_checkpoint(self._workdir)
        if checkpoint is None:
            return False
        self._model.load_state_dict(checkpoint["model"])
        self._optimizer.load_state_dict(checkpoint["optimizer"])
        self.best = checkpoint["best"] or checkpoint["model"]
        self.state = {**self.state, **checkpoint["state"]}  # older checkpoints lack new keys
        if checkpoint["rng"] is not None:
            torch.set_rng_state(checkpoint["rng"])
        self.resumed = True
        return True

    @property
    def epochs_done(self) -> int:
        """Epochs completed."""
        return int(self.state["epoch"])

    def running(self, epochs: int) -> bool:
        """Whether another epoch is due (not all done, not stopped early)."""
        return not self.state["stopped_early"] and self.epochs_done < epochs

    @property
    def first_batch(self) -> int:
        """Batches of the current epoch already done before a resume (0 otherwise)."""
        return int(self.state["step_in_epoch"])

    @property
    def sums(self) -> dict[str, float]:
        """Running sums of the current epoch restored from a mid-epoch checkpoint ({} if none)."""
        return dict(self.state["sums"]) if self.first_batch else {}

    def check_stop(
        self, reporter: Reporter, deadline: float, step_in_epoch: int, sums: Sums = _no_sums
    ) -> None:
        """Before a step: checkpoint and raise when the job must stop, or raise when out of time.

        Raises:
            TrainingCancelled: cancelled or preempted; the checkpoint is on disk.
            TrainingTimedOut: past max_duration_seconds; the checkpoint is on disk.
        """
        if reporter.cancelled():
            self._write_mid_epoch(step_in_epoch, sums)
            self._writer.wait()
            raise TrainingCancelled()
        if time.monotonic() > deadline:
            self._write_mid_epoch(step_in_epoch, sums)  # the best weights so far are in it
            self._writer.wait()
            raise TrainingTimedOut(
                f"stopped after {self._settings.max_duration_seconds:g} s in epoch"
                f" {self.epochs_done + 1}; the best checkpoint (epoch {self.state['best_epoch']})"
                " is kept"
            )

    def after_step(self, step_in_epoch: int, batches: int, sums: Sums = _no_sums) -> None:
        """After a step: write a mid-epoch checkpoint every ``every_steps`` steps."""
        self._steps_since_checkpoint += 1
        due = self._every_steps and self._steps_since_checkpoint >= self._every_steps
        if due and step_in_epoch < batches:  # the end-of-epoch checkpoint follows anyway
            self._write_mid_epoch(step_in_epoch, sums, skip_if_busy=True)

    def end_epoch(self, validation_loss: float, patience: int, **on_improvement: Any) -> None:
        """Record the epoch: keep the best weights, count stale epochs, write the checkpoint.

        ``on_improvement`` values are stored in the state when the epoch is the best so far.
        """
        epoch = self.epochs_done + 1
        self.state.update(epoch=epoch, step_in_epoch=0, sums={})
        if validation_loss < self.state["best_loss"] - self._settings.early_stopping_min_delta:
            self.state.update(best_loss=validation_loss, best_epoch=epoch, stale=0)
            self.state.update(on_improvement)
            self.best = _copy(self._model.state_dict())
        else:
            self.state["stale"] += 1
        if patience and self.state["stale"] >= patience:
            self.state["stopped_early"] = True
        # While the current weights are the best, the checkpoint needs them once, not twice.
        best = None if self.state["best_epoch"] == epoch else self.best
        self._write(best, self.state, skip_if_busy=True)

    def finish(self) -> None:
        """After the last epoch: make sure the checkpoint on disk is the final state."""
        if self._behind:
            best = None if self.state["best_epoch"] == self.epochs_done else self.best
            self._write(best, self.state)
        self._writer.wait()

    def _write_mid_epoch(self, step_in_epoch: int, sums: Sums, skip_if_busy: bool = False) -> None:
        state = {**self.state, "step_in_epoch": step_in_epoch, "sums": sums()}
        self._write(self.best, state, skip_if_busy)

    def _write(
        self,
        best: dict[str, torch.Tensor] | None,
        state: dict[str, Any],
        skip_if_busy: bool = False,
    ) -> None:
        # Routine checkpoints never make training wait for the disk; a stop's checkpoint must be
        # written, so it waits for the one in flight.
        model, optimizer = self._model.state_dict(), self._optimizer.state_dict()
        started = self._writer.write(model, optimizer, best, state, skip_if_busy=skip_if_busy)
        self._behind = not started
        if started:
            self._steps_since_checkpoint = 0


def _copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in tensors.items()}
