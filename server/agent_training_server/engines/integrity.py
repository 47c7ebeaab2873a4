"""Checksums of weight files: recorded when a file is written, checked when it is read.

Every safetensors file the service writes (a version's ``model.safetensors``, a job's
checkpoints) carries a SHA-256 in its own metadata, under ``integrity.sha256``. It covers each
tensor's name, dtype, shape and bytes (in name order) and every other metadata entry, so a
flipped bit anywhere in the tensor data or in the loop state changes it; a flipped bit in the
file's header either breaks the header (safetensors refuses the file) or changes a name, dtype
or shape, which the digest covers too. Keeping the digest inside the file keeps writing atomic:
one file, one rename, no manifest that could disagree with it after a crash.

Files written before checksums existed have no digest. They are accepted, with the structural
checks their readers make (the file parses, the shapes fit the model); ``read_tensors`` reports
whether a digest was checked.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, safe_open, save_file

DIGEST_KEY = "integrity.sha256"
"""Metadata entry holding the file's digest."""


class DamagedFile(Exception):
    """A weight file is missing, unreadable, truncated, fails its checksum or does not fit.

    The message says which, in words a caller may see: it never names a path.
    """


class KeptCheckpointDamaged(DamagedFile):
    """The kept checkpoint a version is to be made from is damaged or does not fit the model."""


def digest(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 of the tensors (name, dtype, shape, bytes) and the metadata (but the digest)."""
    hasher = hashlib.sha256()
    entries = sorted((k, v) for k, v in metadata.items() if k != DIGEST_KEY)
    hasher.update(json.dumps(entries).encode())
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        hasher.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        # A byte view, whatever the dtype (numpy has no bfloat16): no copy of the data.
        hasher.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return hasher.hexdigest()


def text_digest(text: str) -> str:
    """SHA-256 of a text file's contents (a version's spec.json)."""
    return hashlib.sha256(text.encode()).hexdigest()


def write_tensors(
    path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None
) -> None:
    """Write a safetensors file whose metadata carries the digest of its contents."""
    entries = dict(metadata or {})
    entries[DIGEST_KEY] = digest(tensors, entries)
    save_file(tensors, str(path), metadata=entries)


def read_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str], bool]:
    """Read a file written by ``write_tensors``: (tensors, metadata, whether a digest was checked).

    Raises:
        DamagedFile: the file is missing, unreadable or truncated, or fails its checksum.
    """
    if not path.is_file():
        raise DamagedFile("a weights file is missing")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except Exception as error:  # safetensors raises its own error types, and OSError
        raise DamagedFile("a weights file is truncated or unreadable") from error
    recorded = metadata.get(DIGEST_KEY)
    if recorded is None:
        return tensors, metadata, False  # written before checksums: structural checks only
    if digest(tensors, metadata) != recorded:
        raise DamagedFile("a weights file fails its checksum (its contents changed on disk)")
    return tensors, metadata, True


def check_shape(tensors: dict[str, torch.Tensor], name: str, shape: tuple[int, ...]) -> None:
    """Raise DamagedFile unless ``tensors[name]`` exists with this shape and finite values."""
    tensor = tensors.get(name)
    if tensor is None:
        raise DamagedFile(f"the weights lack the tensor {name!r}")
    if tuple(tensor.shape) != shape:
        raise DamagedFile(
            f"the tensor {name!r} has shape {list(tensor.shape)}, the model needs {list(shape)}"
        )
    check_finite(name, tensor)


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise DamagedFile when a floating-point tensor holds NaN or infinity."""
    if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
        raise DamagedFile(f"the tensor {name!r} holds values that are not finite")


def finite_number(value: object) -> bool:
    """Whether a value read from JSON is a finite number (bool excluded)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
