"""Tenant checks of the handlers: another tenant's object answers exactly like a missing one.

Every handler that names an agent, job, dataset or invocation fetches it through `TenantGuard`,
which raises the very NotFound the store raises for an id that does not exist (same code,
message and hint), so a caller cannot tell "someone else's" from "nobody's". Every object is
read with the caller's tenant in the store's query (jobs, analyses and answers through their
agent's tenant), so another tenant's id is a row not found exactly like a missing one: the same
path, hence the same time, not just the same answer; running jobs are read from the store too.
"""

from __future__ import annotations

from agent_training_server.auth import current_tenant
from agent_training_server.domain import Agent, AnalysisJob, Dataset, Invocation, TrainingJob
from agent_training_server.services.agents import AgentService
from agent_training_server.services.analysis_jobs import AnalysisJobs
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.feedback import FeedbackService
from agent_training_server.services.jobs import JobManager


class TenantGuard:
    """Fetches objects on behalf of the current caller, hiding other tenants' objects."""

    def __init__(
        self,
        agents: AgentService,
        jobs: JobManager,
        datasets: DatasetService,
        feedback: FeedbackService,
        analysis_jobs: AnalysisJobs,
    ) -> None:
        self._agents = agents
        self._jobs = jobs
        self._datasets = datasets
        self._feedback = feedback
        self._analysis_jobs = analysis_jobs

    async def agent(self, agent_id: str) -> Agent:
        """The caller's agent. Raises NotFound (AGENT_NOT_FOUND) for another tenant's."""
        return await self._agents.get(agent_id)

    async def job(self, training_id: str) -> TrainingJob:
        """The caller's job. Raises NotFound (TRAINING_JOB_NOT_FOUND) for another tenant's."""
        return await self._jobs.get(training_id, current_tenant())

    async def dataset(self, dataset_id: str) -> Dataset:
        """The caller's dataset. Raises NotFound (DATASET_NOT_FOUND) for another tenant's."""
        return await self._datasets.get(dataset_id)

    async def analysis(self, analysis_id: str) -> AnalysisJob:
        """The caller's analysis job. Raises NotFound (ANALYSIS_NOT_FOUND) for another tenant's."""
        return await self._analysis_jobs.get(analysis_id, current_tenant())

    async def invocation(self, invocation_id: str) -> Invocation:
        """The caller's answer. Raises NotFound (INVOCATION_NOT_FOUND) for another tenant's."""
        return await self._feedback.invocation(invocation_id, current_tenant())
