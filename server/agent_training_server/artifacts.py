"""A version's files, loaded and checked: the one place a damaged version becomes VERSION_DAMAGED.

Everything that reads a stored version's weights (InvokeAgent's model cache, AnalyzeAndOptimize,
AdaptAgentBehavior) goes through here; the checks themselves (checksums, shapes) live in
``engines/integrity.py`` and ``engines/registry.py``. torch is imported on first use, so the
server starts without it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent_training_server.domain import AgentVersion
from agent_training_server.errors import VersionDamaged

if TYPE_CHECKING:
    import torch

    from agent_training_server.engines.base import Predictor

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
        return registry.load_predictor(spec, tensors)
    except DamagedFile as error:
        log.warning(
            "version %s of agent %s refused: %s", version.version_id, version.agent_id, error
        )
        raise version_damaged(version.agent_id, version.version_id, str(error)) from None
