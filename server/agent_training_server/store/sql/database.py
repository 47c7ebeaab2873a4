"""What the SQL tables need of a database: transactions, and connections that run statements.

The table classes of this package (agents, jobs, datasets...) are written once, in the SQL that
SQLite and PostgreSQL both speak, with ``?`` placeholders; each backend gives them a `Database`
(`store/sqlite.py`, `store/postgres.py`). A backend's connection runs that SQL as it is (SQLite)
or with its placeholders rewritten (PostgreSQL), and its rows answer both ``row[0]`` and
``row["column"]``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol


class Row(Protocol):
    """One result row: by position or by column name."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __len__(self) -> int: ...


class Cursor(Protocol):
    """The result of one statement."""

    @property
    def rowcount(self) -> int:
        """Rows the statement changed (UPDATE, DELETE, INSERT)."""
        ...

    def fetchone(self) -> Any:
        """The next `Row`, or None."""
        ...

    def fetchall(self) -> list[Any]:
        """The remaining `Row`s."""
        ...


class Connection(Protocol):
    """Runs statements inside the transaction (or read) its `Database` block holds."""

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> Cursor:
        """Run one statement with ``?`` placeholders."""
        ...

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> Any:
        """Run one statement once per parameter row."""
        ...


class Database(Protocol):
    """A database shared by the store's tables: every block is one transaction or one snapshot."""

    def write(self, counted: bool = True) -> contextlib.AbstractContextManager[Connection]:
        """A write transaction, committed when the block ends, rolled back on any error.

        Writers are serialised: a transaction that reads before it writes (a key replayed, a
        name taken, the next version number) decides on rows no other writer changes under it.
        ``counted=False`` leaves it out of `commits`: only for writes that change no row a
        cached read returns (answers, feedback, heartbeats), which would otherwise clear
        InvokeAgent's cache of agents and versions many times a second.
        """
        ...

    def read(self) -> contextlib.AbstractContextManager[Connection]:
        """A read: its queries see one state of the store (no write commits in between)."""
        ...

    @property
    def commits(self) -> int:
        """Counted write transactions this process committed since the database was opened."""
        ...

    def announce(self, connection: Connection, channel: str, payload: str) -> None:
        """Tell other processes' `listen` of ``channel`` about ``payload`` once the write commits.

        A database only one process uses (SQLite) announces nothing.
        """
        ...

    def listen(self, channel: str, heard: Callable[[str], None]) -> Callable[[], None]:
        """Call ``heard(payload)`` (on a thread of its own) for each announcement on ``channel``.

        Returns the function that stops listening. Announcements made while the database does
        not answer are lost: listeners must not depend on hearing every one.
        """
        ...

    def close(self) -> None:
        """Release the connections (again: a no-op)."""
        ...
