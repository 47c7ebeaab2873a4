"""AnalyzeAndOptimize for the caller: run an analysis at once or as a job, apply a suggestion.

It composes the analysis itself (services/analysis.py) with the analysis jobs, the agents and the
datasets, and reads the caller's tenant, so the handlers pass ids only: another tenant's agent,
dataset or analysis job answers exactly as a missing one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

from agent_training_server.auth import current_tenant
from agent_training_server.domain import AgentVersion, AnalysisJob
from agent_training_server.engines.base import Example
from agent_training_server.services.agents import AgentService, idempotency_key
from agent_training_server.services.analysis import (
    DEFAULT_GOAL_SETTINGS,
    AnalysisService,
    GoalSettings,
    ProgressCallback,
    Report,
)
from agent_training_server.services.analysis_jobs import AnalysisJobs
from agent_training_server.services.datasets import DatasetService

ReportEncoder = Callable[[Report], bytes]
"""Turns a report into the bytes an analysis job stores as its result (the api's response)."""


class AnalysisRuns:
    """The analyses the caller asks for, at once or in the background."""

    def __init__(
        self,
        agents: AgentService,
        datasets: DatasetService,
        analysis: AnalysisService,
        jobs: AnalysisJobs,
    ) -> None:
        self._agents = agents
        self._datasets = datasets
        self._analysis = analysis
        self._jobs = jobs

    async def analyze(
        self,
        agent_id: str,
        version_id: str,
        evaluation: Sequence[Example],
        dataset_id: str,
        goals: Sequence[str],
        *,
        max_examples: int,
        settings: GoalSettings = DEFAULT_GOAL_SETTINGS,
    ) -> Report:
        """Analyse the caller's agent now, on `evaluation`, a dataset, or its held-out data."""
        await self._agents.get(agent_id)
        return await self._analyze(
            agent_id, version_id, evaluation, dataset_id, goals, max_examples, settings
        )

    async def start(
        self,
        agent_id: str,
        version_id: str,
        evaluation: Sequence[Example],
        dataset_id: str,
        goals: Sequence[str],
        *,
        max_examples: int,
        encode: ReportEncoder,
        request_id: str = "",
        request_bytes: bytes = b"",
        settings: GoalSettings = DEFAULT_GOAL_SETTINGS,
    ) -> AnalysisJob:
        """Start an analysis job (a retry with the same request_id re-attaches to it).

        What can be found wrong at once (a missing agent, version or dataset) is raised at once,
        before a job is stored.
        """
        await self._agents.get(agent_id)
        if version_id:
            await self._agents.get_version(agent_id, version_id)
        if dataset_id:
            await self._datasets.get(dataset_id)

        async def analysis(progress: ProgressCallback) -> bytes:
            report = await self._analyze(
                agent_id,
                version_id,
                evaluation,
                dataset_id,
                goals,
                max_examples,
                settings,
                progress,
            )
            return encode(report)

        key = idempotency_key("AnalyzeAndOptimizeStream", request_id, request_bytes)
        return await self._jobs.start(agent_id, analysis, key)

    async def job(self, analysis_id: str) -> AnalysisJob:
        """The caller's analysis job. Raises NotFound (ANALYSIS_NOT_FOUND) for another's."""
        return await self._jobs.get(analysis_id, current_tenant())

    async def watch(self, analysis_id: str) -> AsyncIterator[AnalysisJob]:
        """The caller's analysis job now, at each progress report, and at its end (last)."""
        await self.job(analysis_id)
        async for job in self._jobs.watch(analysis_id):
            yield job

    async def apply(
        self,
        agent_id: str,
        suggestion_id: str,
        activate: bool,
        request_id: str = "",
        request_bytes: bytes = b"",
    ) -> tuple[AgentVersion, str]:
        """Make the version a suggestion describes; return it and the agent's active version."""
        await self._agents.get(agent_id)
        key = idempotency_key("ApplySuggestion", request_id, request_bytes)
        version = await self._analysis.apply(agent_id, suggestion_id, activate, key)
        agent = await self._agents.get(agent_id)
        return version, agent.active_version_id

    async def _analyze(
        self,
        agent_id: str,
        version_id: str,
        evaluation: Sequence[Example],
        dataset_id: str,
        goals: Sequence[str],
        max_examples: int,
        settings: GoalSettings,
        progress: ProgressCallback | None = None,
    ) -> Report:
        examples = list(evaluation)
        if dataset_id:
            examples = await self._datasets.training_examples(dataset_id)
        return await self._analysis.analyze(
            agent_id,
            version_id,
            examples or None,
            goals,
            max_examples=max_examples,
            progress=progress,
            settings=settings,
        )
