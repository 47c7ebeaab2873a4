"""The epoch checkpoints a training job keeps: their files, their retention, reading them back.

Torch-free, so the server process lists them without loading a model. The engine's training loop
(engines/resumable.py) writes one at the end of every epoch: the model's weights in safetensors,
with what the epoch measured in the file's metadata. After each write the loop's folder keeps the
best epoch (lowest validation loss so far) and the last ``keep_checkpoints`` epochs.

Layout inside a job's folder::

    checkpoints/                       the engine's loop folder (resumable checkpoints)
    checkpoints/kept/epoch-0003.safetensors
    checkpoints/ngrams/kept/...        a helper loop's own (transfer's n-gram companion)

When the job ends, everything but the ``kept`` folders is removed (``prune_job_folder``); they
stay until the job's agent is deleted. CreateVersionFromCheckpoint trains nothing: it puts a
``finalize.json`` in each loop folder of a fresh work folder, naming the kept file to finish
from, and the engine builds and measures a version from those weights as at a job's end.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import shutil
import struct
import time
from pathlib import Path
from typing import Any

LOOP_FOLDER = "checkpoints"
"""The engine's folder inside a job's folder (jobs/worker.py hands it to the engine)."""
KEPT_FOLDER = "kept"
"""Inside a loop folder: the epoch checkpoints kept."""
FINALIZE_FILE = "finalize.json"
"""Inside a loop folder: {"kept": path}, finish the loop from that kept file's weights."""
METADATA_KEY = "kept"
"""The safetensors metadata entry holding a kept checkpoint's description (JSON)."""
FIGURES = ("loss", "train_accuracy", "validation_loss", "validation_accuracy")
"""What an epoch measured, as a kept checkpoint records it (each may be missing)."""
_ID = re.compile(r"^epoch-([1-9][0-9]{0,5})$")
_FILE = re.compile(r"^epoch-([0-9]{4,6})\.safetensors$")
_HEADER_LIMIT = 100_000_000
"""Largest safetensors header read (the format's own bound)."""


@dataclasses.dataclass(frozen=True)
class KeptCheckpoint:
    """One kept checkpoint, as its file describes it."""

    checkpoint_id: str
    epoch: int
    step: int
    figures: dict[str, float]
    best_epoch: int
    """The loop's best epoch when this file was written."""
    time: float
    size_bytes: int
    path: Path


def file_name(epoch: int) -> str:
    """The kept file of an epoch (zero-padded: names sort as epochs do)."""
    return f"epoch-{epoch:04d}.safetensors"


def checkpoint_id(epoch: int) -> str:
    """The id clients name an epoch's checkpoint by."""
    return f"epoch-{epoch}"


def epoch_of(checkpoint: str) -> int | None:
    """The epoch a checkpoint id names, or None when it is not one."""
    match = _ID.match(checkpoint)
    return int(match.group(1)) if match else None


def description(epoch: int, step: int, figures: dict[str, float], best_epoch: int) -> str:
    """The metadata entry of a kept file (JSON), written beside the weights."""
    chosen = {name: float(figures[name]) for name in FIGURES if figures.get(name) is not None}
    return json.dumps(
        {
            "epoch": epoch,
            "step": step,
            "figures": chosen,
            "best_epoch": best_epoch,
            "time": time.time(),
        }
    )


def epoch_in(metadata: dict[str, str]) -> int:
    """The epoch a kept file's metadata describes.

    Raises:
        ValueError: the metadata holds no description of a kept checkpoint.
    """
    try:
        return int(json.loads(metadata[METADATA_KEY])["epoch"])
    except (KeyError, TypeError, ValueError) as error:
        raise ValueError("not a kept checkpoint's description") from error


def read_kept(path: Path) -> KeptCheckpoint:
    """Describe a kept file from its safetensors header alone (its weights are not read).

    Raises:
        ValueError: the file is not a kept checkpoint (truncated, or no description).
        OSError: it cannot be read.
    """
    with path.open("rb") as file:
        raw = file.read(8)
        if len(raw) != 8:
            raise ValueError("too short for a safetensors header")
        (length,) = struct.unpack("<Q", raw)
        if length > _HEADER_LIMIT:
            raise ValueError("its header is too large")
        header: dict[str, Any] = json.loads(file.read(length))
    kept = json.loads(header["__metadata__"][METADATA_KEY])
    epoch = int(kept["epoch"])
    return KeptCheckpoint(
        checkpoint_id=checkpoint_id(epoch),
        epoch=epoch,
        step=int(kept["step"]),
        figures={name: float(value) for name, value in kept["figures"].items()},
        best_epoch=int(kept["best_epoch"]),
        time=float(kept["time"]),
        size_bytes=path.stat().st_size,
        path=path,
    )


def list_kept(kept_folder: Path) -> list[KeptCheckpoint]:
    """The readable kept checkpoints of one loop, oldest epoch first."""
    if not kept_folder.is_dir():
        return []
    found = []
    for path in sorted(kept_folder.iterdir()):
        if not _FILE.match(path.name):
            continue  # a file being written (renamed into place when whole)
        try:
            found.append(read_kept(path))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # damaged: not offered (CreateVersionFromCheckpoint would refuse it)
    return found


def job_checkpoints(job_folder: Path) -> list[KeptCheckpoint]:
    """The checkpoints a job kept (its engine's loop), oldest first."""
    return list_kept(job_folder / LOOP_FOLDER / KEPT_FOLDER)


def best_epoch(kept: list[KeptCheckpoint]) -> int:
    """The job's best epoch as its newest kept file says (0 when none is kept)."""
    return kept[-1].best_epoch if kept else 0


def retain(kept_folder: Path, best: int, keep_last: int) -> None:
    """Remove the loop's kept files but the best epoch's and the last ``keep_last`` epochs'."""
    epochs = sorted(int(m.group(1)) for p in kept_folder.iterdir() if (m := _FILE.match(p.name)))
    keep = {best, *epochs[len(epochs) - keep_last :]} if keep_last else {best}
    for epoch in epochs:
        if epoch not in keep:
            (kept_folder / file_name(epoch)).unlink(missing_ok=True)


def prune_job_folder(job_folder: Path) -> None:
    """Remove what a job no longer needs once it has ended: everything but its kept folders.

    A job that kept nothing leaves no folder at all. Best effort, as ``shutil.rmtree`` with
    ``ignore_errors``: a folder the server may not read or write stays as it is.
    """
    with contextlib.suppress(OSError):
        _prune(job_folder)


def only_kept(job_folder: Path) -> bool:
    """Whether every file left in a job's folder is a kept checkpoint (or none is left)."""
    if not job_folder.exists():
        return True
    return all(path.parent.name == KEPT_FOLDER for path in job_folder.rglob("*") if path.is_file())


def _prune(job_folder: Path) -> None:
    loops = job_folder / LOOP_FOLDER
    kept = [loops / KEPT_FOLDER, *(sub / KEPT_FOLDER for sub in _subfolders(loops))]
    kept = [folder for folder in kept if folder.is_dir() and any(folder.iterdir())]
    if not kept:
        shutil.rmtree(job_folder, ignore_errors=True)
        return
    for path in _walk_except(job_folder, set(kept)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _subfolders(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [path for path in folder.iterdir() if path.is_dir() and path.name != KEPT_FOLDER]


def _walk_except(folder: Path, keep: set[Path]) -> list[Path]:
    """Everything under ``folder`` that is neither in ``keep`` nor holds something in it."""
    removable = []
    for path in folder.iterdir():
        if path in keep:
            continue
        if path.is_dir() and any(kept.is_relative_to(path) for kept in keep):
            removable.extend(_walk_except(path, keep))
        else:
            removable.append(path)
    return removable


def prepare_finalize(job_folder: Path, epoch: int, work_folder: Path) -> None:
    """Set up ``work_folder`` so that a job's engine finishes from its kept ``epoch``.

    The engine's loop finishes from that epoch's weights; each helper loop that kept
    checkpoints (transfer's n-gram companion, trained after the encoder) from its best one.

    Raises:
        FileNotFoundError: the job kept no checkpoint of that epoch.
    """
    source = job_folder / LOOP_FOLDER
    chosen = source / KEPT_FOLDER / file_name(epoch)
    if not chosen.is_file():
        raise FileNotFoundError(chosen)
    _write_marker(work_folder / LOOP_FOLDER, chosen)
    for helper in _subfolders(source):
        kept = list_kept(helper / KEPT_FOLDER)
        best = best_epoch(kept)
        if best:
            best_file = helper / KEPT_FOLDER / file_name(best)
            _write_marker(work_folder / LOOP_FOLDER / helper.name, best_file)


def _write_marker(loop_folder: Path, kept_file: Path) -> None:
    loop_folder.mkdir(parents=True, exist_ok=True)
    (loop_folder / FINALIZE_FILE).write_text(json.dumps({"kept": str(kept_file)}))


def finalize_source(loop_folder: Path) -> Path | None:
    """The kept file a loop must finish from, when its folder says so (else None)."""
    marker = loop_folder / FINALIZE_FILE
    if not marker.is_file():
        return None
    return Path(json.loads(marker.read_text())["kept"])
