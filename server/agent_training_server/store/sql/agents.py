"""Tables of agents and their versions (part of SqlStore).

An agent row holds its id, names, default behaviour and which version it serves; a version row
is an immutable record of one trained model, numbered 1, 2, ... per agent. Deleting an agent
deletes its versions, jobs, analyses and answers with it (ON DELETE CASCADE).
"""

from __future__ import annotations

import json
import time

from agent_training_server.domain import Agent, AgentVersion, BehaviorSettings
from agent_training_server.errors import AlreadyExists
from agent_training_server.not_found import agent_not_found, version_not_found
from agent_training_server.store.base import IdempotencyKey
from agent_training_server.store.sql.database import Connection, Database, Row
from agent_training_server.store.sql.idempotency import remember, replayed_resource
from agent_training_server.store.sql.tenancy import tenant_clause, tenant_row

_AGENT_SELECT = (
    "SELECT a.*, (SELECT COUNT(*) FROM versions v WHERE v.agent_id = a.agent_id) AS version_count"
    " FROM agents a"
)


class AgentTables:
    """The agents table."""

    def __init__(self, database: Database) -> None:
        """Read and write agents in ``database``."""
        self._database = database

    def create_agent(self, agent: Agent, key: IdempotencyKey | None = None) -> tuple[Agent, bool]:
        """Insert an agent, or replay the agent an earlier call with the same key created."""
        with self._database.write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return self.agent_in(db, replayed), True
            exists = db.execute(
                "SELECT 1 FROM agents WHERE agent_id = ?", (agent.agent_id,)
            ).fetchone()
            if exists:
                raise AlreadyExists(
                    f"agent {agent.agent_id!r} already exists",
                    code="AGENT_ALREADY_EXISTS",
                    hint="Choose another agent_id, or GetAgent to use the existing one.",
                )
            db.execute(
                "INSERT INTO agents (agent_id, display_name, description, labels_json,"
                " behavior_json, active_version_id, create_time, update_time, tenant)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    agent.agent_id,
                    agent.display_name,
                    agent.description,
                    json.dumps(agent.labels, sort_keys=True),
                    json.dumps(agent.default_behavior.to_json()),
                    agent.active_version_id,
                    agent.create_time,
                    agent.update_time,
                    agent.tenant,
                ),
            )
            remember(db, key, agent.agent_id)
            return self.agent_in(db, agent.agent_id), False

    def get_agent(self, agent_id: str, tenant: str | None = None) -> Agent:
        """Return an agent (of ``tenant``) or raise NotFound."""
        with self._database.read() as db:
            return self.agent_in(db, agent_id, tenant)

    def list_agents(
        self, limit: int, after_agent_id: str = "", tenant: str | None = None
    ) -> list[Agent]:
        """Return a page of agents ordered by id (of one tenant, or of all for None)."""
        condition, params = tenant_clause(tenant, "a.tenant")
        with self._database.read() as db:
            rows = db.execute(
                f"{_AGENT_SELECT} WHERE a.agent_id > ? AND {condition} ORDER BY a.agent_id LIMIT ?",
                (after_agent_id, *params, limit),
            ).fetchall()
        return [_agent_from_row(row) for row in rows]

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; its versions, jobs and answers go with it (ON DELETE CASCADE)."""
        with self._database.write() as db:
            deleted = db.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,)).rowcount
            if not deleted:
                raise agent_not_found(agent_id)

    def agent_in(self, db: Connection, agent_id: str, tenant: str | None = None) -> Agent:
        """The agent (of ``tenant``) as ``db`` sees it, inside the caller's read or transaction.

        Raises:
            NotFound: no such agent, or another tenant's.
        """
        row = tenant_row(
            db,
            f"{_AGENT_SELECT} WHERE a.agent_id = ?",
            agent_id,
            tenant,
            agent_not_found,
            tenant_column="a.tenant",
        )
        return _agent_from_row(row)

    def set_active_version(
        self, db: Connection, agent_id: str, version_id: str, update_time: float
    ) -> None:
        """Make ``version_id`` the agent's active version (in the caller's transaction)."""
        db.execute(
            "UPDATE agents SET active_version_id = ?, update_time = ? WHERE agent_id = ?",
            (version_id, update_time, agent_id),
        )

    def touch(self, db: Connection, agent_id: str, update_time: float) -> None:
        """Record that the agent changed at ``update_time`` (in the caller's transaction)."""
        db.execute("UPDATE agents SET update_time = ? WHERE agent_id = ?", (update_time, agent_id))


class VersionTables:
    """The versions table; a version's agent is checked (and updated) through ``agents``."""

    def __init__(self, database: Database, agents: AgentTables) -> None:
        """Read and write versions in ``database``; ``agents`` shares it."""
        self._database = database
        self._agents = agents

    def add_version(
        self, version: AgentVersion, activate: bool, key: IdempotencyKey | None = None
    ) -> AgentVersion:
        """Insert a version numbered after the agent's last; optionally activate it.

        With a key already used for the same request, return the version that call made.
        """
        with self._database.write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return self.version_in(db, version.agent_id, replayed)
            made = self.insert_version(db, version, activate)
            remember(db, key, made.version_id)
            return made

    def replayed_version(self, agent_id: str, key: IdempotencyKey) -> AgentVersion | None:
        """The version an earlier call with this key made, if any (AlreadyExists on misuse)."""
        with self._database.read() as db:
            replayed = replayed_resource(db, key)
            return None if replayed is None else self.version_in(db, agent_id, replayed)

    def insert_version(self, db: Connection, version: AgentVersion, activate: bool) -> AgentVersion:
        """Insert a version in the caller's transaction, numbered after the agent's last one.

        Raises:
            NotFound: the agent does not exist.
        """
        self._agents.agent_in(db, version.agent_id)
        (last,) = db.execute(
            "SELECT COALESCE(MAX(version_number), 0) FROM versions WHERE agent_id = ?",
            (version.agent_id,),
        ).fetchone()
        v = version
        db.execute(
            "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                v.version_id,
                v.agent_id,
                last + 1,
                v.source,
                v.training_type,
                v.training_id,
                v.parent_version_id,
                json.dumps(list(v.outputs)),
                json.dumps(v.encoder),
                json.dumps(v.behavior.to_json()),
                json.dumps(v.metrics),
                json.dumps(v.manifest),
                v.size_bytes,
                v.parameter_count,
                v.description,
                v.artifact_dir,
                v.create_time,
            ),
        )
        if activate:
            self._agents.set_active_version(db, v.agent_id, v.version_id, v.create_time)
        else:
            self._agents.touch(db, v.agent_id, v.create_time)
        return self.version_in(db, v.agent_id, v.version_id)

    def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Return a version or raise NotFound."""
        with self._database.read() as db:
            return self.version_in(db, agent_id, version_id)

    def agent_with_version(
        self, agent_id: str, version_id: str = "", tenant: str | None = None
    ) -> tuple[Agent, AgentVersion | None]:
        """An agent (of ``tenant``) and one of its versions (the active one for ""), in one read.

        InvokeAgent calls this for every request: two queries under one lock hold.
        """
        with self._database.read() as db:
            agent = self._agents.agent_in(db, agent_id, tenant)
            wanted = version_id or agent.active_version_id
            if not wanted:
                return agent, None
            row = db.execute(
                "SELECT * FROM versions WHERE agent_id = ? AND version_id = ?", (agent_id, wanted)
            ).fetchone()
        return agent, None if row is None else _version_from_row(row)

    def list_versions(
        self, agent_id: str, limit: int, before_number: int = 0
    ) -> list[AgentVersion]:
        """Return versions newest first."""
        with self._database.read() as db:
            self._agents.agent_in(db, agent_id)
            rows = db.execute(
                "SELECT * FROM versions WHERE agent_id = ? AND (? = 0 OR version_number < ?)"
                " ORDER BY version_number DESC LIMIT ?",
                (agent_id, before_number, before_number, limit),
            ).fetchall()
        return [_version_from_row(row) for row in rows]

    def activate_version(self, agent_id: str, version_id: str) -> Agent:
        """Make a version active and return the agent."""
        with self._database.write() as db:
            self.version_in(db, agent_id, version_id)
            self._agents.set_active_version(db, agent_id, version_id, time.time())
            return self._agents.agent_in(db, agent_id)

    def version_in(self, db: Connection, agent_id: str, version_id: str) -> AgentVersion:
        """The agent's version as ``db`` sees it, inside the caller's read or transaction.

        Raises:
            NotFound: no such agent, or the agent has no such version.
        """
        self._agents.agent_in(db, agent_id)
        row = db.execute(
            "SELECT * FROM versions WHERE agent_id = ? AND version_id = ?", (agent_id, version_id)
        ).fetchone()
        if row is None:
            raise version_not_found(agent_id, version_id)
        return _version_from_row(row)


def _agent_from_row(row: Row) -> Agent:
    return Agent(
        agent_id=row["agent_id"],
        display_name=row["display_name"],
        description=row["description"],
        labels=json.loads(row["labels_json"]),
        default_behavior=BehaviorSettings.from_json(json.loads(row["behavior_json"])),
        active_version_id=row["active_version_id"],
        version_count=row["version_count"],
        create_time=row["create_time"],
        update_time=row["update_time"],
        tenant=row["tenant"],
    )


def _version_from_row(row: Row) -> AgentVersion:
    return AgentVersion(
        version_id=row["version_id"],
        agent_id=row["agent_id"],
        version_number=row["version_number"],
        source=row["source"],
        training_type=row["training_type"],
        training_id=row["training_id"],
        parent_version_id=row["parent_version_id"],
        outputs=tuple(json.loads(row["outputs_json"])),
        encoder=json.loads(row["encoder_json"]),
        behavior=BehaviorSettings.from_json(json.loads(row["behavior_json"])),
        metrics=json.loads(row["metrics_json"]),
        manifest=json.loads(row["manifest_json"]),
        size_bytes=row["size_bytes"],
        parameter_count=row["parameter_count"],
        description=row["description"],
        artifact_dir=row["artifact_dir"],
        create_time=row["create_time"],
    )
