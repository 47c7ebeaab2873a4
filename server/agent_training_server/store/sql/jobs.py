"""Tables of training data, training jobs and their event logs (part of SqlStore).

A job's record and its event log change together in one transaction, so a reader never sees an
event whose effect on the job is missing, or the reverse. The training data a job was given is
kept once per content hash, so a retried or repeated job stores nothing new.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

from agent_training_server.domain import AgentVersion, JobEvent, JobStatus, TrainingJob
from agent_training_server.errors import NotFound
from agent_training_server.not_found import training_job_not_found
from agent_training_server.store.base import (
    IdempotencyKey,
    JobLimitReached,
    JobLimits,
    JobNotPaused,
    LeaseLost,
)
from agent_training_server.store.sql.agents import VersionTables
from agent_training_server.store.sql.database import Connection, Database
from agent_training_server.store.sql.idempotency import remember, replayed_resource
from agent_training_server.store.sql.replicas import orphaned
from agent_training_server.store.sql.tenancy import agent_tenant_clause, tenant_row

JOB_EVENTS_CHANNEL = "agent_training_job_events"
"""Where each committed job event is announced, with the job's training_id."""
UNFINISHED = f"status IN ('{JobStatus.QUEUED}', '{JobStatus.RUNNING}')"
CANCEL_REQUESTED = 1
"""jobs.cancel_requested: another replica asked the owner to cancel the job."""
PAUSE_REQUESTED = 2
"""jobs.cancel_requested: another replica asked the owner to pause the job (a cancel wins)."""


class TrainingDataTables:
    """The content-addressed ``datasets`` table: training data stored under its hash."""

    def __init__(self, database: Database) -> None:
        """Read and write training data in ``database``."""
        self._database = database

    def save_dataset(self, sha256: str, example_count: int, data: bytes) -> None:
        """Store training data once per content hash."""
        with self._database.write() as db:
            _insert_training_data(db, sha256, example_count, data)

    def load_dataset(self, sha256: str) -> bytes:
        """Return stored training data."""
        with self._database.read() as db:
            row = db.execute(
                "SELECT data FROM datasets WHERE dataset_sha256 = ?", (sha256,)
            ).fetchone()
        if row is None:
            raise NotFound(f"dataset {sha256[:12]} is not stored", code="DATASET_NOT_FOUND")
        return bytes(row["data"])


class JobTables:
    """The jobs and job_events tables; a job's new version is written through ``versions``."""

    def __init__(self, database: Database, versions: VersionTables) -> None:
        """Read and write jobs in ``database``; ``versions`` shares it."""
        self._database = database
        self._versions = versions

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
        with self._database.write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return _job_in(db, replayed), True
            if limits is not None:
                _check_limits(db, limits)  # in the write transaction: no replica counts meanwhile
            if training_data:
                _insert_training_data(db, job.dataset_sha256, job.example_count, training_data)
            db.execute(
                "INSERT INTO jobs (training_id, agent_id, status, job_json, owner)"
                " VALUES (?, ?, ?, ?, ?)",
                (job.training_id, job.agent_id, job.status, _job_json(job), owner),
            )
            _insert_event(db, first_event)
            remember(db, key, job.training_id)
            return job, False

    def get_job(self, training_id: str, tenant: str | None = None) -> TrainingJob:
        """Return a job (of one of ``tenant``'s agents, or of any for None)."""
        with self._database.read() as db:
            return _job_in(db, training_id, tenant)

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
        clauses: list[str] = []
        params: list[str | int] = []
        if tenant is not None:
            # A job belongs to the tenant of its agent.
            condition, tenant_params = agent_tenant_clause(tenant)
            clauses.append(condition)
            params.extend(tenant_params)
        if agent_id:
            clauses.append("agent_id = ?")
            params.append(agent_id)
        if statuses:
            clauses.append(f"status IN ({', '.join('?' for _ in statuses)})")
            params.extend(statuses)
        if before_position:
            clauses.append("position < ?")
            params.append(before_position)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        with self._database.read() as db:
            rows = db.execute(
                f"SELECT position, job_json FROM jobs {where} ORDER BY position DESC LIMIT ?",
                (*params, limit),
            ).fetchall()
        return [(row["position"], _job_from_json(row["job_json"])) for row in rows]

    def append_event(
        self,
        event: JobEvent,
        job: TrainingJob,
        new_version: AgentVersion | None = None,
        owner: str = "",
        activate: bool = True,
    ) -> None:
        """Append an event and save the job (and a new version) in one transaction."""
        with self._database.write() as db:
            # The job's row first, fenced by its owner: a replica that lost the job is refused
            # before anything else (its next sequence number may be the new owner's already).
            fence, fence_params = ("AND owner = ?", (owner,)) if owner else ("", ())
            updated = db.execute(
                f"UPDATE jobs SET status = ?, job_json = ? WHERE training_id = ? {fence}",
                (job.status, _job_json(job), job.training_id, *fence_params),
            ).rowcount
            if not updated:
                if (
                    owner
                    and db.execute(
                        "SELECT 1 FROM jobs WHERE training_id = ?", (job.training_id,)
                    ).fetchone()
                ):
                    raise LeaseLost(f"job {job.training_id} is owned by another replica")
                raise training_job_not_found(job.training_id)
            if new_version is not None:
                self._versions.insert_version(db, new_version, activate=activate)
            # The key (training_id, sequence) refuses a sequence the job already has.
            _insert_event(db, event)
            self._database.announce(db, JOB_EVENTS_CHANNEL, job.training_id)

    def listen_job_events(self, heard: Callable[[str], None]) -> Callable[[], None]:
        """Call ``heard(training_id)`` after each job event committed (by any process)."""
        return self._database.listen(JOB_EVENTS_CHANNEL, heard)

    def list_events(self, training_id: str, from_sequence: int) -> list[JobEvent]:
        """Return a job's events from a sequence number on."""
        with self._database.read() as db:
            rows = db.execute(
                "SELECT * FROM job_events WHERE training_id = ? AND sequence >= ?"
                " ORDER BY sequence",
                (training_id, from_sequence),
            ).fetchall()
        return [
            JobEvent(
                row["training_id"],
                row["sequence"],
                row["time"],
                row["kind"],
                json.loads(row["payload_json"]),
            )
            for row in rows
        ]

    def request_job_cancel(self, training_id: str) -> None:
        """Ask the owner of an unfinished job to cancel it."""
        with self._database.write() as db:
            db.execute(
                f"UPDATE jobs SET cancel_requested = ? WHERE training_id = ? AND {UNFINISHED}",
                (CANCEL_REQUESTED, training_id),
            )

    def request_job_pause(self, training_id: str) -> None:
        """Ask the owner of an unfinished job to pause it (unless a cancel was asked for)."""
        with self._database.write() as db:
            db.execute(
                "UPDATE jobs SET cancel_requested = ? WHERE training_id = ?"
                f" AND cancel_requested = 0 AND {UNFINISHED}",
                (PAUSE_REQUESTED, training_id),
            )

    def pause_requests(self, owner: str) -> list[str]:
        """Unfinished jobs of ``owner`` whose pause was asked for."""
        return self._requests(owner, PAUSE_REQUESTED)

    def take_paused_job(
        self, training_id: str, owner: str, limits: JobLimits | None = None
    ) -> TrainingJob:
        """Make ``owner`` the owner of a paused job, to resume or cancel it; return the job.

        With ``limits``, counted in the same transaction (the job is about to be queued).

        Raises:
            NotFound: no such job.
            JobNotPaused: it is not PAUSED (anymore): nothing changed.
            JobLimitReached: a limit is reached; nothing changed.
        """
        with self._database.write() as db:
            row = db.execute(
                "SELECT status, job_json FROM jobs WHERE training_id = ?", (training_id,)
            ).fetchone()
            if row is None:
                raise training_job_not_found(training_id)
            if row["status"] != JobStatus.PAUSED:
                raise JobNotPaused(row["status"])
            if limits is not None:
                _check_limits(db, limits)
            db.execute(
                "UPDATE jobs SET owner = ?, cancel_requested = 0 WHERE training_id = ?",
                (owner, training_id),
            )
        return _job_from_json(row["job_json"])

    def cancel_requests(self, owner: str) -> list[str]:
        """Unfinished jobs of ``owner`` whose cancellation was asked for."""
        return self._requests(owner, CANCEL_REQUESTED)

    def _requests(self, owner: str, request: int) -> list[str]:
        with self._database.read() as db:
            rows = db.execute(
                f"SELECT training_id FROM jobs WHERE owner = ? AND cancel_requested = ?"
                f" AND {UNFINISHED}",
                (owner, request),
            ).fetchall()
        return [row["training_id"] for row in rows]

    def claim_orphaned_jobs(self, owner: str, now: float) -> list[TrainingJob]:
        """Take every unfinished job whose owner is not alive at ``now``; oldest first."""
        # Replicas ask every second and there is rarely anything to take: a read first keeps
        # the write lock for when there is.
        with self._database.read() as db:
            if not db.execute(
                f"SELECT 1 FROM jobs WHERE {UNFINISHED} AND {orphaned()} LIMIT 1", (now,)
            ).fetchone():
                return []
        with self._database.write() as db:
            rows = db.execute(
                f"SELECT training_id, job_json FROM jobs WHERE {UNFINISHED} AND {orphaned()}"
                " ORDER BY position",
                (now,),
            ).fetchall()
            if rows:
                db.executemany(
                    "UPDATE jobs SET owner = ? WHERE training_id = ?",
                    [(owner, row["training_id"]) for row in rows],
                )
        return [_job_from_json(row["job_json"]) for row in rows]


def _insert_training_data(db: Connection, sha256: str, example_count: int, data: bytes) -> None:
    db.execute(
        "INSERT INTO datasets VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        (sha256, example_count, data, time.time()),
    )


def _check_limits(db: Connection, limits: JobLimits) -> None:
    queued = db.execute(
        "SELECT COUNT(*) FROM jobs WHERE status = ?", (JobStatus.QUEUED,)
    ).fetchone()[0]
    if queued >= limits.max_queued:
        raise JobLimitReached("max_queued", int(queued))
    condition, params = agent_tenant_clause(limits.tenant)
    unfinished = db.execute(
        f"SELECT COUNT(*) FROM jobs WHERE {UNFINISHED} AND {condition}", tuple(params)
    ).fetchone()[0]
    if unfinished >= limits.max_unfinished_per_tenant:
        raise JobLimitReached("max_unfinished_per_tenant", int(unfinished))


def _job_in(db: Connection, training_id: str, tenant: str | None = None) -> TrainingJob:
    row = tenant_row(
        db,
        "SELECT job_json FROM jobs WHERE training_id = ?",
        training_id,
        tenant,
        training_job_not_found,
    )
    return _job_from_json(row["job_json"])


def _insert_event(db: Connection, event: JobEvent) -> None:
    db.execute(
        "INSERT INTO job_events VALUES (?, ?, ?, ?, ?)",
        (event.training_id, event.sequence, event.time, event.kind, json.dumps(event.payload)),
    )


def _job_json(job: TrainingJob) -> str:
    return json.dumps(dataclasses.asdict(job))


def _job_from_json(text: str) -> TrainingJob:
    data: dict[str, Any] = json.loads(text)
    known = {field.name for field in dataclasses.fields(TrainingJob)}
    return TrainingJob(**{key: value for key, value in data.items() if key in known})
