"""Handler of ExportAgentVersion: a version's bundle streamed as header, chunks, trailer."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from agent_training.v1 import service_pb2
from agent_training_server.api import convert
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.services.export import ExportFinished, ExportService, ExportStarted
from agent_training_server.services.export_bundle import BUNDLE_FORMAT


class ExportHandlers:
    """ExportAgentVersion."""

    def __init__(self, config: ServerConfig, export: ExportService) -> None:
        self._config = config
        self._export = export

    async def export(
        self, request: service_pb2.ExportAgentVersionRequest
    ) -> AsyncIterator[service_pb2.ExportAgentVersionResponse]:
        """ExportAgentVersion: the header, the bundle's bytes in chunks, then the trailer."""
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        checker.resource_id("version_id", request.version_id, required=False)
        checker.raise_if_any()
        # Closed here, in the call's task, whatever ends the stream: its folder goes at once.
        parts = self._export.export(request.agent_id, request.version_id)
        async with contextlib.aclosing(parts):
            async for part in parts:
                yield _response(part)


def _response(
    part: ExportStarted | bytes | ExportFinished,
) -> service_pb2.ExportAgentVersionResponse:
    if isinstance(part, bytes):
        return service_pb2.ExportAgentVersionResponse(chunk=part)
    if isinstance(part, ExportStarted):
        return service_pb2.ExportAgentVersionResponse(
            header=service_pb2.ExportHeader(
                version=convert.version_to_proto(part.version, part.active_version_id),
                format=BUNDLE_FORMAT,
                size_bytes=part.bundle.size_bytes,
                files=part.bundle.files,
                onnx=part.bundle.onnx,
            )
        )
    return service_pb2.ExportAgentVersionResponse(
        trailer=service_pb2.ExportTrailer(sha256=part.sha256, size_bytes=part.size_bytes)
    )
