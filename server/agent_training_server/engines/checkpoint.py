"""Two checkpoints per job folder: model, optimizer, best weights, loop state, RNG; safetensors.

Written to a temporary file, flushed to disk (fsync) and renamed, so a crash or power loss
mid-write leaves the previous checkpoint. Nothing is pickled: tensors go in the file, everything
else is JSON in its metadata. The torch random generator's state is saved too: an engine whose
steps draw random numbers (dropout) continues the same sequence after a resume.

The newest checkpoint and the one before it are kept (``checkpoint.safetensors`` and
``checkpoint.previous.safetensors``), each with a SHA-256 of its contents in its metadata
(engines/integrity.py): when the newest turns out damaged, the job resumes from the previous one.
"""

from __future__ import annotations

import copy
import json
import os
import secrets
import shutil
import threading
from pathlib import Path
from typing import Any

import torch

from agent_training_server.durable_files import fsync_path
from agent_training_server.engines import integrity
from agent_training_server.engines.integrity import DamagedFile

FILE_NAME = "checkpoint.safetensors"
"""The newest checkpoint."""
PREVIOUS_FILE_NAME = "checkpoint.previous.safetensors"
"""The checkpoint before the newest, kept to fall back on."""
DAMAGED_SUFFIX = ".damaged"
"""Added to a checkpoint found damaged: set aside (for the operator), out of the rotation."""


def save_checkpoint(
    folder: Path,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
    state: dict[str, Any],
    rng: torch.Tensor | None = None,
) -> None:
    """Write the checkpoint atomically; ``best`` None means the best weights are the model's.

    ``rng`` is ``torch.get_rng_state()`` at the moment the checkpoint stands for.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    if rng is not None:
        tensors["rng.torch"] = rng
    for name, tensor in model.items():
        tensors[f"model.{name}"] = tensor.contiguous()
    for name, tensor in (best or {}).items():
        tensors[f"best.{name}"] = tensor.contiguous()
    optimizer_scalars: dict[str, dict[str, Any]] = {}
    for param, values in optimizer["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{param}.{key}"] = value.contiguous()
            else:
                optimizer_scalars.setdefault(str(param), {})[key] = value
    metadata = {
        "state": json.dumps(state),
        "param_groups": json.dumps(optimizer["param_groups"]),
        "optimizer_scalars": json.dumps(optimizer_scalars),
    }
    # Names of this writer's own: two processes may write the folder's checkpoints at once (a
    # replica taken for dead still running the job its new owner resumed), and each must only
    # ever replace the newest with a whole file of its own.
    partial = folder / _partial_name(FILE_NAME)
    integrity.write_tensors(partial, tensors, metadata)
    fsync_path(partial)
    newest = folder / FILE_NAME
    if newest.exists():
        # The newest becomes the previous through a second name (a hard link), so that the
        # newest name is there at every moment: readers may open it while this runs (the Ray
        # executor copies it from the training thread while this writes in the background).
        # A crash in between leaves the newest, or both names on it: it is resumed from.
        linked = folder / _partial_name(PREVIOUS_FILE_NAME)
        try:
            os.link(newest, linked)
        except OSError:  # a filesystem without hard links: a copy keeps the same promise
            shutil.copyfile(newest, linked)
        os.replace(linked, folder / PREVIOUS_FILE_NAME)
    os.replace(partial, newest)
    fsync_path(folder)  # the renames themselves


def _partial_name(name: str) -> str:
    """A name no other writer uses for the file being written before it is renamed to ``name``."""
    return f"{name}.partial-{os.getpid()}-{secrets.token_hex(4)}"


def checkpoint_files(folder: Path) -> list[Path]:
    """The folder's checkpoint files that exist, newest first."""
    paths = (folder / FILE_NAME, folder / PREVIOUS_FILE_NAME)
    return [path for path in paths if path.exists()]


def set_aside(path: Path) -> None:
    """Rename a damaged checkpoint out of the rotation, so the next write keeps the good one."""
    os.replace(path, path.with_name(path.name + DAMAGED_SUFFIX))


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """Return the folder's newest checkpoint (see ``read_checkpoint``), or None if there is none.

    Raises:
        DamagedFile: the newest checkpoint is damaged (ResumableLoop then tries the previous).
    """
    files = checkpoint_files(folder)
    return read_checkpoint(files[0]) if files else None


def read_checkpoint(path: Path) -> dict[str, Any]:
    """Return {"model", "optimizer", "best", "state", "rng"} from one checkpoint file.

    ``best`` is empty when the best weights are the model's own; ``rng`` is None in a
    checkpoint written without it. Only the file is checked here (checksum, structure); whether
    its values fit the job is ResumableLoop's check.

    Raises:
        DamagedFile: the file is unreadable, truncated, fails its checksum or is malformed.
    """
    tensors, metadata, _checked = integrity.read_tensors(path)
    try:
        return _parse(tensors, metadata)
    except (KeyError, ValueError, TypeError, AttributeError) as error:
        raise DamagedFile("a checkpoint's contents are malformed") from error


def _parse(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> dict[str, Any]:
    model: dict[str, torch.Tensor] = {}
    best: dict[str, torch.Tensor] = {}
    optimizer_state: dict[int, dict[str, Any]] = {}
    rng = tensors.pop("rng.torch", None)
    for name, tensor in tensors.items():
        section, _, rest = name.partition(".")
        if section == "model":
            model[rest] = tensor
        elif section == "best":
            best[rest] = tensor
        elif section == "optimizer":
            param, _, key = rest.partition(".")
            optimizer_state.setdefault(int(param), {})[key] = tensor
        else:
            raise ValueError(f"unknown tensor {name!r}")
    for param, values in json.loads(metadata["optimizer_scalars"]).items():
        optimizer_state.setdefault(int(param), {}).update(values)
    optimizer = {"state": optimizer_state, "param_groups": json.loads(metadata["param_groups"])}
    state = json.loads(metadata["state"])
    if not isinstance(state, dict):
        raise ValueError("the loop state is not an object")
    return {"model": model, "optimizer": optimizer, "best": best, "state": state, "rng": rng}


class CheckpointWriter:
    """Writes checkpoints on a background thread, at most one at a time.

    Training goes on while the file is written; the tensors are copied first, because the
    optimizer keeps changing the live ones. ``wait`` makes sure the last checkpoint is complete.
    """

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def write(
        self,
        model: dict[str, torch.Tensor],
        optimizer: dict[str, Any],
        best: dict[str, torch.Tensor] | None,
        state: dict[str, Any],
        skip_if_busy: bool = False,
    ) -> bool:
        """Start writing a checkpoint of copies of the given tensors (and of the RNG state).

        With ``skip_if_busy``, a checkpoint asked for while the previous one is still being
        written (flushing can take longer than a short epoch on a busy disk) is skipped rather
        than waited for; the next one catches up. Returns whether it was started.
        """
        if skip_if_busy and self._thread is not None and self._thread.is_alive():
            return False
        self.wait()
        rng = torch.get_rng_state()
        model_copy = {name: tensor.clone() for name, tensor in model.items()}
        optimizer_copy = {
            "state": {
                param: {
                    k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in values.items()
                }
                for param, values in optimizer["state"].items()
            },
            "param_groups": copy.deepcopy(optimizer["param_groups"]),
        }
        self._thread = threading.Thread(
            target=self._run,
            args=(model_copy, optimizer_copy, best, dict(state), rng),
            name="checkpoint-writer",
            daemon=True,
        )
        self._thread.start()
        return True

    def _run(self, *args: Any) -> None:
        try:
            save_checkpoint(self._folder, *args)
        except BaseException as error:
            self._error = error

    def wait(self) -> None:
        """Block until the checkpoint being written is on disk; re-raise its error if any."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error
