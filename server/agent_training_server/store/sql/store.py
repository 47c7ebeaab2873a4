"""The store over SQL tables, on any `Database` (SQLite or PostgreSQL).

`SqlStore` hands one `Database` (its connections and transactions) to one class per group of
tables (agents, jobs, datasets, feedback, rollouts, analysis, in this package); each `Store`
method below says which of them answers it. Writes that span two groups (a job's event with the
version it made, a promoted rollout with its agent's new active version) are one transaction of
the shared database, so nothing is ever half stored. The backends (`store/sqlite.py`,
`store/postgres.py`) only open their database.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent_training_server.domain import (
    Agent,
    AgentVersion,
    AnalysisJob,
    Dataset,
    Feedback,
    Invocation,
    JobEvent,
    Rollout,
    RolloutDecision,
    TrainingJob,
)
from agent_training_server.store.base import IdempotencyKey, JobLimits, Store
from agent_training_server.store.sql.agents import AgentTables, VersionTables
from agent_training_server.store.sql.analysis import AnalysisTables
from agent_training_server.store.sql.database import Database
from agent_training_server.store.sql.datasets import DatasetTables
from agent_training_server.store.sql.feedback import FeedbackTables
from agent_training_server.store.sql.jobs import JobTables, TrainingDataTables
from agent_training_server.store.sql.replicas import ReplicaTables
from agent_training_server.store.sql.rollouts import RolloutTables


class SqlStore(Store):
    """A store in SQL tables of one `Database`; thread-safe as its database is."""

    def __init__(self, database: Database) -> None:
        """Read and write the tables of ``database`` (their schema already in place)."""
        self._database = database
        self._agents = AgentTables(self._database)
        self._versions = VersionTables(self._database, self._agents)
        self._training_data = TrainingDataTables(self._database)
        self._jobs = JobTables(self._database, self._versions)
        self._datasets = DatasetTables(self._database)
        self._feedback = FeedbackTables(self._database)
        self._rollouts = RolloutTables(self._database, self._agents, self._versions)
        self._analyses = AnalysisTables(self._database)
        self._replicas = ReplicaTables(self._database)

    @property
    def commits(self) -> int:
        """Write transactions committed through this store since it was opened."""
        return self._database.commits

    def ping(self) -> None:
        """Run one trivial query (Unavailable when the database does not answer)."""
        with self._database.read() as db:
            db.execute("SELECT 1").fetchone()

    def close(self) -> None:
        """Close the connection."""
        self._database.close()

    # Agents -------------------------------------------------------------------------------

    def create_agent(self, agent: Agent, key: IdempotencyKey | None = None) -> tuple[Agent, bool]:
        """Insert an agent, or replay the agent an earlier call with the same key created."""
        return self._agents.create_agent(agent, key)

    def get_agent(self, agent_id: str, tenant: str | None = None) -> Agent:
        """Return an agent (of ``tenant``) or raise NotFound."""
        return self._agents.get_agent(agent_id, tenant)

    def list_agents(
        self, limit: int, after_agent_id: str = "", tenant: str | None = None
    ) -> list[Agent]:
        """Return a page of agents ordered by id (of one tenant, or of all for None)."""
        return self._agents.list_agents(limit, after_agent_id, tenant)

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; what it owns goes with it (ON DELETE CASCADE)."""
        self._agents.delete_agent(agent_id)

    # Versions -----------------------------------------------------------------------------

    def add_version(
        self, version: AgentVersion, activate: bool, key: IdempotencyKey | None = None
    ) -> AgentVersion:
        """Insert a version numbered after the agent's last; optionally activate it."""
        return self._versions.add_version(version, activate, key)

    def replayed_version(self, agent_id: str, key: IdempotencyKey) -> AgentVersion | None:
        """The version an earlier call with this key made, if any (AlreadyExists on misuse)."""
        return self._versions.replayed_version(agent_id, key)

    def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Return a version or raise NotFound."""
        return self._versions.get_version(agent_id, version_id)

    def agent_with_version(
        self, agent_id: str, version_id: str = "", tenant: str | None = None
    ) -> tuple[Agent, AgentVersion | None]:
        """An agent (of ``tenant``) and one of its versions (the active one for ""), in one read."""
        return self._versions.agent_with_version(agent_id, version_id, tenant)

    def list_versions(
        self, agent_id: str, limit: int, before_number: int = 0
    ) -> list[AgentVersion]:
        """Return versions newest first."""
        return self._versions.list_versions(agent_id, limit, before_number)

    def activate_version(self, agent_id: str, version_id: str) -> Agent:
        """Make a version active."""
        return self._versions.activate_version(agent_id, version_id)

    # Invocations and feedback ---------------------------------------------------------------

    def record_invocations(self, invocations: Sequence[Invocation]) -> None:
        """Store answers given (one transaction for the batch)."""
        self._feedback.record_invocations(invocations)

    def get_invocation(self, invocation_id: str, tenant: str | None = None) -> Invocation:
        """Return an invocation (of one of ``tenant``'s agents, or of any). Raises NotFound."""
        return self._feedback.get_invocation(invocation_id, tenant)

    def record_feedback(self, feedback: Feedback) -> tuple[Feedback, bool]:
        """Store feedback unless the invocation has some; return (stored feedback, duplicate)."""
        return self._feedback.record_feedback(feedback)

    def list_feedback(self, agent_id: str, since: float = 0.0) -> list[tuple[Feedback, Invocation]]:
        """Feedback on the agent's answers after `since`, with the answers, oldest first."""
        return self._feedback.list_feedback(agent_id, since)

    def record_performance(self, agent_id: str, version_id: str, metrics: dict[str, float]) -> None:
        """Keep production metrics reported while `version_id` was active."""
        self._feedback.record_performance(agent_id, version_id, metrics)

    def performance_history(self, agent_id: str) -> dict[str, dict[str, float]]:
        """The latest reported metrics of each of the agent's versions."""
        return self._feedback.performance_history(agent_id)

    # Rollouts -------------------------------------------------------------------------------

    def create_rollout(self, rollout: Rollout, key: IdempotencyKey | None = None) -> Rollout:
        """Insert a running rollout, or replay the one an earlier same-key call made."""
        return self._rollouts.create_rollout(rollout, key)

    def get_rollout(self, agent_id: str, rollout_id: str = "") -> Rollout:
        """The agent's rollout ``rollout_id``, or (empty) its running or else latest one."""
        return self._rollouts.get_rollout(agent_id, rollout_id)

    def running_rollout(self, agent_id: str) -> Rollout | None:
        """The agent's running rollout, or None (one indexed lookup)."""
        return self._rollouts.running_rollout(agent_id)

    def update_rollout(self, rollout: Rollout) -> Rollout:
        """Store a running rollout's mode, traffic share and policy."""
        return self._rollouts.update_rollout(rollout)

    def end_rollout(self, agent_id: str, rollout_id: str, decision: RolloutDecision) -> Rollout:
        """End a running rollout; a promotion activates its candidate in the same transaction."""
        return self._rollouts.end_rollout(agent_id, rollout_id, decision)

    def rollout_feedback_counts(self, rollout_id: str) -> dict[str, tuple[int, int]]:
        """`Store.rollout_feedback_counts`."""
        return self._rollouts.rollout_feedback_counts(rollout_id)

    def rollout_invocations(self, rollout_id: str) -> list[tuple[Invocation, Feedback | None]]:
        """Every answer recorded under the rollout, with its feedback (None without)."""
        return self._rollouts.rollout_invocations(rollout_id)

    # Named datasets -------------------------------------------------------------------------

    def begin_dataset(
        self, dataset: Dataset, key: IdempotencyKey | None = None, owner: str = ""
    ) -> Dataset | None:
        """Reserve the name and start writing; return the earlier dataset on a same-key replay."""
        return self._datasets.begin_dataset(dataset, key, owner)

    def append_dataset_examples(
        self, dataset_id: str, first_position: int, examples: Sequence[bytes]
    ) -> None:
        """Store serialised examples at consecutive positions from `first_position`."""
        self._datasets.append_dataset_examples(dataset_id, first_position, examples)

    def finish_dataset(
        self,
        dataset_id: str,
        example_count: int,
        output_count: int,
        content_sha256: str,
        key: IdempotencyKey | None = None,
    ) -> Dataset:
        """Mark a dataset ready (visible) with its totals."""
        return self._datasets.finish_dataset(
            dataset_id, example_count, output_count, content_sha256, key
        )

    def discard_dataset(self, dataset_id: str) -> None:
        """Drop a dataset that could not be finished."""
        self._datasets.discard_dataset(dataset_id)

    def discard_unfinished_datasets(self, now: float) -> int:
        """Drop datasets half-written by replicas not alive at ``now``; return how many."""
        return self._datasets.discard_unfinished_datasets(now)

    def get_dataset(self, dataset_id: str, tenant: str | None = None) -> Dataset:
        """Return a ready dataset (of ``tenant``). Raises NotFound."""
        return self._datasets.get_dataset(dataset_id, tenant)

    def list_datasets(
        self, limit: int, after_name: str = "", tenant: str | None = None
    ) -> list[Dataset]:
        """Return up to `limit` ready datasets ordered by name, after `after_name`."""
        return self._datasets.list_datasets(limit, after_name, tenant)

    def read_dataset_examples(self, dataset_id: str, start: int, limit: int) -> list[bytes]:
        """Return up to `limit` serialised examples from position `start`. Raises NotFound."""
        return self._datasets.read_dataset_examples(dataset_id, start, limit)

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a ready dataset and its examples. Raises NotFound."""
        self._datasets.delete_dataset(dataset_id)

    # Training data, analyses, jobs and their event logs -------------------------------------

    def save_dataset(self, sha256: str, example_count: int, data: bytes) -> None:
        """Store training data once per content hash."""
        self._training_data.save_dataset(sha256, example_count, data)

    def load_dataset(self, sha256: str) -> bytes:
        """Return stored training data. Raises NotFound."""
        return self._training_data.load_dataset(sha256)

    def create_analysis(
        self, job: AnalysisJob, key: IdempotencyKey | None = None, owner: str = ""
    ) -> tuple[AnalysisJob, bool]:
        """Insert a running job, or return the job an earlier call with the same key started."""
        return self._analyses.create_analysis(job, key, owner)

    def finish_analysis(self, job: AnalysisJob) -> None:
        """Store the job's end: status, last progress, result or error."""
        self._analyses.finish_analysis(job)

    def get_analysis(self, analysis_id: str, tenant: str | None = None) -> AnalysisJob:
        """Return an analysis job (of one of ``tenant``'s agents, or of any for None)."""
        return self._analyses.get_analysis(analysis_id, tenant)

    def fail_orphaned_analyses(self, error: dict[str, Any], now: float) -> int:
        """Mark RUNNING analyses of replicas not alive at ``now`` FAILED; return how many."""
        return self._analyses.fail_orphaned_analyses(error, now)

    def create_job(
        self,
        job: TrainingJob,
        first_event: JobEvent,
        key: IdempotencyKey | None = None,
        owner: str = "",
        limits: JobLimits | None = None,
        training_data: bytes = b"",
    ) -> tuple[TrainingJob, bool]:
        """Insert a job and its first event, or replay the job an earlier same-key call made."""
        return self._jobs.create_job(job, first_event, key, owner, limits, training_data)

    def get_job(self, training_id: str, tenant: str | None = None) -> TrainingJob:
        """Return a job (of one of ``tenant``'s agents, or of any for None)."""
        return self._jobs.get_job(training_id, tenant)

    def list_jobs(
        self,
        *,
        agent_id: str,
        statuses: tuple[str, ...],
        limit: int,
        before_position: int,
        tenant: str | None = None,
    ) -> list[tuple[int, TrainingJob]]:
        """Return (position, job) newest first."""
        return self._jobs.list_jobs(
            agent_id=agent_id,
            statuses=statuses,
            limit=limit,
            before_position=before_position,
            tenant=tenant,
        )

    def append_event(
        self,
        event: JobEvent,
        job: TrainingJob,
        new_version: AgentVersion | None = None,
        owner: str = "",
        activate: bool = True,
    ) -> None:
        """Append an event and save the job (and a new version) in one transaction."""
        self._jobs.append_event(event, job, new_version, owner, activate)

    def list_events(self, training_id: str, from_sequence: int) -> list[JobEvent]:
        """Return a job's events from a sequence number on."""
        return self._jobs.list_events(training_id, from_sequence)

    def listen_job_events(self, heard: Callable[[str], None]) -> Callable[[], None]:
        """Call ``heard(training_id)`` after each job event committed (by any process)."""
        return self._jobs.listen_job_events(heard)

    def request_job_cancel(self, training_id: str) -> None:
        """Ask the owner of an unfinished job to cancel it."""
        self._jobs.request_job_cancel(training_id)

    def cancel_requests(self, owner: str) -> list[str]:
        """Unfinished jobs of ``owner`` whose cancellation was asked for."""
        return self._jobs.cancel_requests(owner)

    def request_job_pause(self, training_id: str) -> None:
        """Ask the owner of an unfinished job to pause it."""
        self._jobs.request_job_pause(training_id)

    def pause_requests(self, owner: str) -> list[str]:
        """Unfinished jobs of ``owner`` whose pause was asked for."""
        return self._jobs.pause_requests(owner)

    def take_paused_job(
        self, training_id: str, owner: str, limits: JobLimits | None = None
    ) -> TrainingJob:
        """Make ``owner`` the owner of a paused job; return it."""
        return self._jobs.take_paused_job(training_id, owner, limits)

    def claim_orphaned_jobs(self, owner: str, now: float) -> list[TrainingJob]:
        """Take every unfinished job whose owner is not alive at ``now``; oldest first."""
        return self._jobs.claim_orphaned_jobs(owner, now)

    # Replicas -------------------------------------------------------------------------------

    def register_replica(
        self, replica_id: str, address: str, now: float, expires: float, sole: bool
    ) -> None:
        """Record a replica alive until ``expires`` (alone: every other one is forgotten)."""
        self._replicas.register_replica(replica_id, address, now, expires, sole)

    def renew_replica(self, replica_id: str, now: float, expires: float) -> bool:
        """Extend a live replica's lease; False when it had expired or is gone."""
        return self._replicas.renew_replica(replica_id, now, expires)

    def remove_replica(self, replica_id: str) -> None:
        """Forget a replica: what it owns is orphaned at once."""
        self._replicas.remove_replica(replica_id)
