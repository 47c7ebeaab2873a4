"""SQLite implementation of the store: one database file under the data folder.

WAL mode lets readers proceed while a writer commits; ``synchronous=FULL`` makes every commit
durable before it returns, so an acknowledged write survives a crash or power loss.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from agent_training_server.domain import Agent, AgentVersion, BehaviorSettings
from agent_training_server.errors import AlreadyExists
from agent_training_server.not_found import agent_not_found, version_not_found
from agent_training_server.store.base import IdempotencyKey, Store
from agent_training_server.store.idempotency import remember, replayed_resource
from agent_training_server.store.sqlite_analysis import ANALYSIS_SCHEMA, AnalysisTables
from agent_training_server.store.sqlite_datasets import DATASET_SCHEMA, DatasetTables
from agent_training_server.store.sqlite_feedback import FEEDBACK_SCHEMA, FeedbackTables
from agent_training_server.store.sqlite_jobs import JobTables
from agent_training_server.store.sqlite_tenancy import add_tenant_columns, tenant_clause

SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    agent_id          TEXT PRIMARY KEY,
    display_name      TEXT NOT NULL,
    description       TEXT NOT NULL,
    labels_json       TEXT NOT NULL,
    behavior_json     TEXT NOT NULL,
    active_version_id TEXT NOT NULL,
    create_time       REAL NOT NULL,
    update_time       REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    version_id        TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    version_number    INTEGER NOT NULL,
    source            TEXT NOT NULL,
    training_type     TEXT NOT NULL,
    training_id       TEXT NOT NULL,
    parent_version_id TEXT NOT NULL,
    outputs_json      TEXT NOT NULL,
    encoder_json      TEXT NOT NULL,
    behavior_json     TEXT NOT NULL,
    metrics_json      TEXT NOT NULL,
    manifest_json     TEXT NOT NULL,
    size_bytes        INTEGER NOT NULL,
    parameter_count   INTEGER NOT NULL,
    description       TEXT NOT NULL,
    artifact_dir      TEXT NOT NULL,
    create_time       REAL NOT NULL,
    UNIQUE (agent_id, version_number)
);
CREATE TABLE IF NOT EXISTS datasets (
    dataset_sha256 TEXT PRIMARY KEY,
    example_count  INTEGER NOT NULL,
    data           BLOB NOT NULL,
    create_time    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    position          INTEGER PRIMARY KEY AUTOINCREMENT,
    training_id       TEXT NOT NULL UNIQUE,
    agent_id          TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    status            TEXT NOT NULL,
    job_json          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_by_agent ON jobs (agent_id, position);
CREATE TABLE IF NOT EXISTS job_events (
    training_id  TEXT NOT NULL REFERENCES jobs(training_id) ON DELETE CASCADE,
    sequence     INTEGER NOT NULL,
    time         REAL NOT NULL,
    kind         TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    PRIMARY KEY (training_id, sequence)
);
CREATE TABLE IF NOT EXISTS idempotency_keys (
    method         TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    create_time    REAL NOT NULL,
    PRIMARY KEY (method, request_id)
);
"""


class SqliteStore(FeedbackTables, DatasetTables, JobTables, AnalysisTables, Store):
    """A store in one SQLite file. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._commits = 0
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in _write).
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(SCHEMA + DATASET_SCHEMA + FEEDBACK_SCHEMA + ANALYSIS_SCHEMA)
        with self._write() as db:
            add_tenant_columns(db)

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any error."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self._commits += 1

    @property
    def commits(self) -> int:
        """Write transactions committed through this store since it was opened."""
        return self._commits

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()

    # Agents -------------------------------------------------------------------------------

    def create_agent(self, agent: Agent, key: IdempotencyKey | None = None) -> tuple[Agent, bool]:
        """Insert an agent, or replay the agent an earlier call with the same key created."""
        with self._write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return self._agent_in(db, replayed), True
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
            return self._agent_in(db, agent.agent_id), False

    def get_agent(self, agent_id: str, tenant: str | None = None) -> Agent:
        """Return an agent (of ``tenant``) or raise NotFound."""
        with self._lock:
            return self._agent_in(self._db, agent_id, tenant)

    def list_agents(
        self, limit: int, after_agent_id: str = "", tenant: str | None = None
    ) -> list[Agent]:
        """Return a page of agents ordered by id (of one tenant, or of all for None)."""
        condition, params = tenant_clause(tenant, "a.tenant")
        rows = self._read(
            f"{_AGENT_SELECT} WHERE a.agent_id > ? AND {condition} ORDER BY a.agent_id LIMIT ?",
            (after_agent_id, *params, limit),
        )
        return [_agent_from_row(row) for row in rows]

    def delete_agent(self, agent_id: str) -> None:
        """Delete an agent; versions go with it (ON DELETE CASCADE)."""
        with self._write() as db:
            deleted = db.execute("DELETE FROM agents WHERE agent_id = ?", (agent_id,)).rowcount
            if not deleted:
                raise agent_not_found(agent_id)

    def _agent_in(self, db: sqlite3.Connection, agent_id: str, tenant: str | None = None) -> Agent:
        # The tenant is part of the query, so another tenant's agent is a row not found, exactly
        # as a missing one: same work, same error, same place (no time to tell them apart by).
        condition, params = tenant_clause(tenant, "a.tenant")
        row = db.execute(
            f"{_AGENT_SELECT} WHERE a.agent_id = ? AND {condition}", (agent_id, *params)
        ).fetchone()
        if row is None:
            raise agent_not_found(agent_id)
        return _agent_from_row(row)

    # Versions -----------------------------------------------------------------------------

    def add_version(
        self, version: AgentVersion, activate: bool, key: IdempotencyKey | None = None
    ) -> AgentVersion:
        """Insert a version numbered after the agent's last; optionally activate it.

        With a key already used for the same request, return the version that call made.
        """
        with self._write() as db:
            replayed = replayed_resource(db, key)
            if replayed is not None:
                return self._version_in(db, version.agent_id, replayed)
            made = self._insert_version(db, version, activate)
            remember(db, key, made.version_id)
            return made

    def replayed_version(self, agent_id: str, key: IdempotencyKey) -> AgentVersion | None:
        """The version an earlier call with this key made, if any (AlreadyExists on misuse)."""
        with self._lock:
            replayed = replayed_resource(self._db, key)
            return None if replayed is None else self._version_in(self._db, agent_id, replayed)

    def _insert_version(
        self, db: sqlite3.Connection, version: AgentVersion, activate: bool
    ) -> AgentVersion:
        self._agent_in(db, version.agent_id)
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
            db.execute(
                "UPDATE agents SET active_version_id = ?, update_time = ? WHERE agent_id = ?",
                (v.version_id, v.create_time, v.agent_id),
            )
        else:
            db.execute(
                "UPDATE agents SET update_time = ? WHERE agent_id = ?",
                (v.create_time, v.agent_id),
            )
        return self._version_in(db, v.agent_id, v.version_id)

    def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Return a version or raise NotFound."""
        with self._lock:
            return self._version_in(self._db, agent_id, version_id)

    def agent_with_version(
        self, agent_id: str, version_id: str = "", tenant: str | None = None
    ) -> tuple[Agent, AgentVersion | None]:
        """An agent (of ``tenant``) and one of its versions (the active one for ""), in one read.

        InvokeAgent calls this for every request: two queries under one lock hold.
        """
        with self._lock:
            agent = self._agent_in(self._db, agent_id, tenant)
            wanted = version_id or agent.active_version_id
            if not wanted:
                return agent, None
            row = self._db.execute(
                "SELECT * FROM versions WHERE agent_id = ? AND version_id = ?", (agent_id, wanted)
            ).fetchone()
        return agent, None if row is None else _version_from_row(row)

    def list_versions(
        self, agent_id: str, limit: int, before_number: int = 0
    ) -> list[AgentVersion]:
        """Return versions newest first."""
        with self._lock:
            self._agent_in(self._db, agent_id)
            rows = self._db.execute(
                "SELECT * FROM versions WHERE agent_id = ? AND (? = 0 OR version_number < ?)"
                " ORDER BY version_number DESC LIMIT ?",
                (agent_id, before_number, before_number, limit),
            ).fetchall()
        return [_version_from_row(row) for row in rows]

    def activate_version(self, agent_id: str, version_id: str) -> Agent:
        """Make a version active."""
        with self._write() as db:
            self._version_in(db, agent_id, version_id)
            db.execute(
                "UPDATE agents SET active_version_id = ?, update_time = ? WHERE agent_id = ?",
                (version_id, time.time(), agent_id),
            )
            return self._agent_in(db, agent_id)

    def _version_in(self, db: sqlite3.Connection, agent_id: str, version_id: str) -> AgentVersion:
        self._agent_in(db, agent_id)
        row = db.execute(
            "SELECT * FROM versions WHERE agent_id = ? AND version_id = ?", (agent_id, version_id)
        ).fetchone()
        if row is None:
            raise version_not_found(agent_id, version_id)
        return _version_from_row(row)


_AGENT_SELECT = (
    "SELECT a.*, (SELECT COUNT(*) FROM versions v WHERE v.agent_id = a.agent_id) AS version_count"
    " FROM agents a"
)


def _agent_from_row(row: sqlite3.Row) -> Agent:
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


def _version_from_row(row: sqlite3.Row) -> AgentVersion:
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
