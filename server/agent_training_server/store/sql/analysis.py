"""The table of analysis jobs (part of SqlStore).

A job is written when it starts and when it ends, with its result; progress in between lives
only in memory (it is re-created by running the analysis again, never needed after a restart).
"""

from __future__ import annotations

import json
from typing import Any

from agent_training_server.domain import AnalysisJob, AnalysisStatus
from agent_training_server.not_found import analysis_not_found
from agent_training_server.store.base import IdempotencyKey
from agent_training_server.store.sql.database import Connection, Database
from agent_training_server.store.sql.idempotency import remember, replayed_resource
from agent_training_server.store.sql.replicas import orphaned
from agent_training_server.store.sql.tenancy import tenant_row


class AnalysisTables:
    """The analysis_jobs table."""

    def __init__(self, database: Database) -> None:
        """Read and write analysis jobs in ``database``."""
        self._database = database

    def create_analysis(
        self, job: AnalysisJob, key: IdempotencyKey | None = None, owner: str = ""
    ) -> tuple[AnalysisJob, bool]:
        """Insert a running job, or return the job an earlier call with the same key started."""
        with self._database.write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return _analysis_in(db, replayed), True
            _save(db, job, insert=True)
            db.execute(
                "UPDATE analysis_jobs SET owner = ? WHERE analysis_id = ?", (owner, job.analysis_id)
            )
            remember(db, key, job.analysis_id)
            return job, False

    def finish_analysis(self, job: AnalysisJob) -> None:
        """Store the job's end: status, last progress, result or error."""
        with self._database.write() as db:
            _save(db, job, insert=False)

    def get_analysis(self, analysis_id: str, tenant: str | None = None) -> AnalysisJob:
        """Return an analysis job (of one of ``tenant``'s agents, or of any for None)."""
        with self._database.read() as db:
            return _analysis_in(db, analysis_id, tenant)

    def fail_orphaned_analyses(self, error: dict[str, Any], now: float) -> int:
        """Mark RUNNING analyses of replicas not alive at ``now`` FAILED; return how many."""
        with self._database.read() as db:  # usually none: the write lock only when needed
            if not db.execute(
                f"SELECT 1 FROM analysis_jobs WHERE status = ? AND {orphaned()} LIMIT 1",
                (AnalysisStatus.RUNNING, now),
            ).fetchone():
                return 0
        with self._database.write() as db:
            return db.execute(
                "UPDATE analysis_jobs SET status = ?, error_json = ?, end_time = ?"
                f" WHERE status = ? AND {orphaned()}",
                (AnalysisStatus.FAILED, json.dumps(error), now, AnalysisStatus.RUNNING, now),
            ).rowcount


def _save(db: Connection, job: AnalysisJob, insert: bool) -> None:
    values = (
        job.agent_id,
        job.status,
        json.dumps(job.progress),
        job.result,
        json.dumps(job.error),
        job.create_time,
        job.end_time,
        job.trace_id,
        job.analysis_id,
    )
    if insert:
        db.execute(
            "INSERT INTO analysis_jobs (agent_id, status, progress_json, result, error_json,"
            " create_time, end_time, trace_id, analysis_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            values,
        )
    else:
        db.execute(
            "UPDATE analysis_jobs SET agent_id = ?, status = ?, progress_json = ?, result = ?,"
            " error_json = ?, create_time = ?, end_time = ?, trace_id = ? WHERE analysis_id = ?",
            values,
        )


def _analysis_in(db: Connection, analysis_id: str, tenant: str | None = None) -> AnalysisJob:
    row = tenant_row(
        db,
        "SELECT * FROM analysis_jobs WHERE analysis_id = ?",
        analysis_id,
        tenant,
        analysis_not_found,
    )
    return AnalysisJob(
        analysis_id=row["analysis_id"],
        agent_id=row["agent_id"],
        status=row["status"],
        progress=json.loads(row["progress_json"]),
        result=bytes(row["result"]),
        error=json.loads(row["error_json"]),
        create_time=row["create_time"],
        end_time=row["end_time"],
        trace_id=row["trace_id"],
    )
