"""Checkpoint bookkeeping shared by the engines that train in epochs of mini-batches.

A checkpoint stands for a point between two optimizer steps: ``epoch`` epochs done and
``step_in_epoch`` batches of the next one. It holds the model, the optimizer, the best weights so
far, the torch random generator (dropout draws from it) and the epoch's running sums. Each epoch's
batch order derives from (seed, epoch) alone, so a resumed run skips the batches it had done and
then sees exactly the batches the uninterrupted run saw: same seed, same threads, same numbers.

Checkpoints are written at the end of every epoch, every ``every_steps`` optimizer steps inside
long epochs, and at once when the job must stop (cancelled, paused, out of time, or its worker is
shutting down). A routine one that comes while the previous is still being flushed to the disk
is skipped, so training never waits for the disk; a stop's checkpoint always waits and is written.

Each epoch's weights are also kept, with what the epoch measured, for ListTrainingCheckpoints and
CreateVersionFromCheckpoint (job_checkpoints.py: the best and the last ``keep_checkpoints``). A
loop folder holding a ``finalize.json`` finishes at once from the kept weights it names: the
engine then measures and builds a version from them as at the end of a job.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from agent_training_server import job_checkpoints
from agent_training_server.engines import integrity
from agent_training_server.engines.base import (
    Reporter,
    TrainingCancelled,
    TrainingTimedOut,
    TrainSettings,
)
from agent_training_server.engines.checkpoint import (
    CheckpointWriter,
    checkpoint_files,
    read_checkpoint,
    set_aside,
)
from agent_training_server.engines.integrity import DamagedFile, KeptCheckpointDamaged

log = logging.getLogger(__name__)

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
        objective: str = "",
    ) -> None:
        """Start a loop; nothing is read until ``resume``.

        ``objective`` names what the steps minimise, where an engine has more than one ("" for
        the plain one): a checkpoint written for another is set aside, as its best loss and
        weights were measured and trained against something else.
        """
        self._writer = CheckpointWriter(workdir)
        self._kept = _KeptWriter()
        self._workdir = workdir
        self._model = model
        self._optimizer = optimizer
        self._trained = _trained_names(model, optimizer)
        """Names of the tensors checkpoints hold (the optimizer's parameters do not change)."""
        self._settings = settings
        self._every_steps = every_steps
        self._steps_per_epoch = 0
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
            "objective": objective,
        }
        self.best = _copy(model.state_dict())
        self.resumed = False

    def resume(self, epochs: int, steps_per_epoch: int = 0) -> bool:
        """Load the job's checkpoint into the model, optimizer and RNG, if there is a good one.

        The newest checkpoint is tried first, then the previous one. A checkpoint is damaged when
        its file fails its checksum or does not parse, or when its values do not fit this job
        (``_check``: epoch within [0, epochs], step within the epoch's ``steps_per_epoch``
        batches, the model's shapes, finite numbers). A damaged one is set aside and logged;
        with none good, the job starts from scratch: nothing was loaded into the model.

        A ``finalize.json`` in the folder (CreateVersionFromCheckpoint) loads the kept weights
        it names instead, as the best and last: the loop is over.

        Raises:
            DamagedFile: the kept weights to finish from are damaged or do not fit the model.
        """
        self._steps_per_epoch = steps_per_epoch
        kept = job_checkpoints.finalize_source(self._workdir)
        if kept is not None:
            self._finish_from(kept)
            return True
        files = checkpoint_files(self._workdir)
        for position, path in enumerate(files):
            try:
                checkpoint = read_checkpoint(path)
                state = {**self.state, **checkpoint["state"]}  # older checkpoints lack new keys
                self._check(checkpoint, state, epochs, steps_per_epoch)
            except DamagedFile as error:
                later = "the previous checkpoint" if position + 1 < len(files) else "scratch"
                log.warning(
                    "job %s: %s checkpoint is damaged (%s); set aside, resuming from %s",
                    self._workdir.parent.name,  # the job folder is named after the training_id
                    "the newest" if position == 0 else "the previous",
                    error,
                    later,
                )
                set_aside(path)
                continue
            # The file holds what the job can change (``_trained``): the rest of the model stays
            # as the engine built it, from the same source, as it was all through the job.
            self._model.load_state_dict(checkpoint["model"], strict=False)
            self._optimizer.load_state_dict(checkpoint["optimizer"])
            self.best = {**_copy(self._model.state_dict()), **checkpoint["best"]}
            self.state = state
            if checkpoint["rng"] is not None:
                torch.set_rng_state(checkpoint["rng"])
            self.resumed = True
            log.info(
                "job %s: resuming from its checkpoint at epoch %d, step %d",
                self._workdir.parent.name,
                state["epoch"] + 1,
                state["step_in_epoch"],
            )
            return True
        return False

    def _finish_from(self, path: Path) -> None:
        """Take a kept checkpoint's weights as the loop's best and last: no epoch is left.

        The file holds the tensors the job could change (``_trained``); the rest of the model
        is as the engine built it, as it was all through the job.

        Raises:
            KeptCheckpointDamaged: the file fails its checksum or does not fit the model.
        """
        try:
            self._load_kept(path)
        except (DamagedFile, ValueError) as error:  # ValueError: no kept checkpoint's metadata
            raise KeptCheckpointDamaged(str(error)) from None
        log.info("finishing from the checkpoint kept at epoch %d", self.epochs_done)

    def _load_kept(self, path: Path) -> None:
        tensors, metadata, _checked = integrity.read_tensors(path)
        epoch = job_checkpoints.epoch_in(metadata)
        weights = {name.removeprefix("model."): tensor for name, tensor in tensors.items()}
        _check_tensors("kept", weights, self._model.state_dict(), self._trained)
        self._model.load_state_dict(weights, strict=False)
        self.best = _copy(self._model.state_dict())
        self.state.update(epoch=epoch, best_epoch=epoch, stale=0, stopped_early=True, sums={})
        self.resumed = True

    def _check(
        self, checkpoint: dict[str, Any], state: dict[str, Any], epochs: int, steps_per_epoch: int
    ) -> None:
        """Raise DamagedFile unless the checkpoint's values fit this job's loop and model."""
        epoch, step = state["epoch"], state["step_in_epoch"]
        if not _whole(epoch) or not 0 <= epoch <= epochs:
            raise DamagedFile(f"its epoch {epoch!r} is outside [0, {epochs}]")
        last_step = steps_per_epoch - 1 if steps_per_epoch else step
        if not _whole(step) or not 0 <= step <= last_step or (epoch == epochs and step):
            raise DamagedFile(f"its step {step!r} is outside the epoch's batches")
        for name in ("best_epoch", "stale"):
            if not _whole(state[name]) or not 0 <= state[name] <= epoch:
                raise DamagedFile(f"its {name} {state[name]!r} is outside [0, {epoch}]")
        if not isinstance(state["stopped_early"], bool):
            raise DamagedFile("its stopped_early is not a boolean")
        written_for = checkpoint["state"].get("objective", "")  # older ones: the plain one
        if written_for != self.state["objective"]:
            raise DamagedFile(
                f"it was written for another objective ({written_for or 'plain'!r}, this job's:"
                f" {self.state['objective'] or 'plain'!r})"
            )
        best_loss = state["best_loss"]
        if not (integrity.finite_number(best_loss) or best_loss == float("inf")):
            raise DamagedFile("its best_loss is not a number")
        numbers = [v for k, v in state.items() if k not in _STATE_NON_NUMBERS]
        sums = state["sums"]
        if not isinstance(sums, dict):
            raise DamagedFile("its running sums are not a mapping")
        if not all(integrity.finite_number(v) for v in [*numbers, *sums.values()]):
            raise DamagedFile("its loop state holds values that are not finite numbers")
        expected = self._model.state_dict()
        _check_tensors("model", checkpoint["model"], expected, self._trained)
        if checkpoint["best"]:
            _check_tensors("best", checkpoint["best"], expected, self._trained)
        self._check_optimizer(checkpoint["optimizer"])
        rng = checkpoint["rng"]
        if rng is not None and (
            rng.dtype != torch.uint8 or rng.shape != torch.get_rng_state().shape
        ):
            raise DamagedFile("its random generator state does not fit")

    def _check_optimizer(self, saved: dict[str, Any]) -> None:
        current = self._optimizer.state_dict()["param_groups"]
        groups = saved["param_groups"]
        if not isinstance(groups, list) or [g.get("params") for g in groups] != [
            g["params"] for g in current
        ]:
            raise DamagedFile("its optimizer groups do not fit the model")
        if [set(g) for g in groups] != [set(g) for g in current]:
            # Another optimizer's state (a job paused before its engine changed optimizer):
            # loading it would leave this one without its own state.
            raise DamagedFile("its optimizer state was written by another optimizer")
        params = [p for group in self._optimizer.param_groups for p in group["params"]]
        for index, values in saved["state"].items():
            if not 0 <= index < len(params):
                raise DamagedFile("its optimizer state names a parameter the model lacks")
            for key, value in values.items():
                if isinstance(value, torch.Tensor):
                    if value.dim() and value.shape != params[index].shape:
                        raise DamagedFile(f"its optimizer {key} does not fit the model")
                    integrity.check_finite(f"optimizer {key}", value)
                elif not integrity.finite_number(value):
                    raise DamagedFile(f"its optimizer {key} is not a finite number")

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
            self._kept.wait()
            raise TrainingCancelled()
        if time.monotonic() > deadline:
            self._write_mid_epoch(step_in_epoch, sums)  # the best weights so far are in it
            self._writer.wait()
            self._kept.wait()
            raise TrainingTimedOut(
                f"stopped after {self._settings.max_duration_seconds:g} s in epoch"
                f" {self.epochs_done + 1} (best validation loss so far at epoch"
                f" {self.state['best_epoch']})"
            )

    def after_step(self, step_in_epoch: int, batches: int, sums: Sums = _no_sums) -> None:
        """After a step: write a mid-epoch checkpoint every ``every_steps`` steps."""
        self._steps_since_checkpoint += 1
        due = self._every_steps and self._steps_since_checkpoint >= self._every_steps
        if due and step_in_epoch < batches:  # the end-of-epoch checkpoint follows anyway
            self._write_mid_epoch(step_in_epoch, sums, skip_if_busy=True)

    def end_epoch(
        self,
        validation_loss: float | None,
        patience: int,
        *,
        figures: dict[str, float | None] | None = None,
        **on_improvement: Any,
    ) -> None:
        """Record the epoch: keep the best weights, count stale epochs, write the checkpoints.

        ``validation_loss`` None (nothing held out to measure on): every epoch is the best so
        far, so the last one's weights are kept. ``on_improvement`` values are stored in the
        state when the epoch is the best so far. ``figures``: what the epoch measured (loss,
        train_accuracy, validation_loss, validation_accuracy), kept with its weights.
        """
        epoch = self.epochs_done + 1
        self.state.update(epoch=epoch, step_in_epoch=0, sums={})
        if validation_loss is None:
            self.state.update(best_epoch=epoch, stale=0)
            self.state.update(on_improvement)
            self.best = _copy(self._model.state_dict())
        elif validation_loss < self.state["best_loss"] - self._settings.early_stopping_min_delta:
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
        self._keep(epoch, figures or {})

    def _keep(self, epoch: int, figures: dict[str, float | None]) -> None:
        """Keep the epoch's weights with its figures (written while the next epoch runs)."""
        weights = {  # copies: the optimizer goes on changing the live tensors
            f"model.{name}": tensor.detach().to("cpu", copy=True).contiguous()
            for name, tensor in self._model.state_dict().items()
            if name in self._trained
        }
        measured = {name: value for name, value in figures.items() if value is not None}
        description = job_checkpoints.description(
            epoch, epoch * self._steps_per_epoch, measured, self.state["best_epoch"]
        )
        self._kept.write(
            self._workdir / job_checkpoints.KEPT_FOLDER,
            epoch,
            weights,
            description,
            self.state["best_epoch"],
            max(0, self._settings.keep_checkpoints),
        )

    def finish(self, wait: bool = True) -> None:
        """After the last epoch: make the checkpoints on disk the final state.

        With ``wait`` False the last writes may still run on their threads when this returns
        (they write copies: the engine may go on, evaluating or loading the best weights);
        ``wait`` must then be called before the engine returns.
        """
        if self._behind:
            best = None if self.state["best_epoch"] == self.epochs_done else self.best
            self._write(best, self.state)
        if wait:
            self.wait()

    def wait(self) -> None:
        """Block until every checkpoint started is on disk; re-raise a write's error."""
        self._writer.wait()
        self._kept.wait()

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
        model = {k: v for k, v in self._model.state_dict().items() if k in self._trained}
        if best is not None:
            best = {k: v for k, v in best.items() if k in self._trained}
        optimizer = self._optimizer.state_dict()
        started = self._writer.write(model, optimizer, best, state, skip_if_busy=skip_if_busy)
        self._behind = not started
        if started:
            self._steps_since_checkpoint = 0


class _KeptWriter:
    """Writes kept checkpoints on a thread of its own, one at a time, then applies retention."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(
        self,
        folder: Path,
        epoch: int,
        weights: dict[str, torch.Tensor],
        description: str,
        best_epoch: int,
        keep_last: int,
    ) -> None:
        """Start writing an epoch's weights (copies) after the previous write has ended."""
        self.wait()
        self._thread = threading.Thread(
            target=self._run,
            args=(folder, epoch, weights, description, best_epoch, keep_last),
            name="kept-checkpoint-writer",
            daemon=True,
        )
        self._thread.start()

    def _run(
        self,
        folder: Path,
        epoch: int,
        weights: dict[str, torch.Tensor],
        description: str,
        best_epoch: int,
        keep_last: int,
    ) -> None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            final = folder / job_checkpoints.file_name(epoch)
            partial = final.with_name(f"{final.name}.partial-{os.getpid()}")
            integrity.write_tensors(partial, weights, {job_checkpoints.METADATA_KEY: description})
            os.replace(partial, final)  # listed only once whole
            job_checkpoints.retain(folder, best_epoch, keep_last)
        except BaseException as error:
            self._error = error

    def wait(self) -> None:
        """Block until the write in flight is on disk; re-raise its error if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error


_STATE_NON_NUMBERS = ("sums", "stopped_early", "best_loss", "objective")
"""Loop state entries that are not plain finite numbers (checked on their own)."""


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_tensors(
    section: str,
    saved: dict[str, torch.Tensor],
    expected: dict[str, torch.Tensor],
    trained: frozenset[str],
) -> None:
    """The saved tensors must include every trained one and fit the model's shapes.

    Tensors the job does not train may be there too (checkpoints written before they were left
    out), as long as they are the model's.
    """
    if not trained <= set(saved):
        raise DamagedFile(f"its {section} tensors lack some the job trains")
    for name, tensor in saved.items():
        if name not in expected:
            raise DamagedFile(f"its {section} tensors do not fit the model")
        if tensor.shape != expected[name].shape:
            raise DamagedFile(f"its {section} tensor {name!r} does not fit the model's shape")
        integrity.check_finite(f"{section} {name}", tensor)


def _copy(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.clone() for name, tensor in tensors.items()}


def _trained_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> frozenset[str]:
    """The tensors checkpoints hold: those the optimizer may change, and buffers.

    A frozen encoder's lower layers (few_shot, transfer) are never given to the optimizer:
    they stay as the engine built them, so writing them again each epoch would only cost
    time and disk (three quarters of a few_shot model; its job about 2 s in 14).
    """
    optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in optimized}
    names |= {name for name, _buffer in model.named_buffers()}
    return frozenset(names & set(model.state_dict()))  # not the buffers it does not save
