"""Tenancy in the SQL store: the tenant column of agents and named datasets.

Jobs, versions, invocations and feedback belong to the tenant of their agent. (A SQLite file made
before tenancy gains the column on open, its rows the tenant "default", the tenant of every caller
when authentication is off: see sqlite_schema.)

`tenant_row` is the one query that reads a resource by id for a tenant: every table reads its
rows through it, so "another tenant's row is a row not found" is written once.
"""

from __future__ import annotations

from collections.abc import Callable

from agent_training_server.errors import NotFound
from agent_training_server.store.sql.database import Connection, Row


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
    db: Connection,
    query: str,
    row_id: str,
    tenant: str | None,
    not_found: Callable[[str], NotFound],
    *,
    tenant_column: str | None = None,
) -> Row:
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
    row: Row | None = db.execute(f"{query} AND {condition}", (row_id, *params)).fetchone()
    if row is None:
        raise not_found(row_id)
    return row
