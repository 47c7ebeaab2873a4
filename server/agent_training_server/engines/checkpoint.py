"""One checkpoint per job folder: model, optimizer, best weights and loop state, in safetensors.

Written to a temporary file and renamed, so a crash mid-write leaves the previous checkpoint.
Nothing is pickled: tensors go in the file, everything else is JSON in its metadata.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

FILE_NAME = "checkpoint.safetensors"


def save_checkpoint(
    folder: Path,
    model: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    best: dict[str, torch.Tensor] | None,
    state: dict[str, Any],
) -> None:
    """Write the checkpoint atomically; ``best`` None means the best weights are the model's."""
    folder.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
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
    partial = folder / (FILE_NAME + ".partial")
    save_file(tensors, str(partial), metadata=metadata)
    os.replace(partial, folder / FILE_NAME)


def load_checkpoint(folder: Path) -> dict[str, Any] | None:
    """Return {"model", "optimizer", "best", "state"} from the folder's checkpoint, if any.

    ``best`` is empty when the best weights are the model's own.
    """
    path = folder / FILE_NAME
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = load_file(str(path))
    model, best, optimizer_state = {}, {}, {}
    for name, tensor in tensors.items():
        section, _, rest = name.partition(".")
        if section == "model":
            model[rest] = tensor
        elif section == "best":
            best[rest] = tensor
        else:
            param, _, key = rest.partition(".")
            optimizer_state.setdefault(int(param), {})[key] = tensor
    for param, values in json.loads(metadata["optimizer_scalars"]).items():
        optimizer_state.setdefault(int(param), {}).update(values)
    optimizer = {"state": optimizer_state, "param_groups": json.loads(metadata["param_groups"])}
    return {
        "model": model,
        "optimizer": optimizer,
        "best": best,
        "state": json.loads(metadata["state"]),
    }
