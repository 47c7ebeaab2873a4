"""The embedded store: one SQLite file under the data folder (the default).

`SqliteDatabase` is the file's one connection, its lock and its transactions; `SqliteStore` is
the SQL store (`store/sql/`) on it. Every table class reads and writes through the same database,
so a write touching several tables (a job's event and the version it made) is one transaction,
and the commit count readers compare covers them all.

WAL mode lets readers proceed while a writer commits; ``synchronous=FULL`` makes every commit
durable before it returns, so an acknowledged write survives a crash or power loss.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from agent_training_server.store.sql.database import Connection
from agent_training_server.store.sql.store import SqlStore
from agent_training_server.store.sqlite_schema import SCHEMA, add_later_columns


class SqliteDatabase:
    """One SQLite file opened once and shared by the store's tables. Thread-safe.

    Python's sqlite3 connection may not be used by two threads at once, so every read and write
    holds one lock; it is reentrant, so a table helper called inside a transaction may take it
    again.
    """

    def __init__(self, path: Path, schema: str = SCHEMA) -> None:
        """Open (or create) the file at ``path`` and create the tables of ``schema`` it lacks."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._commits = 0
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE in write()).
        self._connection = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=FULL")
        self._connection.execute("PRAGMA foreign_keys=ON")
        self._connection.execute("PRAGMA busy_timeout=5000")
        self._connection.executescript(schema)
        with self.write() as db:
            add_later_columns(db)

    @contextlib.contextmanager
    def write(self, counted: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction: committed on success, rolled back on any error.

        ``counted=False``: not counted in `commits` (see the Database protocol).

        BEGIN IMMEDIATE takes the file's write lock at once, so a transaction that reads before
        it writes (a replayed key, a name taken) decides on rows no other writer changes under it.
        """
        with self._lock:
            self._connection.execute("BEGIN IMMEDIATE")
            try:
                yield self._connection
            except BaseException:
                self._connection.execute("ROLLBACK")
                raise
            self._connection.execute("COMMIT")
            if counted:
                self._commits += 1

    @contextlib.contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """The connection, for reads only, held by this thread until the block ends.

        Queries made in one block see one state of the store: no write of it commits in between.
        """
        with self._lock:
            yield self._connection

    @property
    def commits(self) -> int:
        """Counted write transactions committed since the file was opened."""
        return self._commits

    def announce(self, connection: Connection, channel: str, payload: str) -> None:
        """Nothing: no other process uses the file (the data folder lock sees to it)."""

    def listen(self, channel: str, heard: Callable[[str], None]) -> Callable[[], None]:
        """Nothing to hear: no other process writes the file."""
        return lambda: None

    def close(self) -> None:
        """Close the connection (again: a no-op)."""
        with self._lock:
            self._connection.close()


class SqliteStore(SqlStore):
    """A store in one SQLite file. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, path: Path) -> None:
        """Open the store in the file at ``path``, creating it (and its folder) if need be."""
        super().__init__(SqliteDatabase(path))
