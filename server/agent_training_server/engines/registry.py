"""Engines by training type, predictors by artifact kind, and artifact files on disk."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from agent_training_server.durable_files import fsync_path
from agent_training_server.engines import few_shot, reinforcement, supervised, transfer
from agent_training_server.engines.base import Artifact, Engine, Predictor

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


def load_predictor(spec: dict[str, Any], tensors: dict[str, torch.Tensor]) -> Predictor:
    """Rebuild a predictor from an artifact's spec and tensors."""
    return _PREDICTORS[spec["kind"]](spec, tensors)


def save_artifact(artifact: Artifact, directory: Path) -> None:
    """Write weights (safetensors) and spec (JSON) into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {name: tensor.contiguous() for name, tensor in artifact.tensors.items()}
    save_file(tensors, str(directory / WEIGHTS_FILE))
    spec = {**artifact.spec, "outputs": artifact.outputs, "encoder": artifact.encoder}
    (directory / SPEC_FILE).write_text(json.dumps(spec))
    # On disk before a version row can name them: the row's commit is durable (synchronous=FULL).
    for path in (directory / WEIGHTS_FILE, directory / SPEC_FILE, directory, directory.parent):
        fsync_path(path)


def load_artifact_files(directory: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], list]:
    """Read an artifact written by save_artifact: (spec, tensors, outputs)."""
    spec = json.loads((directory / SPEC_FILE).read_text())
    tensors = load_file(str(directory / WEIGHTS_FILE))
    return spec, tensors, list(spec["outputs"])
