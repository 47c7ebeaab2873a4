"""The store interface: durable state of agents, versions, jobs and their event logs.

Implementations are synchronous and thread-safe; async callers run them in a thread. Every write
is committed before the method returns. The caller's tenant is an argument of each read that
needs it: a store reads no request state of its own. tests/test_store_contract.py checks the
behaviour documented here against every implementation.
"""

from __future__ import annotations

import abc
import dataclasses
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


@dataclasses.dataclass(frozen=True)
class IdempotencyKey:
    """A caller's ``request_id`` for a create call, with a digest of the request it came with."""

    method: str
    request_id: str
    request_sha256: str
    tenant: str
    """Whose key it is (the caller's tenant): the same request_id from two tenants names two
    different calls."""


@dataclasses.dataclass(frozen=True)
class JobLimits:
    """Bounds `Store.create_job` checks in its transaction, so they hold across replicas."""

    max_queued: int
    """Jobs QUEUED in the whole database."""
    max_unfinished_per_tenant: int
    """Jobs QUEUED or RUNNING of one tenant's agents."""
    tenant: str
    """The tenant of the new job's agent."""


class JobLimitReached(Exception):
    """`Store.create_job` refused a job: a `JobLimits` bound is reached; nothing was stored."""

    def __init__(self, limit: str, count: int) -> None:
        """``limit`` is the `JobLimits` field reached, ``count`` the jobs counted against it."""
        super().__init__(f"{limit}: {count}")
        self.limit = limit
        self.count = count


class RolloutRunning(Exception):
    """`Store.create_rollout` refused a rollout: the agent has a running one."""

    def __init__(self, rollout: Rollout) -> None:
        super().__init__(rollout.rollout_id)
        self.rollout = rollout


class LeaseLost(Exception):
    """A replica wrote to a job it no longer owns (another replica took it): nothing stored."""


class JobNotPaused(Exception):
    """A paused job to take is not PAUSED (resumed or cancelled meanwhile): nothing changed."""

    def __init__(self, status: str) -> None:
        super().__init__(f"the job is {status}")
        self.status = status


class Store(abc.ABC):
    """Durable state of the service.

    Several server processes (replicas) may share one store. Each registers itself with a lease
    it renews (`register_replica`, `renew_replica`); a job, analysis or dataset upload records the
    replica that owns it, and one whose owner's lease has expired is an orphan another replica
    takes over (`claim_orphaned_jobs`) or cleans up.
    """

    @property
    @abc.abstractmethod
    def commits(self) -> int:
        """How many write transactions this store has committed since it was opened.

        Readers that keep results in memory compare it to know when to read again. Writes of
        answers, feedback and replica heartbeats are not counted: they change no agent or version.
        """

    # Agents -------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_agent(self, agent: Agent, key: IdempotencyKey | None = None) -> tuple[Agent, bool]:
        """Insert an agent; return it and whether it was replayed from an earlier same-key call.

        Raises:
            AlreadyExists: the id is taken, or the key was used with a different request.
        """

    @abc.abstractmethod
    def get_agent(self, agent_id: str, tenant: str | None = None) -> Agent:
        """Return an agent (of ``tenant``, or of any tenant for None). Raises NotFound.

        Another tenant's agent is looked up by the same query as a missing one and finds no row
        in the same way: the same NotFound, raised in the same place.
        """

    @abc.abstractmethod
    def list_agents(
        self, limit: int, after_agent_id: str = "", tenant: str | None = None
    ) -> list[Agent]:
        """Return up to ``limit`` agents ordered by id, starting after ``after_agent_id``.

        With a ``tenant``, only that tenant's agents.
        """

    @abc.abstractmethod
    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent with all it owns: versions, jobs, analyses, answers. Raises NotFound."""

    # Versions -----------------------------------------------------------------------------

    @abc.abstractmethod
    def add_version(
        self, version: AgentVersion, activate: bool, key: IdempotencyKey | None = None
    ) -> AgentVersion:
        """Insert a version, numbered after the agent's last one; optionally make it active.

        The ``version_number`` of the argument is ignored; the stored version is returned. With
        a key used before for the same request, the version that call made is returned instead.
        """

    @abc.abstractmethod
    def replayed_version(self, agent_id: str, key: IdempotencyKey) -> AgentVersion | None:
        """The version an earlier call with this key made, if any."""

    @abc.abstractmethod
    def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Return a version of an agent. Raises NotFound."""

    @abc.abstractmethod
    def agent_with_version(
        self, agent_id: str, version_id: str = "", tenant: str | None = None
    ) -> tuple[Agent, AgentVersion | None]:
        """An agent (of ``tenant``, as `get_agent`) and one of its versions, read together.

        The version is the active one for "", and None when the agent has no such version, or
        no active one: the caller decides what that means. Raises NotFound for the agent only.
        """

    @abc.abstractmethod
    def list_versions(
        self, agent_id: str, limit: int, before_number: int = 0
    ) -> list[AgentVersion]:
        """Return up to ``limit`` versions newest first, numbered below ``before_number`` if set."""

    @abc.abstractmethod
    def activate_version(self, agent_id: str, version_id: str) -> Agent:
        """Make a version the agent's active one and return the agent. Raises NotFound."""

    # Invocations and feedback ---------------------------------------------------------------

    @abc.abstractmethod
    def record_invocations(self, invocations: Sequence[Invocation]) -> None:
        """Store answers given.

        Answers are written behind, so their agent may be gone: those are dropped, as deleting
        the agent would have dropped them. An id already stored keeps its first answer.
        """

    @abc.abstractmethod
    def get_invocation(self, invocation_id: str, tenant: str | None = None) -> Invocation:
        """Return an invocation (of ``tenant``'s agents, or of any for None). Raises NotFound.

        As for jobs and analyses, another tenant's id is looked up by the same query as a
        missing one and finds no row: same error, same path.
        """

    @abc.abstractmethod
    def record_feedback(self, feedback: Feedback) -> tuple[Feedback, bool]:
        """Store feedback unless its invocation has some; return (stored, was it a duplicate)."""

    @abc.abstractmethod
    def list_feedback(self, agent_id: str, since: float = 0.0) -> list[tuple[Feedback, Invocation]]:
        """Feedback on the agent's answers after `since`, with the answers, oldest first."""

    @abc.abstractmethod
    def record_performance(self, agent_id: str, version_id: str, metrics: dict[str, float]) -> None:
        """Keep production metrics reported while a version was active."""

    @abc.abstractmethod
    def performance_history(self, agent_id: str) -> dict[str, dict[str, float]]:
        """The latest reported value of each metric, by version id, of the agent's versions."""

    # Rollouts -------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_rollout(self, rollout: Rollout, key: IdempotencyKey | None = None) -> Rollout:
        """Store a new running rollout and return it (the earlier one on a replay of ``key``).

        Raises:
            NotFound: the agent or its candidate version is missing.
            RolloutRunning: the agent has a running rollout already (one at a time, across
                replicas: checked in the same transaction).
        """

    @abc.abstractmethod
    def get_rollout(self, agent_id: str, rollout_id: str = "") -> Rollout:
        """The agent's rollout ``rollout_id``, or (empty) its running or else latest one.

        Raises NotFound (code ROLLOUT_NOT_FOUND) when there is none.
        """

    @abc.abstractmethod
    def running_rollout(self, agent_id: str) -> Rollout | None:
        """The agent's running rollout, or None: read on every InvokeAgent (keep it cheap)."""

    @abc.abstractmethod
    def update_rollout(self, rollout: Rollout) -> Rollout:
        """Store a running rollout's new mode, traffic share or policy; return it.

        Raises FailedPrecondition (code ROLLOUT_ENDED) when it is no longer running.
        """

    @abc.abstractmethod
    def end_rollout(self, agent_id: str, rollout_id: str, decision: RolloutDecision) -> Rollout:
        """End a running rollout with ``decision``; return it as ended.

        ``promote``: in the same transaction the candidate becomes the agent's active version.
        Raises FailedPrecondition (code ROLLOUT_ENDED) when it is no longer running (a
        concurrent decision won), NotFound when it or the agent is gone.
        """

    @abc.abstractmethod
    def rollout_feedback_counts(self, rollout_id: str) -> dict[str, tuple[int, int]]:
        """Per arm of the rollout: (answers with feedback, those with a reward above 0).

        Arms are ``active`` and ``candidate`` (shadow answers are no arm's); arms without
        feedback are absent. Counted by the database: a rollout's policy reads it after every
        feedback.
        """

    @abc.abstractmethod
    def rollout_invocations(self, rollout_id: str) -> list[tuple[Invocation, Feedback | None]]:
        """Every answer recorded under the rollout, shadow ones included, with its feedback."""

    # Named datasets -------------------------------------------------------------------------

    @abc.abstractmethod
    def begin_dataset(
        self, dataset: Dataset, key: IdempotencyKey | None = None, owner: str = ""
    ) -> Dataset | None:
        """Reserve a dataset's name and start writing it (by replica ``owner``); return None.

        Returns the earlier dataset instead on a replay of a key `finish_dataset` recorded.
        Raises AlreadyExists when the name is taken, by a finished dataset or one being written.
        """

    @abc.abstractmethod
    def append_dataset_examples(
        self, dataset_id: str, first_position: int, examples: Sequence[bytes]
    ) -> None:
        """Store serialised examples of a dataset being written."""

    @abc.abstractmethod
    def finish_dataset(
        self,
        dataset_id: str,
        example_count: int,
        output_count: int,
        content_sha256: str,
        key: IdempotencyKey | None = None,
    ) -> Dataset:
        """Make a written dataset visible, with its totals; ``key`` is recorded for replays."""

    @abc.abstractmethod
    def discard_dataset(self, dataset_id: str) -> None:
        """Drop a dataset that could not be finished."""

    @abc.abstractmethod
    def discard_unfinished_datasets(self, now: float) -> int:
        """Drop datasets left half-written by replicas not alive at ``now``; return how many."""

    @abc.abstractmethod
    def get_dataset(self, dataset_id: str, tenant: str | None = None) -> Dataset:
        """Return a dataset (of ``tenant``, or of any for None); as `get_agent`. Raises NotFound.

        A dataset still being written is not found until `finish_dataset`; the same holds for
        `list_datasets`, `read_dataset_examples` and `delete_dataset`.
        """

    @abc.abstractmethod
    def list_datasets(
        self, limit: int, after_name: str = "", tenant: str | None = None
    ) -> list[Dataset]:
        """Return up to `limit` datasets ordered by name, after `after_name` (of `tenant`)."""

    @abc.abstractmethod
    def read_dataset_examples(self, dataset_id: str, start: int, limit: int) -> list[bytes]:
        """Return serialised examples from position `start`. Raises NotFound."""

    @abc.abstractmethod
    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset and its examples. Raises NotFound."""

    # Datasets, jobs and their event logs ---------------------------------------------------

    @abc.abstractmethod
    def save_dataset(self, sha256: str, example_count: int, data: bytes) -> None:
        """Store training data under its content hash (a no-op when already stored).

        Unrelated to the named datasets above: these are the bytes a training job was given.
        """

    @abc.abstractmethod
    def load_dataset(self, sha256: str) -> bytes:
        """Return stored training data. Raises NotFound."""

    @abc.abstractmethod
    def create_analysis(
        self, job: AnalysisJob, key: IdempotencyKey | None = None, owner: str = ""
    ) -> tuple[AnalysisJob, bool]:
        """Insert a job running on replica ``owner``; return it and whether it was a replay."""

    @abc.abstractmethod
    def finish_analysis(self, job: AnalysisJob) -> None:
        """Store an analysis job's end: status, last progress, result or error."""

    @abc.abstractmethod
    def get_analysis(self, analysis_id: str, tenant: str | None = None) -> AnalysisJob:
        """Return an analysis job (of ``tenant``'s agents, or of any for None). Raises NotFound."""

    @abc.abstractmethod
    def fail_orphaned_analyses(self, error: dict[str, Any], now: float) -> int:
        """Mark FAILED with ``error`` the RUNNING analyses of replicas not alive at ``now``.

        Returns how many. An analysis holds no checkpoint: nothing resumes it.
        """

    @abc.abstractmethod
    def create_job(
        self,
        job: TrainingJob,
        first_event: JobEvent,
        key: IdempotencyKey | None = None,
        owner: str = "",
        limits: JobLimits | None = None,
        training_data: bytes = b"",
    ) -> tuple[TrainingJob, bool]:
        """Insert a job owned by replica ``owner`` with its first event.

        ``training_data`` is stored with it (as `save_dataset` under the job's dataset_sha256),
        in the same transaction: a job refused stores none. Returns the job and whether it was a
        same-key replay (a replay is never refused).

        Raises:
            JobLimitReached: ``limits`` counted in the same transaction; nothing stored.
        """

    @abc.abstractmethod
    def get_job(self, training_id: str, tenant: str | None = None) -> TrainingJob:
        """Return a job (of ``tenant``'s agents, or of any for None). Raises NotFound."""

    @abc.abstractmethod
    def list_jobs(
        self,
        *,
        agent_id: str,
        statuses: tuple[str, ...],
        limit: int,
        before_position: int,
        tenant: str | None = None,
    ) -> list[tuple[int, TrainingJob]]:
        """Return (position, job) newest first; filters are ignored when empty, 0 or None.

        With a ``tenant``, only jobs of that tenant's agents.
        """

    @abc.abstractmethod
    def append_event(
        self,
        event: JobEvent,
        job: TrainingJob,
        new_version: AgentVersion | None = None,
        owner: str = "",
        activate: bool = True,
    ) -> None:
        """Append an event, save the job's state and maybe add a version, atomically.

        The version becomes the agent's active one unless ``activate`` is off (a job whose
        version starts a rollout instead).

        ``event.sequence`` must be the job's last sequence plus one: a sequence the job already
        has is refused with an error, and then nothing of the call is stored (neither the event,
        nor the job's state, nor the version). With an ``owner``, a job another replica owns is
        refused with LeaseLost, and nothing is stored either.
        """

    @abc.abstractmethod
    def list_events(self, training_id: str, from_sequence: int) -> list[JobEvent]:
        """Return a job's events with sequence >= from_sequence, in order."""

    @abc.abstractmethod
    def listen_job_events(self, heard: Callable[[str], None]) -> Callable[[], None]:
        """Call ``heard(training_id)`` after each job event committed; return how to stop.

        It is called on a thread of the store's, for the events of every process.
        A store only one process uses (SQLite) announces nothing: that process publishes its
        own events. Announcements can be lost (the database away for a while): a listener
        reads the log again now and then all the same.
        """

    @abc.abstractmethod
    def request_job_cancel(self, training_id: str) -> None:
        """Ask the replica that owns an unfinished job to cancel it (see `cancel_requests`)."""

    @abc.abstractmethod
    def cancel_requests(self, owner: str) -> list[str]:
        """Unfinished jobs of replica ``owner`` whose cancellation was asked for."""

    @abc.abstractmethod
    def request_job_pause(self, training_id: str) -> None:
        """Ask the replica that owns an unfinished job to pause it (see `pause_requests`).

        A cancellation asked for before wins: the pause is not recorded.
        """

    @abc.abstractmethod
    def pause_requests(self, owner: str) -> list[str]:
        """Unfinished jobs of replica ``owner`` whose pause was asked for."""

    @abc.abstractmethod
    def take_paused_job(
        self, training_id: str, owner: str, limits: JobLimits | None = None
    ) -> TrainingJob:
        """Make replica ``owner`` the owner of a PAUSED job (to resume or cancel it); return it.

        Clears any pause or cancel request. With ``limits``, they are counted in the same
        transaction, as for a new job.

        Raises:
            NotFound: no such job.
            JobNotPaused: the job is not PAUSED; nothing changed.
            JobLimitReached: a limit is reached; nothing changed.
        """

    # Replicas -------------------------------------------------------------------------------

    @abc.abstractmethod
    def register_replica(
        self, replica_id: str, address: str, now: float, expires: float, sole: bool
    ) -> None:
        """Record a replica alive until ``expires``.

        ``sole``: it is the only process using the store (SQLite's data folder lock says so),
        so every other replica recorded is dead and their work orphaned at once.
        """

    @abc.abstractmethod
    def renew_replica(self, replica_id: str, now: float, expires: float) -> bool:
        """Extend a replica's lease to ``expires``; False when it had expired (or was removed).

        A replica whose lease expired may have lost its jobs to another: it must let them go.
        """

    @abc.abstractmethod
    def remove_replica(self, replica_id: str) -> None:
        """Forget a replica that stops: what it owns is orphaned at once."""

    @abc.abstractmethod
    def claim_orphaned_jobs(self, owner: str, now: float) -> list[TrainingJob]:
        """Make ``owner`` the owner of every unfinished job of a replica not alive at ``now``.

        Returns those jobs, oldest first. Atomic: two replicas never claim the same job.
        """

    @abc.abstractmethod
    def ping(self) -> None:
        """Return once the database answers a query.

        Raises:
            Unavailable: it does not answer (a database server down or unreachable).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Release the store's resources; calling it again does nothing.

        What was written stays stored: a store opened again on the same data reads it.
        """
