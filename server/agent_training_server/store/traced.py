"""A store wrapper that gives each store call made during a request its own span.

Wrapping keeps tracing out of the store implementations: every method of the `Store` interface
runs inside a ``store.<method>`` span (database semantic conventions: ``db.system``,
``db.operation``) when it is called under a traced request or job, and runs untouched otherwise
(see `telemetry.child_span`). Each method is written out, so the wrapper is a `Store` to the type
checker and to every caller, and a method added to the interface cannot be forgotten here: the
class could not be instantiated without it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Any

from opentelemetry import trace

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
from agent_training_server.telemetry import child_span


class TracedStore(Store):
    """A store whose every call is a child span of the current request."""

    def __init__(self, store: Store, tracer: trace.Tracer, *, system: str = "sqlite") -> None:
        """Wrap ``store``; ``system`` is the ``db.system`` its spans name."""
        self._store = store
        self._tracer = tracer
        self._system = system

    @property
    def inner(self) -> Store:
        """The wrapped store."""
        return self._store

    @property
    def commits(self) -> int:
        """The wrapped store's commit count (read on every cached read: not traced)."""
        return self._store.commits

    def _span(self, operation: str) -> AbstractContextManager[None]:
        return child_span(
            self._tracer,
            f"store.{operation}",
            **{"db.system": self._system, "db.operation": operation},
        )

    def create_agent(self, agent: Agent, key: IdempotencyKey | None = None) -> tuple[Agent, bool]:
        """Traced `Store.create_agent`."""
        with self._span("create_agent"):
            return self._store.create_agent(agent, key)

    def get_agent(self, agent_id: str, tenant: str | None = None) -> Agent:
        """Traced `Store.get_agent`."""
        with self._span("get_agent"):
            return self._store.get_agent(agent_id, tenant)

    def list_agents(
        self, limit: int, after_agent_id: str = "", tenant: str | None = None
    ) -> list[Agent]:
        """Traced `Store.list_agents`."""
        with self._span("list_agents"):
            return self._store.list_agents(limit, after_agent_id, tenant)

    def delete_agent(self, agent_id: str) -> None:
        """Traced `Store.delete_agent`."""
        with self._span("delete_agent"):
            self._store.delete_agent(agent_id)

    def add_version(
        self, version: AgentVersion, activate: bool, key: IdempotencyKey | None = None
    ) -> AgentVersion:
        """Traced `Store.add_version`."""
        with self._span("add_version"):
            return self._store.add_version(version, activate, key)

    def replayed_version(self, agent_id: str, key: IdempotencyKey) -> AgentVersion | None:
        """Traced `Store.replayed_version`."""
        with self._span("replayed_version"):
            return self._store.replayed_version(agent_id, key)

    def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Traced `Store.get_version`."""
        with self._span("get_version"):
            return self._store.get_version(agent_id, version_id)

    def agent_with_version(
        self, agent_id: str, version_id: str = "", tenant: str | None = None
    ) -> tuple[Agent, AgentVersion | None]:
        """Traced `Store.agent_with_version`."""
        with self._span("agent_with_version"):
            return self._store.agent_with_version(agent_id, version_id, tenant)

    def list_versions(
        self, agent_id: str, limit: int, before_number: int = 0
    ) -> list[AgentVersion]:
        """Traced `Store.list_versions`."""
        with self._span("list_versions"):
            return self._store.list_versions(agent_id, limit, before_number)

    def activate_version(self, agent_id: str, version_id: str) -> Agent:
        """Traced `Store.activate_version`."""
        with self._span("activate_version"):
            return self._store.activate_version(agent_id, version_id)

    def record_invocations(self, invocations: Sequence[Invocation]) -> None:
        """Traced `Store.record_invocations`."""
        with self._span("record_invocations"):
            self._store.record_invocations(invocations)

    def get_invocation(self, invocation_id: str, tenant: str | None = None) -> Invocation:
        """Traced `Store.get_invocation`."""
        with self._span("get_invocation"):
            return self._store.get_invocation(invocation_id, tenant)

    def record_feedback(self, feedback: Feedback) -> tuple[Feedback, bool]:
        """Traced `Store.record_feedback`."""
        with self._span("record_feedback"):
            return self._store.record_feedback(feedback)

    def list_feedback(self, agent_id: str, since: float = 0.0) -> list[tuple[Feedback, Invocation]]:
        """Traced `Store.list_feedback`."""
        with self._span("list_feedback"):
            return self._store.list_feedback(agent_id, since)

    def record_performance(self, agent_id: str, version_id: str, metrics: dict[str, float]) -> None:
        """Traced `Store.record_performance`."""
        with self._span("record_performance"):
            self._store.record_performance(agent_id, version_id, metrics)

    def performance_history(self, agent_id: str) -> dict[str, dict[str, float]]:
        """Traced `Store.performance_history`."""
        with self._span("performance_history"):
            return self._store.performance_history(agent_id)

    def create_rollout(self, rollout: Rollout, key: IdempotencyKey | None = None) -> Rollout:
        """Traced `Store.create_rollout`."""
        with self._span("create_rollout"):
            return self._store.create_rollout(rollout, key)

    def get_rollout(self, agent_id: str, rollout_id: str = "") -> Rollout:
        """Traced `Store.get_rollout`."""
        with self._span("get_rollout"):
            return self._store.get_rollout(agent_id, rollout_id)

    def running_rollout(self, agent_id: str) -> Rollout | None:
        """Traced `Store.running_rollout`."""
        with self._span("running_rollout"):
            return self._store.running_rollout(agent_id)

    def update_rollout(self, rollout: Rollout) -> Rollout:
        """Traced `Store.update_rollout`."""
        with self._span("update_rollout"):
            return self._store.update_rollout(rollout)

    def end_rollout(self, agent_id: str, rollout_id: str, decision: RolloutDecision) -> Rollout:
        """Traced `Store.end_rollout`."""
        with self._span("end_rollout"):
            return self._store.end_rollout(agent_id, rollout_id, decision)

    def rollout_feedback_counts(self, rollout_id: str) -> dict[str, tuple[int, int]]:
        """Traced `Store.rollout_feedback_counts`."""
        with self._span("rollout_feedback_counts"):
            return self._store.rollout_feedback_counts(rollout_id)

    def rollout_invocations(self, rollout_id: str) -> list[tuple[Invocation, Feedback | None]]:
        """Traced `Store.rollout_invocations`."""
        with self._span("rollout_invocations"):
            return self._store.rollout_invocations(rollout_id)

    def begin_dataset(
        self, dataset: Dataset, key: IdempotencyKey | None = None, owner: str = ""
    ) -> Dataset | None:
        """Traced `Store.begin_dataset`."""
        with self._span("begin_dataset"):
            return self._store.begin_dataset(dataset, key, owner)

    def append_dataset_examples(
        self, dataset_id: str, first_position: int, examples: Sequence[bytes]
    ) -> None:
        """Traced `Store.append_dataset_examples`."""
        with self._span("append_dataset_examples"):
            self._store.append_dataset_examples(dataset_id, first_position, examples)

    def finish_dataset(
        self,
        dataset_id: str,
        example_count: int,
        output_count: int,
        content_sha256: str,
        key: IdempotencyKey | None = None,
    ) -> Dataset:
        """Traced `Store.finish_dataset`."""
        with self._span("finish_dataset"):
            return self._store.finish_dataset(
                dataset_id, example_count, output_count, content_sha256, key
            )

    def discard_dataset(self, dataset_id: str) -> None:
        """Traced `Store.discard_dataset`."""
        with self._span("discard_dataset"):
            self._store.discard_dataset(dataset_id)

    def discard_unfinished_datasets(self, now: float) -> int:
        """`Store.discard_unfinished_datasets`, not traced: replicas call it every second."""
        return self._store.discard_unfinished_datasets(now)

    def get_dataset(self, dataset_id: str, tenant: str | None = None) -> Dataset:
        """Traced `Store.get_dataset`."""
        with self._span("get_dataset"):
            return self._store.get_dataset(dataset_id, tenant)

    def list_datasets(
        self, limit: int, after_name: str = "", tenant: str | None = None
    ) -> list[Dataset]:
        """Traced `Store.list_datasets`."""
        with self._span("list_datasets"):
            return self._store.list_datasets(limit, after_name, tenant)

    def read_dataset_examples(self, dataset_id: str, start: int, limit: int) -> list[bytes]:
        """Traced `Store.read_dataset_examples`."""
        with self._span("read_dataset_examples"):
            return self._store.read_dataset_examples(dataset_id, start, limit)

    def delete_dataset(self, dataset_id: str) -> None:
        """Traced `Store.delete_dataset`."""
        with self._span("delete_dataset"):
            self._store.delete_dataset(dataset_id)

    def save_dataset(self, sha256: str, example_count: int, data: bytes) -> None:
        """Traced `Store.save_dataset`."""
        with self._span("save_dataset"):
            self._store.save_dataset(sha256, example_count, data)

    def load_dataset(self, sha256: str) -> bytes:
        """Traced `Store.load_dataset`."""
        with self._span("load_dataset"):
            return self._store.load_dataset(sha256)

    def create_analysis(
        self, job: AnalysisJob, key: IdempotencyKey | None = None, owner: str = ""
    ) -> tuple[AnalysisJob, bool]:
        """Traced `Store.create_analysis`."""
        with self._span("create_analysis"):
            return self._store.create_analysis(job, key, owner)

    def finish_analysis(self, job: AnalysisJob) -> None:
        """Traced `Store.finish_analysis`."""
        with self._span("finish_analysis"):
            self._store.finish_analysis(job)

    def get_analysis(self, analysis_id: str, tenant: str | None = None) -> AnalysisJob:
        """Traced `Store.get_analysis`."""
        with self._span("get_analysis"):
            return self._store.get_analysis(analysis_id, tenant)

    def fail_orphaned_analyses(self, error: dict[str, Any], now: float) -> int:
        """`Store.fail_orphaned_analyses`, not traced: replicas call it every second."""
        return self._store.fail_orphaned_analyses(error, now)

    def create_job(
        self,
        job: TrainingJob,
        first_event: JobEvent,
        key: IdempotencyKey | None = None,
        owner: str = "",
        limits: JobLimits | None = None,
        training_data: bytes = b"",
    ) -> tuple[TrainingJob, bool]:
        """Traced `Store.create_job`."""
        with self._span("create_job"):
            return self._store.create_job(job, first_event, key, owner, limits, training_data)

    def get_job(self, training_id: str, tenant: str | None = None) -> TrainingJob:
        """Traced `Store.get_job`."""
        with self._span("get_job"):
            return self._store.get_job(training_id, tenant)

    def list_jobs(
        self,
        *,
        agent_id: str,
        statuses: tuple[str, ...],
        limit: int,
        before_position: int,
        tenant: str | None = None,
    ) -> list[tuple[int, TrainingJob]]:
        """Traced `Store.list_jobs`."""
        with self._span("list_jobs"):
            return self._store.list_jobs(
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
        """Traced `Store.append_event`."""
        with self._span("append_event"):
            self._store.append_event(event, job, new_version, owner, activate)

    def list_events(self, training_id: str, from_sequence: int) -> list[JobEvent]:
        """Traced `Store.list_events`."""
        with self._span("list_events"):
            return self._store.list_events(training_id, from_sequence)

    def request_job_cancel(self, training_id: str) -> None:
        """Traced `Store.request_job_cancel`."""
        with self._span("request_job_cancel"):
            self._store.request_job_cancel(training_id)

    # Called by every replica every second: not traced, as ping.

    def listen_job_events(self, heard: Callable[[str], None]) -> Callable[[], None]:
        """`Store.listen_job_events`, not traced."""
        return self._store.listen_job_events(heard)

    def cancel_requests(self, owner: str) -> list[str]:
        """`Store.cancel_requests`, not traced."""
        return self._store.cancel_requests(owner)

    def pause_requests(self, owner: str) -> list[str]:
        """`Store.pause_requests`, not traced."""
        return self._store.pause_requests(owner)

    def request_job_pause(self, training_id: str) -> None:
        """Traced `Store.request_job_pause`."""
        with self._span("request_job_pause"):
            self._store.request_job_pause(training_id)

    def take_paused_job(
        self, training_id: str, owner: str, limits: JobLimits | None = None
    ) -> TrainingJob:
        """Traced `Store.take_paused_job`."""
        with self._span("take_paused_job"):
            return self._store.take_paused_job(training_id, owner, limits)

    def claim_orphaned_jobs(self, owner: str, now: float) -> list[TrainingJob]:
        """`Store.claim_orphaned_jobs`, not traced."""
        return self._store.claim_orphaned_jobs(owner, now)

    def register_replica(
        self, replica_id: str, address: str, now: float, expires: float, sole: bool
    ) -> None:
        """`Store.register_replica`, not traced."""
        self._store.register_replica(replica_id, address, now, expires, sole)

    def renew_replica(self, replica_id: str, now: float, expires: float) -> bool:
        """`Store.renew_replica`, not traced."""
        return self._store.renew_replica(replica_id, now, expires)

    def remove_replica(self, replica_id: str) -> None:
        """`Store.remove_replica`, not traced."""
        self._store.remove_replica(replica_id)

    def ping(self) -> None:
        """`Store.ping`, not traced: the health probe calls it every few seconds."""
        self._store.ping()

    def close(self) -> None:
        """Traced `Store.close`."""
        with self._span("close"):
            self._store.close()
