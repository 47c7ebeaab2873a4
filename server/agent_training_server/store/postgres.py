"""The store in PostgreSQL (``--database-url postgresql://...``): the SQL store on a pool.

`PostgresDatabase` gives the SQL tables (`store/sql/`) what SQLite gives them: write
transactions that are serialised, reads that see one state, rows by position or by name, ``?``
placeholders. Writers take one transaction-scoped advisory lock first, as SQLite's BEGIN
IMMEDIATE takes the file's write lock: a transaction that reads before it writes (a key
replayed, a name taken, the next version number) decides on rows no other writer, in this
process or another replica, changes under it. Reads run as REPEATABLE READ, READ ONLY: one
snapshot per block. Every write is committed (and, with PostgreSQL's default synchronous_commit,
flushed to its WAL) before the call that made it returns.

The schema is applied at open by numbered migrations (`postgres_migrations.py`), under an
advisory lock so that replicas starting together apply each once.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg.rows import RowMaker
from psycopg_pool import ConnectionPool, PoolTimeout

from agent_training_server.errors import Unavailable
from agent_training_server.store.postgres_migrations import MIGRATIONS
from agent_training_server.store.sql.database import Connection
from agent_training_server.store.sql.store import SqlStore

WRITE_LOCK = 0x41_54_53_57  # "ATSW": held by every write transaction until it ends
MIGRATION_LOCK = 0x41_54_53_4D  # "ATSM": held while migrations are checked and applied


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer release than this one."""


class PostgresRow(tuple[Any, ...]):
    """A result row: ``row[0]`` or ``row["column"]``, as SQLite's rows answer."""

    _columns: dict[str, int]

    def __new__(cls, values: Sequence[Any], columns: dict[str, int]) -> PostgresRow:
        """The row of ``values``; ``columns`` maps each column name to its position."""
        row = super().__new__(cls, values)
        row._columns = columns
        return row

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(self._columns[key])
        return super().__getitem__(key)


def _rows(cursor: Any) -> RowMaker[PostgresRow]:
    description = cursor.description or []
    columns: dict[str, int] = {}
    for index, column in enumerate(description):
        columns.setdefault(column.name, index)  # the first of a repeated name, as SQLite
    return lambda values: PostgresRow(values, columns)


@functools.lru_cache(maxsize=1024)
def _placeholders(sql: str) -> str:
    """``?`` placeholders as psycopg's ``%s`` (a literal ``%`` doubled)."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresConnection:
    """One pooled connection inside a transaction, speaking the tables' SQL."""

    def __init__(self, connection: psycopg.Connection[PostgresRow]) -> None:
        self._connection = connection

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> psycopg.Cursor[PostgresRow]:
        """Run one statement with ``?`` placeholders."""
        return self._connection.execute(_placeholders(sql), tuple(parameters))

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> None:
        """Run one statement once per parameter row (pipelined)."""
        with self._connection.cursor() as cursor:
            cursor.executemany(_placeholders(sql), [tuple(row) for row in parameters])


class PostgresDatabase:
    """A pool of connections to one PostgreSQL database, shared by the store's tables."""

    def __init__(
        self,
        url: str,
        max_connections: int = 8,
        connect_timeout: float = 10.0,
        wait_timeout: float = 2.0,
    ) -> None:
        """Connect to ``url`` and apply the migrations it lacks.

        A call waits at most ``wait_timeout`` seconds for a pooled connection (all busy, or the
        database unreachable) before it fails UNAVAILABLE.

        Raises:
            psycopg.OperationalError: the server cannot be reached within ``connect_timeout``.
            SchemaTooNew: a newer release migrated the database.
        """
        self._url = url
        self._commits = 0
        self._commits_lock = threading.Lock()
        self._pool: ConnectionPool[psycopg.Connection[PostgresRow]] = ConnectionPool(
            url,
            min_size=1,
            max_size=max_connections,
            kwargs={"autocommit": True, "row_factory": _rows},
            open=False,
            name="agent-training-store",
            timeout=wait_timeout,
            # The pool's reconnection backs off without bound (1 s, 2 s, 4 s...): give each
            # round up after wait_timeout, so that once the database is back the next call
            # starts a fresh attempt instead of waiting out a long pause.
            reconnect_timeout=wait_timeout,
        )
        # The first connection is made here, so a wrong URL or a server that is down fails the
        # start with psycopg's own message rather than the first call.
        with contextlib.closing(psycopg.connect(url, connect_timeout=int(connect_timeout))):
            pass
        self._pool.open(wait=True, timeout=connect_timeout)
        try:
            with self._pool.connection() as connection:
                migrate(connection)
        except BaseException:
            self._pool.close()
            raise

    @contextlib.contextmanager
    def write(self, counted: bool = True) -> Iterator[PostgresConnection]:
        """A write transaction, serialised with every other writer of the database.

        ``counted=False``: not counted in `commits` (see the Database protocol).
        """
        with _reachable(), self._pool.connection() as connection, connection.transaction():
            connection.execute("SELECT pg_advisory_xact_lock(%s)", (WRITE_LOCK,))
            yield PostgresConnection(connection)
        if not counted:
            return
        with self._commits_lock:
            self._commits += 1

    @contextlib.contextmanager
    def read(self) -> Iterator[PostgresConnection]:
        """A read-only transaction on one snapshot of the database."""
        with _reachable(), self._pool.connection() as connection, connection.transaction():
            connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield PostgresConnection(connection)

    @property
    def commits(self) -> int:
        """Counted write transactions this process committed (not other replicas')."""
        return self._commits

    def announce(self, connection: Connection, channel: str, payload: str) -> None:
        """NOTIFY ``channel``: PostgreSQL delivers it to the listeners when the write commits."""
        connection.execute("SELECT pg_notify(?, ?)", (channel, payload))

    def listen(self, channel: str, heard: Callable[[str], None]) -> Callable[[], None]:
        """LISTEN on ``channel`` on a connection of its own, in a thread, reconnecting as needed."""
        listener = _Listener(self._url, channel, heard)
        listener.start()
        return listener.stop

    def close(self) -> None:
        """Close the pool's connections."""
        self._pool.close()


class _Listener(threading.Thread):
    """A LISTEN connection handing each notification's payload to ``heard``."""

    def __init__(self, url: str, channel: str, heard: Callable[[str], None]) -> None:
        super().__init__(name=f"listen-{channel}", daemon=True)
        self._url = url
        self._channel = channel
        self._heard = heard
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=5) as connection:
                    connection.execute(f'LISTEN "{self._channel}"')
                    while not self._stopping.is_set():
                        # Returns every second to look at _stopping.
                        for notification in connection.notifies(timeout=1.0):
                            self._heard(notification.payload)
            except psycopg.Error:
                self._stopping.wait(1.0)  # the database away: try again shortly

    def stop(self) -> None:
        """Stop listening (within a second)."""
        self._stopping.set()
        self.join(5)


def reason_of(error: Exception) -> str:
    """The first line of a psycopg error (the reason; the rest is libpq's advice), or its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__


@contextlib.contextmanager
def _reachable() -> Iterator[None]:
    """Lost connections and a database that does not answer become UNAVAILABLE, retryable.

    The pool replaces a broken connection on its next use, so the retried call reaches the
    database once it is back. What the block rolled back was never acknowledged.
    """
    try:
        yield
    except (psycopg.OperationalError, PoolTimeout) as error:
        raise Unavailable(
            f"the database did not answer ({reason_of(error)})",
            code="DATABASE_UNAVAILABLE",
            hint="Retry after the RetryInfo delay; nothing of this call was stored. If it lasts,"
            " the operator should check the PostgreSQL server named by database_url.",
            retry_after_seconds=2.0,
        ) from error


def migrate(connection: psycopg.Connection[Any]) -> list[int]:
    """Apply the migrations ``connection``'s database lacks, in order; return their versions.

    Raises:
        SchemaTooNew: the database has a migration this release does not know.
    """
    applied_now: list[int] = []
    with connection.transaction():
        connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version BIGINT PRIMARY KEY, description TEXT NOT NULL,"
            " applied_time DOUBLE PRECISION NOT NULL)"
        )
        applied = {row[0] for row in connection.execute("SELECT version FROM schema_migrations")}
        known = {version for version, _, _ in MIGRATIONS}
        if applied - known:
            raise SchemaTooNew(
                f"the database has schema version {max(applied)}, newer than this release's"
                f" {max(known)}: run a release at least as new as the one that migrated it"
            )
        for version, description, sql in MIGRATIONS:
            if version in applied:
                continue
            connection.execute(sql.encode())  # several statements: no parameters
            connection.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, %s)",
                (version, description, time.time()),
            )
            applied_now.append(version)
    return applied_now


class PostgresStore(SqlStore):
    """A store in a PostgreSQL database. Thread-safe: a pool of connections.

    Several server processes (replicas) may share the database: see services/replicas.py.
    """

    def __init__(self, url: str) -> None:
        """Open the store in the database at ``url`` (``postgresql://user@host:port/name``)."""
        super().__init__(PostgresDatabase(url))
