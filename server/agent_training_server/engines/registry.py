"""Engines by training type, predictors by artifact kind, and artifact files on disk."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from agent_training_server.durable_files import fsync_path
from agent_training_server.engines import (
    few_shot,
    integrity,
    reinforcement,
    supervised,
    transfer,
)
from agent_training_server.engines.base import Artifact, Engine, Predictor
from agent_training_server.engines.integrity import DamagedFile

_ENGINES: dict[str, type[Engine]] = {
    supervised.SupervisedEngine.training_type: supervised.SupervisedEngine,
    few_shot.FewShotEngine.training_type: few_shot.FewShotEngine,
    transfer.TransferEngine.training_type: transfer.TransferEngine,
    reinforcement.ReinforcementEngine.training_type: reinforcement.ReinforcementEngine,
}
_PREDICTORS: dict[str, type[Predictor]] = {
    supervised.KIND: supervised.SupervisedPredictor,
    few_shot.KIND: few_shot.FewShotPredictor,
}

WEIGHTS_FILE = "model.safetensors"
SPEC_FILE = "spec.json"
SPEC_DIGEST_KEY = "integrity.spec_sha256"
"""Weights metadata entry holding the digest of the version's spec.json."""


class UnknownEngine(KeyError):
    """No engine implements the requested training type."""


def available_training_types() -> list[str]:
    """Training types with an engine."""
    return sorted(_ENGINES)


def get_engine(training_type: str) -> Engine:
    """Return a new engine for a training type."""
    try:
        return _ENGINES[training_type]()
    except KeyError:
        raise UnknownEngine(training_type) from None


def load_predictor(
    spec: dict[str, Any], tensors: dict[str, torch.Tensor], derived_dir: Path | None = None
) -> Predictor:
    """Rebuild a predictor from an artifact's spec and tensors.

    ``derived_dir``, the artifact's folder, keeps what the predictor derives from the weights
    (``Predictor.load``).

    Raises:
        DamagedFile: the tensors do not fit the model the spec describes.
    """
    try:
        return _PREDICTORS[spec["kind"]].load(spec, tensors, derived_dir)
    except DamagedFile:
        raise
    except (KeyError, TypeError, ValueError, RuntimeError) as error:  # load_state_dict's
        raise DamagedFile("the weights do not fit the model their spec describes") from error


def save_artifact(artifact: Artifact, directory: Path) -> None:
    """Write weights (safetensors, with both files' checksums) and spec (JSON) in ``directory``.

    ``directory`` is a new folder of its own: a write that fails (a full disk) removes it, so no
    half-written folder is left that no version names.
    """
    tensors = {name: tensor.contiguous() for name, tensor in artifact.tensors.items()}
    spec = {**artifact.spec, "outputs": artifact.outputs, "encoder": artifact.encoder}
    spec_text = json.dumps(spec)
    metadata = {SPEC_DIGEST_KEY: integrity.text_digest(spec_text)}
    try:
        directory.mkdir(parents=True, exist_ok=True)
        integrity.write_tensors(directory / WEIGHTS_FILE, tensors, metadata)
        (directory / SPEC_FILE).write_text(spec_text)
        # On disk before a version row can name them: the row's commit is durable
        # (synchronous=FULL).
        for path in (directory / WEIGHTS_FILE, directory / SPEC_FILE, directory, directory.parent):
            fsync_path(path)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def load_artifact_files(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list]:
    """Read and check an artifact written by save_artifact: (spec, tensors, outputs).

    Both files are checked against the checksums in the weights' metadata, and the tensors'
    shapes against the spec. An artifact written before checksums existed has none: it gets the
    structural checks only (docs/durability.md, "Integrity").

    Raises:
        DamagedFile: a file is missing, truncated or unreadable, fails its checksum, or the
            tensors do not fit the spec.
    """
    tensors, metadata, _checked = integrity.read_tensors(directory / WEIGHTS_FILE)
    try:
        spec_text = (directory / SPEC_FILE).read_text()
    except FileNotFoundError:
        raise DamagedFile("the spec file is missing") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DamagedFile("the spec file is unreadable") from error
    recorded = metadata.get(SPEC_DIGEST_KEY)
    if recorded is not None and integrity.text_digest(spec_text) != recorded:
        raise DamagedFile("the spec file fails its checksum (its contents changed on disk)")
    try:
        spec = json.loads(spec_text)
        outputs = list(spec["outputs"])
        predictor = _PREDICTORS[spec["kind"]]
    except (ValueError, KeyError, TypeError) as error:
        raise DamagedFile("the spec file is not a valid spec") from error
    predictor.check(spec, tensors)
    return spec, tensors, outputs
