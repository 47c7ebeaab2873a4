"""Idempotency keys in the SQL store: a create call retried with its request_id replays.

The retry returns what the first call created, instead of creating it again.

The functions take the connection of the caller's transaction, so a key is looked up and
recorded in the very transaction that creates the resource: a crash keeps both or neither.
"""

from __future__ import annotations

import time

from agent_training_server.domain import DEFAULT_TENANT
from agent_training_server.errors import AlreadyExists
from agent_training_server.store.base import IdempotencyKey
from agent_training_server.store.sql.database import Connection


def replayed_resource(db: Connection, key: IdempotencyKey | None) -> str | None:
    """Return the id of what an earlier call with this key created, if any.

    Raises:
        AlreadyExists: the key was used with a different request.
    """
    if key is None:
        return None
    row = db.execute(
        "SELECT request_sha256, resource_id FROM idempotency_keys"
        " WHERE method = ? AND request_id = ?",
        (_scoped_method(key), key.request_id),
    ).fetchone()
    if row is None:
        return None
    if row["request_sha256"] != key.request_sha256:
        raise AlreadyExists(
            f"request_id {key.request_id!r} was already used with another request",
            code="REQUEST_ID_REUSED",
            hint="Use a new request_id for a different request; reuse it only to retry the"
            " identical request.",
        )
    return str(row["resource_id"])


def remember(db: Connection, key: IdempotencyKey | None, resource_id: str) -> None:
    """Record what a call with this key created (in the caller's transaction)."""
    if key is not None:
        db.execute(
            "INSERT INTO idempotency_keys VALUES (?, ?, ?, ?, ?)",
            (_scoped_method(key), key.request_id, key.request_sha256, resource_id, time.time()),
        )


def _scoped_method(key: IdempotencyKey) -> str:
    # Keys of the default tenant keep the bare method, as stored before tenancy existed.
    return key.method if key.tenant == DEFAULT_TENANT else f"{key.tenant}:{key.method}"
