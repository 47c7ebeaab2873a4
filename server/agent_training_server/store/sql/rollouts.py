"""The rollouts table (part of SqlStore): candidate versions meeting live traffic.

A rollout row holds its two arms (the candidate and the version active when it started), how
the candidate meets traffic, its policy and, once ended, the decision that ended it. An agent
has at most one ``running`` rollout: the check is made in the creating transaction (writers are
serialised) and a partial unique index holds it in the database as well, whatever writes. The
answers of a rollout are invocation rows naming it (sql/feedback.py writes them).
"""

from __future__ import annotations

import dataclasses
import json
import time

from agent_training_server.domain import (
    Feedback,
    Invocation,
    Rollout,
    RolloutDecision,
    RolloutPolicy,
    RolloutState,
)
from agent_training_server.errors import FailedPrecondition
from agent_training_server.not_found import rollout_not_found
from agent_training_server.store.base import IdempotencyKey, RolloutRunning
from agent_training_server.store.sql.agents import AgentTables, VersionTables
from agent_training_server.store.sql.database import Connection, Database, Row
from agent_training_server.store.sql.feedback import invocation_from_row
from agent_training_server.store.sql.idempotency import remember, replayed_resource

_ENDED_STATE = {"promote": RolloutState.PROMOTED, "abort": RolloutState.ABORTED}
"""A decision's action, and the state it leaves the rollout in."""


class RolloutTables:
    """The rollouts table; a rollout's agent and versions are read through ``versions``."""

    def __init__(self, database: Database, agents: AgentTables, versions: VersionTables) -> None:
        """Read and write rollouts in ``database``; ``agents`` and ``versions`` share it."""
        self._database = database
        self._agents = agents
        self._versions = versions

    def create_rollout(self, rollout: Rollout, key: IdempotencyKey | None = None) -> Rollout:
        """Insert a running rollout, or return the one an earlier call with the same key made.

        Raises:
            NotFound: the agent or its candidate version is missing.
            RolloutRunning: the agent has a running rollout.
        """
        with self._database.write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return _rollout_in(db, rollout.agent_id, replayed)
            self._versions.version_in(db, rollout.agent_id, rollout.candidate_version_id)
            running = _running_in(db, rollout.agent_id)
            if running is not None:
                raise RolloutRunning(running)
            r = dataclasses.replace(rollout, state=RolloutState.RUNNING, decisions=())
            db.execute(
                "INSERT INTO rollouts (rollout_id, agent_id, candidate_version_id,"
                " active_version_id, mode, traffic_share, policy_json, state, decisions_json,"
                " create_time, update_time) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    r.rollout_id,
                    r.agent_id,
                    r.candidate_version_id,
                    r.active_version_id,
                    r.mode,
                    r.traffic_share,
                    _policy_json(r.policy),
                    r.state,
                    "[]",
                    r.create_time,
                    r.update_time,
                ),
            )
            remember(db, key, r.rollout_id)
            return _rollout_in(db, r.agent_id, r.rollout_id)

    def get_rollout(self, agent_id: str, rollout_id: str = "") -> Rollout:
        """The agent's rollout ``rollout_id``, or (empty) its running or else latest one.

        Raises:
            NotFound: no such agent (AGENT_NOT_FOUND), or no such rollout (ROLLOUT_NOT_FOUND).
        """
        with self._database.read() as db:
            self._agents.agent_in(db, agent_id)
            if rollout_id:
                return _rollout_in(db, agent_id, rollout_id)
            row = db.execute(
                "SELECT * FROM rollouts WHERE agent_id = ?"
                " ORDER BY CASE WHEN state = ? THEN 0 ELSE 1 END, create_time DESC,"
                " rollout_id DESC LIMIT 1",
                (agent_id, RolloutState.RUNNING),
            ).fetchone()
        if row is None:
            raise rollout_not_found(agent_id)
        return _rollout_from_row(row)

    def running_rollout(self, agent_id: str) -> Rollout | None:
        """The agent's running rollout, or None: one indexed lookup, no check of the agent."""
        with self._database.read() as db:
            return _running_in(db, agent_id)

    def update_rollout(self, rollout: Rollout) -> Rollout:
        """Store a running rollout's mode, traffic share and policy; return it as stored.

        Its ``update_time`` is stored as given, or the current time when 0.

        Raises:
            NotFound: the rollout (or its agent) is gone.
            FailedPrecondition: ROLLOUT_ENDED, it is no longer running.
        """
        r = rollout
        with self._database.write() as db:
            _running_or_raise(db, r.agent_id, r.rollout_id)
            db.execute(
                "UPDATE rollouts SET mode = ?, traffic_share = ?, policy_json = ?, update_time = ?"
                " WHERE agent_id = ? AND rollout_id = ?",
                (
                    r.mode,
                    r.traffic_share,
                    _policy_json(r.policy),
                    r.update_time or time.time(),
                    r.agent_id,
                    r.rollout_id,
                ),
            )
            return _rollout_in(db, r.agent_id, r.rollout_id)

    def end_rollout(self, agent_id: str, rollout_id: str, decision: RolloutDecision) -> Rollout:
        """End a running rollout with ``decision``; on ``promote`` activate its candidate too.

        One transaction: the rollout's end and the agent's new active version are stored
        together, and the commit counts (cached reads of the agent are read again). The decision
        is stored with a ``time`` of now when it has none.

        Raises:
            ValueError: the action is neither ``promote`` nor ``abort``.
            NotFound: the agent, the rollout or (promote) its candidate version is gone.
            FailedPrecondition: ROLLOUT_ENDED, it is no longer running.
        """
        state = _ENDED_STATE.get(decision.action)
        if state is None:
            raise ValueError(f"a rollout ends with 'promote' or 'abort', not {decision.action!r}")
        if not decision.time:
            decision = dataclasses.replace(decision, time=time.time())
        with self._database.write() as db:
            self._agents.agent_in(db, agent_id)
            rollout = _running_or_raise(db, agent_id, rollout_id)
            decisions = (*rollout.decisions, decision)
            db.execute(
                "UPDATE rollouts SET state = ?, decisions_json = ?, update_time = ?"
                " WHERE agent_id = ? AND rollout_id = ?",
                (state, _decisions_json(decisions), decision.time, agent_id, rollout_id),
            )
            if state == RolloutState.PROMOTED:
                candidate = rollout.candidate_version_id
                self._versions.version_in(db, agent_id, candidate)
                self._agents.set_active_version(db, agent_id, candidate, decision.time)
            return _rollout_in(db, agent_id, rollout_id)

    def rollout_feedback_counts(self, rollout_id: str) -> dict[str, tuple[int, int]]:
        """Per returned arm: (answers with feedback, those rewarded above 0)."""
        with self._database.read() as db:
            rows = db.execute(
                "SELECT i.arm, COUNT(*) AS feedback,"
                " SUM(CASE WHEN f.reward > 0 THEN 1 ELSE 0 END) AS successes"
                " FROM invocations i JOIN feedback f ON f.invocation_id = i.invocation_id"
                " WHERE i.rollout_id = ? AND i.rollout_id <> ''"
                " AND i.arm IN ('active', 'candidate') GROUP BY i.arm",
                (rollout_id,),
            ).fetchall()
        return {row["arm"]: (int(row["feedback"]), int(row["successes"])) for row in rows}

    def rollout_invocations(self, rollout_id: str) -> list[tuple[Invocation, Feedback | None]]:
        """Every answer recorded under the rollout, shadow ones included, with its feedback.

        Oldest first (by time, then id).
        """
        with self._database.read() as db:
            # "rollout_id <> ''" repeats the condition of the partial index invocations_by_rollout
            # so that both databases' planners use it.
            rows = db.execute(
                "SELECT i.*, f.feedback_id, f.agent_id AS feedback_agent_id, f.feedback,"
                " f.reward, f.corrected_output, f.comment, f.time AS feedback_time"
                " FROM invocations i LEFT JOIN feedback f ON f.invocation_id = i.invocation_id"
                " WHERE i.rollout_id = ? AND i.rollout_id <> ''"
                " ORDER BY i.time, i.invocation_id",
                (rollout_id,),
            ).fetchall()
        return [(invocation_from_row(row), _feedback_of_joined(row)) for row in rows]


def _rollout_in(db: Connection, agent_id: str, rollout_id: str) -> Rollout:
    row = db.execute(
        "SELECT * FROM rollouts WHERE agent_id = ? AND rollout_id = ?", (agent_id, rollout_id)
    ).fetchone()
    if row is None:
        raise rollout_not_found(agent_id, rollout_id)
    return _rollout_from_row(row)


def _running_in(db: Connection, agent_id: str) -> Rollout | None:
    # Answered from the partial unique index rollouts_running_per_agent: the state is written
    # as its literal, as in the index, so that SQLite's planner can match the two.
    row = db.execute(
        "SELECT * FROM rollouts WHERE agent_id = ? AND state = 'running'", (agent_id,)
    ).fetchone()
    return None if row is None else _rollout_from_row(row)


def _running_or_raise(db: Connection, agent_id: str, rollout_id: str) -> Rollout:
    """The rollout, read in the caller's transaction, if it is still running.

    Raises:
        NotFound: no such rollout of the agent.
        FailedPrecondition: ROLLOUT_ENDED, it is promoted or aborted.
    """
    rollout = _rollout_in(db, agent_id, rollout_id)
    if rollout.state != RolloutState.RUNNING:
        raise FailedPrecondition(
            f"rollout {rollout_id!r} of agent {agent_id!r} has ended ({rollout.state})",
            code="ROLLOUT_ENDED",
            hint="A promoted or aborted rollout changes no more: GetRollout shows the decision"
            " that ended it; StartRollout starts another.",
        )
    return rollout


def _policy_json(policy: RolloutPolicy | None) -> str:
    return "" if policy is None else json.dumps(dataclasses.asdict(policy), sort_keys=True)


def _decisions_json(decisions: tuple[RolloutDecision, ...]) -> str:
    return json.dumps([dataclasses.asdict(d) for d in decisions], sort_keys=True)


def _rollout_from_row(row: Row) -> Rollout:
    policy_json = row["policy_json"]
    return Rollout(
        rollout_id=row["rollout_id"],
        agent_id=row["agent_id"],
        candidate_version_id=row["candidate_version_id"],
        active_version_id=row["active_version_id"],
        mode=row["mode"],
        traffic_share=row["traffic_share"],
        policy=RolloutPolicy(**json.loads(policy_json)) if policy_json else None,
        state=row["state"],
        decisions=tuple(RolloutDecision(**d) for d in json.loads(row["decisions_json"])),
        create_time=row["create_time"],
        update_time=row["update_time"],
    )


def _feedback_of_joined(row: Row) -> Feedback | None:
    if row["feedback_id"] is None:
        return None
    return Feedback(
        feedback_id=row["feedback_id"],
        invocation_id=row["invocation_id"],
        agent_id=row["feedback_agent_id"],
        feedback=row["feedback"],
        reward=row["reward"],
        corrected_output=row["corrected_output"],
        comment=row["comment"],
        time=row["feedback_time"],
    )
