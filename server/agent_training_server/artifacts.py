"""A version's files: the one writer of new versions, and the one reader that checks them.

Writing: every new version (a training job's, an applied analysis suggestion's, an adaptation's)
gets its id, its artifact folder and its files, written and fsync'd, from ``write_version_files``
or ``move_version_files``, and its row fields from ``derived_version``; the caller records the
row (with the job's last event, or ``Store.add_version``) only once the files are on disk.

Reading: everything that reads a stored version's weights (InvokeAgent's model cache,
AnalyzeAndOptimize, AdaptAgentBehavior) goes through ``load_version_files``, the one place a
damaged version becomes VERSION_DAMAGED; the checks themselves (checksums, shapes) live in
``engines/integrity.py`` and ``engines/registry.py``. torch is imported on first use, so the
server starts without it.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import shutil
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_training_server.domain import AgentVersion
from agent_training_server.durable_files import fsync_path
from agent_training_server.errors import VersionDamaged

if TYPE_CHECKING:
    import torch

    from agent_training_server.engines.base import Artifact, Predictor

log = logging.getLogger(__name__)


def version_damaged(agent_id: str, version_id: str, reason: str) -> VersionDamaged:
    """The error for a version that must not be served; ``reason`` names no path."""
    return VersionDamaged(f"version {version_id!r} of agent {agent_id!r} is damaged: {reason}")


def load_version_files(
    data_dir: Path, version: AgentVersion
) -> tuple[dict[str, Any], dict[str, torch.Tensor], list[str]]:
    """The version's (spec, tensors, outputs), checked; call from a worker thread.

    Raises:
        VersionDamaged: a file is missing, truncated, fails its checksum or does not fit.
    """
    from agent_training_server.engines import registry
    from agent_training_server.engines.integrity import DamagedFile

    folder = data_dir / version.artifact_dir
    try:
        return registry.load_artifact_files(folder)
    except DamagedFile as error:
        log.warning(
            "version %s of agent %s refused: %s (folder %s)",
            version.version_id,
            version.agent_id,
            error,
            folder,
        )
        raise version_damaged(version.agent_id, version.version_id, str(error)) from None


def load_version_predictor(data_dir: Path, version: AgentVersion) -> Predictor:
    """The version's loaded model, checked; call from a worker thread.

    Raises:
        VersionDamaged: as ``load_version_files``, or the model cannot be built from the tensors.
    """
    from agent_training_server.engines import registry
    from agent_training_server.engines.integrity import DamagedFile

    spec, tensors, _outputs = load_version_files(data_dir, version)
    try:
        return registry.load_predictor(spec, tensors, data_dir / version.artifact_dir)
    except DamagedFile as error:
        log.warning(
            "version %s of agent %s refused: %s", version.version_id, version.agent_id, error
        )
        raise version_damaged(version.agent_id, version.version_id, str(error)) from None


@dataclasses.dataclass(frozen=True)
class VersionFiles:
    """A new version's files, on disk and flushed: what its row must name."""

    version_id: str
    artifact_dir: str
    """The folder, relative to the data folder (``artifacts/<agent_id>/<version_id>``)."""
    size_bytes: int


def _new_folder(data_dir: Path, agent_id: str) -> tuple[str, Path]:
    # The same shape as services.agents.new_id("ver"), which this low layer does not import.
    version_id = f"ver_{secrets.token_hex(8)}"
    return version_id, Path("artifacts") / agent_id / version_id


def _described(data_dir: Path, version_id: str, relative: Path) -> VersionFiles:
    size = sum(path.stat().st_size for path in (data_dir / relative).iterdir())
    return VersionFiles(version_id, str(relative), size)


def write_version_files(data_dir: Path, agent_id: str, artifact: Artifact) -> VersionFiles:
    """Write a trained artifact as a new version's files (fsync'd; removed if a write fails)."""
    from agent_training_server.engines import registry

    version_id, relative = _new_folder(data_dir, agent_id)
    registry.save_artifact(artifact, data_dir / relative)
    return _described(data_dir, version_id, relative)


def move_version_files(data_dir: Path, agent_id: str, source: Path) -> VersionFiles:
    """Move a folder a worker wrote (and fsync'd) into place as a new version's files.

    A move that fails (a full disk across filesystems) removes its partial copy and raises.
    """
    version_id, relative = _new_folder(data_dir, agent_id)
    target = data_dir / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.move(source, target)
        fsync_path(target.parent)  # the move, before the row naming it
    except BaseException:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return _described(data_dir, version_id, relative)


def derived_version(
    parent: AgentVersion,
    source: str,
    description: str,
    files: VersionFiles | None = None,
    **changes: Any,
) -> AgentVersion:
    """A new version made from ``parent``: its own id (and files, if new weights), its lineage.

    Without ``files`` the new version shares the parent's weights (a behaviour change); the
    store numbers it when it records it. ``changes`` set other fields (and may override these,
    e.g. the lineage of a rollback, which copies an older version but follows the active one).
    """
    fields: dict[str, Any] = {
        "version_id": files.version_id if files is not None else f"ver_{secrets.token_hex(8)}",
        "version_number": 0,
        "source": source,
        "training_id": "",
        "parent_version_id": parent.version_id,
        "description": description,
        "create_time": time.time(),
    }
    if files is not None:
        fields.update(artifact_dir=files.artifact_dir, size_bytes=files.size_bytes)
    return dataclasses.replace(parent, **{**fields, **changes})
