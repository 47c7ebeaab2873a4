"""Tenancy in the SQLite store: the tenant column of agents and named datasets.

Jobs, versions, invocations and feedback belong to the tenant of their agent. A database made
before tenancy gains the column on open, and its rows belong to the tenant "default", the
tenant of every caller when authentication is off; so an existing data folder keeps working.

`tenant_row` is the one query that reads a resource by id for a tenant: every table reads its
rows through it, so "another tenant's row is a row not found" is written once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from agent_training_server.domain import DEFAULT_TENANT
from agent_training_server.errors import NotFound

TENANT_TABLES = ("agents", "named_datasets")


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


def tenant_clause(tenant: str | None, column: str = "tenant") -> tuple[str, tuple[str, ...]]:
    """SQL condition (and parameters) keeping one tenant's rows; all rows for None."""
    if tenant is None:
        return "1 = 1", ()
    return f"{column} = ?", (tenant,)


def agent_tenant_clause(tenant: str | None) -> tuple[str, tuple[str, ...]]:
    """SQL condition keeping rows (with an ``agent_id``) whose agent is ``tenant``'s; all for None.

    Jobs, analyses and invocations have no tenant column: they are their agent's tenant's, so
    another tenant's id is a row the query does not find, exactly like a missing id.
    """
    if tenant is None:
        return "1 = 1", ()
    return "agent_id IN (SELECT agent_id FROM agents WHERE tenant = ?)", (tenant,)


def tenant_row(
    db: sqlite3.Connection,
    query: str,
    row_id: str,
    tenant: str | None,
    not_found: Callable[[str], NotFound],
    *,
    tenant_column: str | None = None,
) -> sqlite3.Row:
    """The row ``query`` selects for ``row_id`` if it is ``tenant``'s (any tenant's for None).

    ``query`` is a SELECT whose WHERE clause takes ``row_id`` as its only parameter; the
    tenant's condition is added to it: on ``tenant_column`` for a table that has one, else
    through the row's agent. Another tenant's row is thus a row this query does not find,
    exactly as a missing one: same work, same error, raised here for both (no time to tell them
    apart by).

    Raises:
        NotFound: ``not_found(row_id)``, when no row matches.
    """
    if tenant_column is None:
        condition, params = agent_tenant_clause(tenant)
    else:
        condition, params = tenant_clause(tenant, tenant_column)
    row: sqlite3.Row | None = db.execute(f"{query} AND {condition}", (row_id, *params)).fetchone()
    if row is None:
        raise not_found(row_id)
    return row
