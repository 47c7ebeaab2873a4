"""The PostgreSQL schema, as numbered migrations applied in order at start.

Each migration runs once per database, in one transaction with the row that records it in
``schema_migrations``; a migration, once released, never changes: a later change is a new one.
The tables are those of the SQLite schema (`sqlite_schema.py`), column for column and in the
same order (statements like ``INSERT INTO versions VALUES (...)`` rely on it), in PostgreSQL's
types: BIGINT for integers, DOUBLE PRECISION for times and scores, BYTEA for bytes.
"""

from __future__ import annotations

INITIAL_TABLES = """
CREATE TABLE agents (
    agent_id          TEXT PRIMARY KEY,
    display_name      TEXT NOT NULL,
    description       TEXT NOT NULL,
    labels_json       TEXT NOT NULL,
    behavior_json     TEXT NOT NULL,
    active_version_id TEXT NOT NULL,
    create_time       DOUBLE PRECISION NOT NULL,
    update_time       DOUBLE PRECISION NOT NULL,
    tenant            TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX agents_by_tenant ON agents (tenant);
CREATE TABLE versions (
    version_id        TEXT PRIMARY KEY,
    agent_id          TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    version_number    BIGINT NOT NULL,
    source            TEXT NOT NULL,
    training_type     TEXT NOT NULL,
    training_id       TEXT NOT NULL,
    parent_version_id TEXT NOT NULL,
    outputs_json      TEXT NOT NULL,
    encoder_json      TEXT NOT NULL,
    behavior_json     TEXT NOT NULL,
    metrics_json      TEXT NOT NULL,
    manifest_json     TEXT NOT NULL,
    size_bytes        BIGINT NOT NULL,
    parameter_count   BIGINT NOT NULL,
    description       TEXT NOT NULL,
    artifact_dir      TEXT NOT NULL,
    create_time       DOUBLE PRECISION NOT NULL,
    UNIQUE (agent_id, version_number)
);
CREATE TABLE datasets (
    dataset_sha256 TEXT PRIMARY KEY,
    example_count  BIGINT NOT NULL,
    data           BYTEA NOT NULL,
    create_time    DOUBLE PRECISION NOT NULL
);
CREATE TABLE jobs (
    position          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    training_id       TEXT NOT NULL UNIQUE,
    agent_id          TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    status            TEXT NOT NULL,
    job_json          TEXT NOT NULL
);
CREATE INDEX jobs_by_agent ON jobs (agent_id, position);
CREATE TABLE job_events (
    training_id  TEXT NOT NULL REFERENCES jobs(training_id) ON DELETE CASCADE,
    sequence     BIGINT NOT NULL,
    time         DOUBLE PRECISION NOT NULL,
    kind         TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    PRIMARY KEY (training_id, sequence)
);
CREATE TABLE idempotency_keys (
    method         TEXT NOT NULL,
    request_id     TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    resource_id    TEXT NOT NULL,
    create_time    DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (method, request_id)
);
CREATE TABLE named_datasets (
    dataset_id     TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    description    TEXT NOT NULL,
    source         TEXT NOT NULL,
    recipe         BYTEA NOT NULL,
    example_count  BIGINT NOT NULL,
    output_count   BIGINT NOT NULL,
    content_sha256 TEXT NOT NULL,
    state          TEXT NOT NULL,
    create_time    DOUBLE PRECISION NOT NULL,
    tenant         TEXT NOT NULL DEFAULT 'default'
);
CREATE INDEX named_datasets_by_tenant ON named_datasets (tenant);
CREATE TABLE dataset_examples (
    dataset_id TEXT NOT NULL REFERENCES named_datasets(dataset_id) ON DELETE CASCADE,
    position   BIGINT NOT NULL,
    example    BYTEA NOT NULL,
    PRIMARY KEY (dataset_id, position)
);
CREATE TABLE invocations (
    invocation_id TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    version_id    TEXT NOT NULL,
    input         TEXT NOT NULL,
    context_json  TEXT NOT NULL,
    output        TEXT NOT NULL,
    confidence    DOUBLE PRECISION NOT NULL,
    propensity    DOUBLE PRECISION NOT NULL,
    explored      BIGINT NOT NULL,
    is_fallback   BIGINT NOT NULL,
    time          DOUBLE PRECISION NOT NULL
);
CREATE TABLE feedback (
    feedback_id      TEXT PRIMARY KEY,
    invocation_id    TEXT NOT NULL UNIQUE REFERENCES invocations(invocation_id) ON DELETE CASCADE,
    agent_id         TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    feedback         TEXT NOT NULL,
    reward           DOUBLE PRECISION NOT NULL,
    corrected_output TEXT NOT NULL,
    comment          TEXT NOT NULL,
    time             DOUBLE PRECISION NOT NULL
);
CREATE INDEX feedback_by_agent ON feedback (agent_id, time);
CREATE TABLE performance_reports (
    agent_id     TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    version_id   TEXT NOT NULL,
    metrics_json TEXT NOT NULL,
    time         DOUBLE PRECISION NOT NULL
);
CREATE INDEX performance_by_agent ON performance_reports (agent_id, time);
CREATE TABLE analysis_jobs (
    analysis_id   TEXT PRIMARY KEY,
    agent_id      TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    status        TEXT NOT NULL,
    progress_json TEXT NOT NULL,
    result        BYTEA NOT NULL,
    error_json    TEXT NOT NULL,
    create_time   DOUBLE PRECISION NOT NULL,
    end_time      DOUBLE PRECISION NOT NULL,
    trace_id      TEXT NOT NULL
);
"""

REPLICAS = """
CREATE TABLE replicas (
    replica_id TEXT PRIMARY KEY,
    address    TEXT NOT NULL,
    start_time DOUBLE PRECISION NOT NULL,
    expires    DOUBLE PRECISION NOT NULL
);
ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE jobs ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_by_status ON jobs (status);
ALTER TABLE analysis_jobs ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE named_datasets ADD COLUMN owner TEXT NOT NULL DEFAULT '';
"""

ROLLOUTS = """
CREATE TABLE rollouts (
    rollout_id           TEXT PRIMARY KEY,
    agent_id             TEXT NOT NULL REFERENCES agents(agent_id) ON DELETE CASCADE,
    candidate_version_id TEXT NOT NULL,
    active_version_id    TEXT NOT NULL,
    mode                 TEXT NOT NULL,
    traffic_share        DOUBLE PRECISION NOT NULL,
    policy_json          TEXT NOT NULL,
    state                TEXT NOT NULL,
    decisions_json       TEXT NOT NULL,
    create_time          DOUBLE PRECISION NOT NULL,
    update_time          DOUBLE PRECISION NOT NULL
);
CREATE UNIQUE INDEX rollouts_running_per_agent ON rollouts (agent_id) WHERE state = 'running';
CREATE INDEX rollouts_by_agent ON rollouts (agent_id, create_time);
ALTER TABLE invocations ADD COLUMN rollout_id TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN arm TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN shadow_of TEXT NOT NULL DEFAULT '';
ALTER TABLE invocations ADD COLUMN latency_ms DOUBLE PRECISION NOT NULL DEFAULT 0;
CREATE INDEX invocations_by_rollout ON invocations (rollout_id) WHERE rollout_id <> '';
"""

MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (1, "the tables of the service", INITIAL_TABLES),
    (2, "replicas, and the replica owning each job, analysis and dataset upload", REPLICAS),
    (3, "rollouts, and the rollout, arm and scoring time of each answer", ROLLOUTS),
)
"""(version, what it does, SQL), in the order they apply; versions are 1, 2, 3..."""
