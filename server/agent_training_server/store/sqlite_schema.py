"""The SQLite schema: the tables as SQLite creates them, and the columns later releases added.

A data folder made by any earlier release opens: tables it lacks are created (CREATE ... IF NOT
EXISTS) and the columns later releases added are added on open (`add_later_columns`). The same
tables for
PostgreSQL are its versioned migrations (`store/postgres_migrations/`).
"""

from __future__ import annotations

import sqlite3

from agent_training_server.domain import DEFAULT_TENANT

AGENT_SCHEMA = """
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
"""
"""The agents table (its tenant column is added on open: add_tenant_columns) and versions."""

JOB_SCHEMA = """
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
"""
"""Content-addressed training data (``datasets``), jobs and their events."""

IDEMPOTENCY_SCHEMA = """
CREATE TABLE IF NOT EXISTS idempotency_keys (
    method         TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    create_time    REAL NOT NULL,
    PRIMARY KEY (method, request_id)
);
"""
"""One row per key used: what the call made, with its request's digest to tell a retry from a
misuse. ``method`` carries the tenant (see `_scoped_method`)."""

DATASET_SCHEMA = """
CREATE TABLE IF NOT EXISTS named_datasets (
    dataset_id     TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    description    TEXT NOT NULL,
    source         TEXT NOT NULL,
    recipe         BLOB NOT NULL,
    example_count  INTEGER NOT NULL,
    output_count   INTEGER NOT NULL,
    content_sha256 TEXT NOT NULL,
    state          TEXT NOT NULL,
    create_time    REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_examples (
    dataset_id TEXT NOT NULL REFERENCES named_datasets(dataset_id) ON DELETE CASCADE,
    position   INTEGER NOT NULL,
    example    BLOB NOT NULL,
    PRIMARY KEY (dataset_id, position)
) WITHOUT ROWID;
"""

FEEDBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS invocations (
    invocation_id TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    version_id    TEXT NOT NULL,
    input         TEXT NOT NULL,
    context_json  TEXT NOT NULL,
    output        TEXT NOT NULL,
    confidence    REAL NOT NULL,
    propensity    REAL NOT NULL,
    explored      INTEGER NOT NULL,
    is_fallback   INTEGER NOT NULL,
    time          REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS feedback (
    feedback_id      TEXT PRIMARY KEY,
    invocation_id    TEXT NOT NULL UNIQUE REFERENCES invocations(invocation_id) ON DELETE CASCADE,
    agent_id         TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    feedback         TEXT NOT NULL,
    reward           REAL NOT NULL,
    corrected_output TEXT NOT NULL,
    comment          TEXT NOT NULL,
    time             REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS feedback_by_agent ON feedback (agent_id, time);
CREATE TABLE IF NOT EXISTS performance_reports (
    agent_id     TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    version_id   TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    time         REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS performance_by_agent ON performance_reports (agent_id, time);
"""

ANALYSIS_SCHEMA = """
CREATE TABLE IF NOT EXISTS analysis_jobs (
    analysis_id   TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    status        TEXT NOT NULL,
    progress_json TEXT NOT NULL,
    result        BLOB NOT NULL,
    error_json    TEXT NOT NULL,
    create_time   REAL NOT NULL,
    end_time      REAL NOT NULL,
    trace_id      TEXT NOT NULL
);
"""

ROLLOUT_SCHEMA = """
CREATE TABLE IF NOT EXISTS rollouts (
    rollout_id           TEXT PRIMARY KEY,
    agent_id             TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    candidate_version_id TEXT NOT NULL,
    active_version_id    TEXT NOT NULL,
    mode                 TEXT NOT NULL,
    traffic_share        REAL NOT NULL,
    policy_json          TEXT NOT NULL,
    state                TEXT NOT NULL,
    decisions_json       TEXT NOT NULL,
    create_time          REAL NOT NULL,
    update_time          REAL NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_running_per_agent ON rollouts (agent_id)
    WHERE state = 'running';
CREATE INDEX IF NOT EXISTS rollouts_by_agent ON rollouts (agent_id, create_time);
"""
"""Candidate versions meeting live traffic. The partial unique index allows one ``running``
rollout per agent, whoever inserts it; their answers are the invocations naming them
(`INVOCATION_COLUMNS`)."""

REPLICA_SCHEMA = """
CREATE TABLE IF NOT EXISTS replicas (
    replica_id TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    start_time REAL NOT NULL,
    expires    REAL NOT NULL
);
"""
"""The server processes using the database and how long each is taken to be alive (its lease)."""

SCHEMA = "".join(
    (
        AGENT_SCHEMA,
        JOB_SCHEMA,
        IDEMPOTENCY_SCHEMA,
        DATASET_SCHEMA,
        FEEDBACK_SCHEMA,
        ANALYSIS_SCHEMA,
        REPLICA_SCHEMA,
        ROLLOUT_SCHEMA,
    )
)
"""Every table. The first three were the first release's; the later columns came after."""

TENANT_TABLES = ("agents", "named_datasets")


OWNER_COLUMNS = (
    ("jobs", "owner TEXT NOT NULL DEFAULT ''"),
    ("jobs", "cancel_requested INTEGER NOT NULL DEFAULT 0"),
    ("analysis_jobs", "owner TEXT NOT NULL DEFAULT ''"),
    ("named_datasets", "owner TEXT NOT NULL DEFAULT ''"),
)
"""(table, column): the replica that runs a job or analysis or writes a dataset, and a job's
cancellation asked of its owner by another replica."""

INVOCATION_COLUMNS = (
    ("invocations", "rollout_id TEXT NOT NULL DEFAULT ''"),
    ("invocations", "arm TEXT NOT NULL DEFAULT ''"),
    ("invocations", "shadow_of TEXT NOT NULL DEFAULT ''"),
    ("invocations", "latency_ms REAL NOT NULL DEFAULT 0.0"),
)
"""(table, column): the rollout an answer was given under, its arm, the answer a shadow one
shadows, and its scoring time."""


def add_later_columns(db: sqlite3.Connection) -> None:
    """Add the columns (and indexes) later releases added to tables that lack them."""
    add_tenant_columns(db)
    for table, column in OWNER_COLUMNS + INVOCATION_COLUMNS:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column.split()[0] not in columns:
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column}")
    db.execute("CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status)")
    # Partial: most answers are given under no rollout, and InvokeAgent's writes should not pay
    # for indexing them. A query uses it only when it repeats the condition (sql/rollouts.py).
    db.execute(
        "CREATE INDEX IF NOT EXISTS invocations_by_rollout ON invocations (rollout_id)"
        " WHERE rollout_id <> ''"
    )


def add_tenant_columns(db: sqlite3.Connection) -> None:
    """Add the tenant column (and its index) to tables that lack it; a no-op once done."""
    for table in TENANT_TABLES:
        columns = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if "tenant" not in columns:
            # ADD COLUMN with a constant default rewrites no rows: instant on any size.
            db.execute(
                f"ALTER TABLE {table} ADD COLUMN tenant TEXT NOT NULL DEFAULT '{DEFAULT_TENANT}'"
            )
        db.execute(f"CREATE INDEX IF NOT EXISTS {table}_by_tenant ON {table} (tenant)")
