"""Tables of invocations (answers given) and the feedback on them (part of SqlStore).

An invocation row is what InvokeAgent answered: the version, the input, the output chosen and
the probability the behaviour chose it with (its propensity), so feedback on it can teach the
reinforcement engine later. An answer given during a rollout also names the rollout and its
arm (sql/rollouts.py reads them back). Feedback is unique per invocation: the first one recorded
stands.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

from agent_training_server.domain import Feedback, Invocation
from agent_training_server.not_found import invocation_not_found
from agent_training_server.store.sql.database import Database, Row
from agent_training_server.store.sql.tenancy import tenant_row

_INVOCATION_COLUMNS = (
    "invocation_id, agent_id, version_id, input, context_json, output, confidence, propensity,"
    " explored, is_fallback, time, rollout_id, arm, shadow_of, latency_ms"
)
"""Named, not by position: the rollout columns came later (added with ALTER TABLE on open)."""


class FeedbackTables:
    """The invocations, feedback and performance_reports tables."""

    def __init__(self, database: Database) -> None:
        """Read and write answers, feedback and reported metrics in ``database``."""
        self._database = database

    def record_invocations(self, invocations: Sequence[Invocation]) -> None:
        """Store answers given (one transaction for the batch).

        Answers are written behind, so an agent may be deleted before its last answers arrive:
        those are dropped, as the deletion would have dropped them, instead of failing the batch.
        """
        with self._database.write(counted=False) as db:
            db.executemany(
                f"INSERT INTO invocations ({_INVOCATION_COLUMNS})"
                " SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?"
                " WHERE EXISTS (SELECT 1 FROM agents WHERE agent_id = ?) ON CONFLICT DO NOTHING",
                [
                    (
                        i.invocation_id,
                        i.agent_id,
                        i.version_id,
                        i.input,
                        json.dumps(list(i.context)),
                        i.output,
                        i.confidence,
                        i.propensity,
                        int(i.explored),
                        int(i.is_fallback),
                        i.time,
                        i.rollout_id,
                        i.arm,
                        i.shadow_of,
                        i.latency_ms,
                        i.agent_id,
                    )
                    for i in invocations
                ],
            )

    def get_invocation(self, invocation_id: str, tenant: str | None = None) -> Invocation:
        """Return an invocation (of one of ``tenant``'s agents, or of any). Raises NotFound."""
        with self._database.read() as db:
            row = tenant_row(
                db,
                "SELECT * FROM invocations WHERE invocation_id = ?",
                invocation_id,
                tenant,
                invocation_not_found,
            )
        return invocation_from_row(row)

    def record_feedback(self, feedback: Feedback) -> tuple[Feedback, bool]:
        """Store feedback unless the invocation has some; return (stored feedback, duplicate)."""
        with self._database.write(counted=False) as db:
            row = db.execute(
                "SELECT * FROM feedback WHERE invocation_id = ?", (feedback.invocation_id,)
            ).fetchone()
            if row is not None:
                return _feedback_from_row(row), True
            f = feedback
            db.execute(
                "INSERT INTO feedback VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    f.feedback_id,
                    f.invocation_id,
                    f.agent_id,
                    f.feedback,
                    f.reward,
                    f.corrected_output,
                    f.comment,
                    f.time,
                ),
            )
            return feedback, False

    def record_performance(self, agent_id: str, version_id: str, metrics: dict[str, float]) -> None:
        """Keep production metrics reported while `version_id` was active."""
        with self._database.write() as db:
            db.execute(
                "INSERT INTO performance_reports VALUES (?, ?, ?, ?)",
                (agent_id, version_id, json.dumps(metrics, sort_keys=True), time.time()),
            )

    def performance_history(self, agent_id: str) -> dict[str, dict[str, float]]:
        """The latest reported metrics of each of the agent's versions."""
        with self._database.read() as db:
            rows = db.execute(
                "SELECT version_id, metrics_json FROM performance_reports WHERE agent_id = ?"
                " ORDER BY time",
                (agent_id,),
            ).fetchall()
        history: dict[str, dict[str, float]] = {}
        for row in rows:
            history.setdefault(row["version_id"], {}).update(json.loads(row["metrics_json"]))
        return history

    def list_feedback(self, agent_id: str, since: float = 0.0) -> list[tuple[Feedback, Invocation]]:
        """Feedback on the agent's answers after `since`, with the answers, oldest first."""
        with self._database.read() as db:
            rows = db.execute(
                "SELECT f.*, i.version_id, i.input, i.context_json, i.output, i.confidence,"
                " i.propensity, i.explored, i.is_fallback, i.time AS invocation_time,"
                " i.rollout_id, i.arm, i.shadow_of, i.latency_ms"
                " FROM feedback f JOIN invocations i USING (invocation_id)"
                " WHERE f.agent_id = ? AND f.time > ? ORDER BY f.time, f.feedback_id",
                (agent_id, since),
            ).fetchall()
        return [
            (_feedback_from_row(row), invocation_from_row(row, time_column="invocation_time"))
            for row in rows
        ]


def _feedback_from_row(row: Row) -> Feedback:
    return Feedback(
        feedback_id=row["feedback_id"],
        invocation_id=row["invocation_id"],
        agent_id=row["agent_id"],
        feedback=row["feedback"],
        reward=row["reward"],
        corrected_output=row["corrected_output"],
        comment=row["comment"],
        time=row["time"],
    )


def invocation_from_row(row: Row, time_column: str = "time") -> Invocation:
    """The invocation of a row with the invocations table's columns (its time in ``time_column``).

    Rows of a database older than the rollout columns never reach here without them: they are
    added on open (sqlite_schema, postgres_migrations).
    """
    return Invocation(
        invocation_id=row["invocation_id"],
        agent_id=row["agent_id"],
        version_id=row["version_id"],
        input=row["input"],
        context=tuple(json.loads(row["context_json"])),
        output=row["output"],
        confidence=row["confidence"],
        propensity=row["propensity"],
        explored=bool(row["explored"]),
        is_fallback=bool(row["is_fallback"]),
        time=row[time_column],
        rollout_id=row["rollout_id"],
        arm=row["arm"],
        shadow_of=row["shadow_of"],
        latency_ms=row["latency_ms"],
    )
