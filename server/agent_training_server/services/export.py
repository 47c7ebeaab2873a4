"""ExportAgentVersion's domain side: find the version, build its bundle in a worker, stream it.

The bundle is built by a worker (services/export_bundle.py, through JobManager.run_work: the
ONNX export loads torch and traces the encoder) into a folder of its own under
``<data folder>/exports/``, then read back in chunks while the caller streams them. The folder
goes when the stream ends, however it ends: finished, failed, or cancelled by the client. An
export reads the version; it changes nothing.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import secrets
import shutil
import time
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import BinaryIO

from agent_training_server.domain import AgentVersion
from agent_training_server.errors import FailedPrecondition
from agent_training_server.jobs.work import WorkRunner
from agent_training_server.services.agents import AgentService
from agent_training_server.services.export_bundle import Bundle, write_bundle

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
"""Bytes per streamed chunk: the contract's most (1 MiB)."""
EXPORTS_FOLDER = "exports"
LEFTOVER_SECONDS = 3600.0
"""Export folders older than this when the service starts are a crashed process's: removed."""


@dataclasses.dataclass(frozen=True)
class ExportStarted:
    """First part of an export: the version and its bundle's description."""

    version: AgentVersion
    active_version_id: str
    bundle: Bundle


@dataclasses.dataclass(frozen=True)
class ExportFinished:
    """Last part: the SHA-256 and size of the bytes sent."""

    sha256: str
    size_bytes: int


class ExportService:
    """Builds and streams versions' export bundles."""

    def __init__(self, agents: AgentService, data_dir: Path, work: WorkRunner) -> None:
        """Versions of ``agents`` whose files are under ``data_dir``; bundles built by ``work``."""
        self._agents = agents
        self._data_dir = data_dir
        self._work = work
        self._exports = data_dir / EXPORTS_FOLDER
        self._remove_leftovers()

    async def export(
        self, agent_id: str, version_id: str
    ) -> AsyncGenerator[ExportStarted | bytes | ExportFinished, None]:
        """Yield the bundle's description, its bytes in chunks, then their SHA-256 and size.

        Raises:
            NotFound: no such agent (or another tenant's), or no such version.
            FailedPrecondition: the agent has no active version and none is named
                (NO_ACTIVE_VERSION), or the version's files are damaged (VERSION_DAMAGED).
        """
        version, active_version_id = await self._version(agent_id, version_id)
        folder = self._exports / f"export_{secrets.token_hex(8)}"
        folder.mkdir(parents=True)
        try:
            bundle = await self._work.run_work(write_bundle, self._data_dir, version, folder)
            yield ExportStarted(version, active_version_id, bundle)
            hasher = hashlib.sha256()
            sent = 0
            with bundle.path.open("rb") as handle:
                while chunk := await asyncio.to_thread(_read_hashed, handle, hasher):
                    sent += len(chunk)
                    yield chunk
            yield ExportFinished(hasher.hexdigest(), sent)
        finally:
            # Not in a thread: this also runs while the call is being cancelled, where an await
            # could be cut short. One folder of a few files: quick.
            shutil.rmtree(folder, ignore_errors=True)

    async def _version(self, agent_id: str, version_id: str) -> tuple[AgentVersion, str]:
        """The named version, or the active one, with the agent's active version id."""
        agent = await self._agents.get(agent_id)  # another tenant's: NotFound, as a missing one
        version_id = version_id or agent.active_version_id
        if not version_id:
            raise FailedPrecondition(
                f"agent {agent_id!r} has no trained version yet",
                code="NO_ACTIVE_VERSION",
                hint="Train the agent first, or name a version_id.",
            )
        version = await self._agents.get_version(agent_id, version_id)
        return version, agent.active_version_id

    def _remove_leftovers(self) -> None:
        """Remove export folders a crashed process left (older than LEFTOVER_SECONDS)."""
        if not self._exports.is_dir():
            return
        stale = time.time() - LEFTOVER_SECONDS
        for folder in self._exports.iterdir():
            try:
                if folder.stat().st_mtime < stale:
                    shutil.rmtree(folder, ignore_errors=True)
            except OSError:
                continue  # gone meanwhile (another replica's clean-up)


def _read_hashed(handle: BinaryIO, hasher: hashlib._Hash) -> bytes:
    """The file's next chunk, added to ``hasher``."""
    chunk = handle.read(CHUNK_BYTES)
    hasher.update(chunk)
    return chunk
