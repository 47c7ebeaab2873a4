"""Handlers of the analysis RPCs: AnalyzeAndOptimize (at once or as a job) and its jobs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from agent_training.v1 import service_pb2
from agent_training_server.api import analysis_requests, convert, validation
from agent_training_server.auth import current_principal
from agent_training_server.auth.interceptor import check_scope
from agent_training_server.config import ServerConfig
from agent_training_server.domain import AnalysisStatus
from agent_training_server.errors import InvalidArgument
from agent_training_server.services import analysis_jobs
from agent_training_server.services.analysis import Report
from agent_training_server.services.analysis_runs import AnalysisRuns


class AnalysisHandlers:
    """AnalyzeAndOptimize, AnalyzeAndOptimizeStream, GetAnalysisJob, WatchAnalysisJob."""

    def __init__(self, config: ServerConfig, runs: AnalysisRuns) -> None:
        self._config = config
        self._runs = runs

    async def analyze(
        self, request: service_pb2.AnalyzeAndOptimizeRequest
    ) -> service_pb2.AnalyzeAndOptimizeResponse:
        """AnalyzeAndOptimize: a report now, or (apply_suggestion_id) the version it makes."""
        goals, settings = analysis_requests.check_analyze(request, self._config)
        if request.apply_suggestion_id:
            check_scope(current_principal(), "agents:write", "applying a suggestion")
            return await self._apply_suggestion(request)
        report = await self._runs.analyze(
            request.agent_id,
            request.version_id,
            convert.examples_from_proto(request.evaluation_data),
            request.dataset_id,
            goals,
            max_examples=self._config.max_direct_analysis_examples,
            settings=settings,
        )
        return analysis_requests.report_to_proto(report)

    async def _apply_suggestion(
        self, request: service_pb2.AnalyzeAndOptimizeRequest
    ) -> service_pb2.AnalyzeAndOptimizeResponse:
        version, active_version_id = await self._runs.apply(
            request.agent_id,
            request.apply_suggestion_id,
            request.activate,
            request.request_id,
            request.SerializeToString(deterministic=True),
        )
        return service_pb2.AnalyzeAndOptimizeResponse(
            version_id=version.parent_version_id,
            applied_version=convert.version_to_proto(version, active_version_id),
        )

    async def analyze_stream(
        self, request: service_pb2.AnalyzeAndOptimizeStreamRequest
    ) -> AsyncIterator[service_pb2.AnalyzeAndOptimizeStreamResponse]:
        """AnalyzeAndOptimizeStream: an analysis job, its progress and its result."""
        inner = request.request
        goals, settings = analysis_requests.check_analyze(inner, self._config)
        if inner.apply_suggestion_id:
            raise InvalidArgument(
                "AnalyzeAndOptimizeStream does not apply suggestions",
                hint="Apply a suggestion with AnalyzeAndOptimize (it answers at once).",
            )
        job = await self._runs.start(
            inner.agent_id,
            inner.version_id,
            convert.examples_from_proto(inner.evaluation_data),
            inner.dataset_id,
            goals,
            max_examples=self._config.max_dataset_examples,
            settings=settings,
            encode=_response_bytes,
            request_id=inner.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
        )
        yield service_pb2.AnalyzeAndOptimizeStreamResponse(
            accepted=service_pb2.AnalysisAccepted(analysis_id=job.analysis_id)
        )
        # The stream only watches: a client that goes away leaves the analysis running.
        async for message in self._messages(job.analysis_id):
            yield service_pb2.AnalyzeAndOptimizeStreamResponse(**message)

    async def get_job(
        self, request: service_pb2.GetAnalysisJobRequest
    ) -> service_pb2.GetAnalysisJobResponse:
        """GetAnalysisJob."""
        validation.check_analysis_id(request.analysis_id)
        job = await self._runs.job(request.analysis_id)
        return service_pb2.GetAnalysisJobResponse(job=analysis_requests.analysis_job_to_proto(job))

    async def watch_job(
        self, request: service_pb2.WatchAnalysisJobRequest
    ) -> AsyncIterator[service_pb2.WatchAnalysisJobResponse]:
        """WatchAnalysisJob: progress, then the result or the error."""
        validation.check_analysis_id(request.analysis_id)
        async for message in self._messages(request.analysis_id):
            yield service_pb2.WatchAnalysisJobResponse(**message)

    async def _messages(self, analysis_id: str) -> AsyncIterator[dict[str, Any]]:
        """Progress and result messages of an analysis job; its error when it failed."""
        async for job in self._runs.watch(analysis_id):
            if job.status == AnalysisStatus.SUCCEEDED:
                result = service_pb2.AnalyzeAndOptimizeResponse.FromString(job.result)
                yield {"result": result}
            elif job.status == AnalysisStatus.FAILED:
                raise analysis_jobs.error_of(job)
            elif job.progress:
                yield {"progress": service_pb2.AnalysisProgress(**job.progress)}


def _response_bytes(report: Report) -> bytes:
    """A report as the serialised response an analysis job stores as its result."""
    return analysis_requests.report_to_proto(report).SerializeToString()
