"""What must hold before a server starts work: its data folder, its ports, its database.

Every check here either passes or raises ``StartupError`` with one sentence for the operator:
what failed and which setting to change. They run before the server starts its workers or
recovers jobs (app.py), so a server that cannot start changes nothing; `open_store` opens the
database the settings name, last.

The data folder is held with an exclusive ``flock`` on ``agent_training.lock`` inside it for the
life of the server process. The lock belongs to the open file, which is close-on-exec, so worker
processes never hold it, and the kernel drops it when the server exits, however it exits: a
crash leaves nothing to clean up. A second server on the same folder stops before it reads it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc

from agent_training_server import devices
from agent_training_server.config import ServerConfig, setting_name
from agent_training_server.store.base import Store
from agent_training_server.store.sqlite import SqliteStore

LOCK_FILE = "agent_training.lock"
"""Held (flock) by the server using the data folder; it holds that server's pid and address."""


class StartupError(ValueError):
    """A setting the server cannot start with; the message names it and says what to change."""


def check_data_folder(data_dir: Path, setting: str = "data_dir") -> None:
    """Check that the data folder (or the folder ``setting`` names) can be written or made.

    Nothing is changed.

    Raises:
        StartupError: it is not a folder, or this user cannot write it or create it.
    """
    change = f"set {setting_name(setting)} to a folder this user can write"
    what = "data folder" if setting == "data_dir" else "artifact folder"
    try:
        if not data_dir.exists():
            parent = data_dir.parent
            while not parent.exists():
                parent = parent.parent
            if not parent.is_dir():
                raise StartupError(f"cannot create {what} {data_dir}: {parent} is a file; {change}")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise StartupError(
                    f"cannot create {what} {data_dir}: permission denied on {parent}; {change}"
                )
            return
        if not data_dir.is_dir():
            raise StartupError(f"{what} {data_dir} is not a folder; {change}")
    except OSError as error:
        raise StartupError(f"cannot use {what} {data_dir}: {_reason(error)}; {change}") from error
    if not os.access(data_dir, os.R_OK | os.W_OK | os.X_OK):
        raise StartupError(f"cannot write to {what} {data_dir}: permission denied; {change}")
    if setting != "data_dir":
        return
    for name in ("agent_training.sqlite3", "agent_training.sqlite3-wal", LOCK_FILE):
        path = data_dir / name
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StartupError(f"cannot write {path}: permission denied; {change}")


class DataFolderLock:
    """The exclusive hold of one server process on its data folder."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path

    @classmethod
    def acquire(cls, data_dir: Path, address: str) -> DataFolderLock:
        """Lock ``data_dir`` for this process and record its pid and address in the lock file.

        Raises:
            StartupError: another server holds the folder, or the lock file cannot be written.
        """
        path = data_dir / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as error:
            raise StartupError(
                f"cannot write to data folder {data_dir}: {_reason(error)};"
                f" set {setting_name('data_dir')} to a folder this user can write"
            ) from error
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            if isinstance(error, BlockingIOError):
                held_by = f" ({holder})" if holder else ""
                raise StartupError(
                    f"data folder {data_dir.resolve()} is in use by another server{held_by};"
                    f" stop that server, or set {setting_name('data_dir')} to another folder"
                ) from error
            raise StartupError(
                f"cannot lock data folder {data_dir}: {_reason(error)};"
                f" set {setting_name('data_dir')} to a folder on a local disk"
            ) from error
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}, serving on {address}\n".encode(), 0)
        return cls(fd, path)

    def release(self) -> None:
        """Let another server have the folder (the file stays: removing it would race one)."""
        if self._fd >= 0:
            os.close(self._fd)  # closing the only descriptor of the open file drops the flock
            self._fd = -1


def bind_grpc_port(
    server: grpc.aio.Server, address: str, credentials: grpc.ServerCredentials | None
) -> int:
    """Bind the server's port (it serves once started); return the port number.

    gRPC's core reports a failed bind on standard error before Python sees it; that report is
    taken in and folded into the one line of the StartupError.

    Raises:
        StartupError: the address cannot be bound (in use, not of this machine, privileged).
    """
    with _stderr_taken_in() as taken:
        try:
            if credentials is None:
                port = server.add_insecure_port(address)
            else:
                port = server.add_secure_port(address, credentials)
        except RuntimeError:
            port = 0
    if port:
        if taken.text:
            sys.stderr.write(taken.text)  # not about the bind: pass it on
        return port
    reason = _bind_reason(taken.text)
    change = {
        "address already in use": "to a free port",
        "permission denied": "to a port this user may open (1024 or above)",
        "cannot assign requested address": "to an address of this machine",
    }.get(reason, "to a free host:port of this machine")
    raise StartupError(
        f"cannot listen on {address}: {reason}; set {setting_name('address')} {change}"
    )


class _Taken:
    text = ""


@contextlib.contextmanager
def _stderr_taken_in() -> Iterator[_Taken]:
    """Route file descriptor 2 into a temporary file for the block; its text ends up in .text."""
    taken = _Taken()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield taken
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            taken.text = sink.read().decode(errors="replace")


_BIND_ERROR = re.compile(r"Error in bind for address '[^']*': ([^)]+)\)")


def _bind_reason(text: str) -> str:
    match = _BIND_ERROR.search(text)
    if match:
        return match.group(1).strip().lower()
    for line in text.splitlines():
        if "Failed to add port" in line:
            return line.split("Failed to add port to server:", 1)[-1].strip().rstrip(".")
    return "the address cannot be bound"


def check_device(device: str) -> None:
    """Check that the GPU the ``device`` setting names outright is there.

    ``auto`` and ``cpu`` always start (auto falls back to the CPU), and are checked without
    importing torch, which keeps such a start fast; ``cuda`` and ``cuda:N`` import it.

    Raises:
        StartupError: the setting names a CUDA GPU torch does not see on this machine.
    """
    named = devices.parse(device)
    if not devices.names_cuda(named):
        return
    reason = devices.unavailable_reason(named, devices.cuda_device_count())
    if reason is not None:
        raise StartupError(
            f"{reason}; set {setting_name('device')} to auto or cpu, or run on a machine with"
            " that GPU"
        )


def open_store(config: ServerConfig) -> Store:
    """The store the settings name: PostgreSQL at ``database_url``, else SQLite in ``data_dir``.

    Raises:
        StartupError: psycopg is not installed, the database cannot be reached, or a newer
            release migrated it.
    """
    if not config.database_url:
        return SqliteStore(config.database_path)
    change = f"check {setting_name('database_url')}"
    try:
        import psycopg

        from agent_training_server.store.postgres import PostgresStore, SchemaTooNew, reason_of
    except ImportError as error:
        raise StartupError(
            f"database_url needs psycopg ({error}): pip install 'agent-training[postgres]'"
        ) from error
    where = _database_named(config.database_url)
    try:
        return PostgresStore(config.database_url)
    except SchemaTooNew as error:
        raise StartupError(f"database {where}: {error}") from error
    except psycopg.Error as error:
        raise StartupError(f"cannot open database {where}: {reason_of(error)}; {change}") from error


def _database_named(url: str) -> str:
    """The database of ``url`` as host:port/name, without user or password (for messages)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:  # a malformed URL: psycopg's own error says what is wrong with it
        return "at database_url"
    host, port, name = parts.get("host", "localhost"), parts.get("port", 5432), parts.get("dbname")
    return f"{host}:{port}/{name or parts.get('user', '')}"


def _reason(error: OSError) -> str:
    return (error.strerror or str(error)).lower()
