"""Storage errors named for what they are: a data folder that is full, or one that is read-only.

The one owner of that judgement. Error translation (a call's write failed), the job manager (a
job's event or version could not be stored) and the training worker (a checkpoint or weights file
could not be written) all ask ``classify`` and build their error here, so a full disk reads the
same everywhere: STORAGE_FULL (RESOURCE_EXHAUSTED, retryable) or STORAGE_READ_ONLY
(FAILED_PRECONDITION). Nothing is lost when a write fails this way: SQLite rolls the transaction
back and a weights file that was cut short is never named by a version (docs/durability.md).

What counts, by its own words (``kind_of``):

- full: ``OSError`` ENOSPC, EDQUOT (over the disk quota), EFBIG (past the file size limit);
  SQLite's SQLITE_FULL ("database or disk is full"); an error whose text carries Rust's
  ``(os error N)`` with one of those numbers (safetensors writes through Rust).
- read-only: ``OSError`` EROFS, or EACCES / EPERM on a file operation (one that names a file);
  SQLite's SQLITE_READONLY ("attempt to write a readonly database").

SQLite reports a failed write that was not ENOSPC as SQLITE_IOERR without the errno (EDQUOT,
EFBIG, EROFS on an open database arrive so); for such vague errors ``classify`` looks at the
folder itself (``probe``): read-only, under ``MIN_FREE_BYTES`` free, or refusing a small write.
"""

from __future__ import annotations

import errno
import os
import re
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from agent_training_server import errors
from agent_training_server.config import setting_name

Kind = Literal["full", "read_only"]
FULL: Kind = "full"
READ_ONLY: Kind = "read_only"
KINDS: tuple[Kind, ...] = (FULL, READ_ONLY)

STORAGE_FULL = "STORAGE_FULL"
STORAGE_READ_ONLY = "STORAGE_READ_ONLY"
CODE_OF: dict[Kind, str] = {FULL: STORAGE_FULL, READ_ONLY: STORAGE_READ_ONLY}
KIND_OF_CODE: dict[str, Kind] = {code: kind for kind, code in CODE_OF.items()}

MIN_FREE_BYTES = 1024 * 1024
"""Free space under which the probe counts the data folder as full: a write of the database's
log or of a small version's weights needs about this much."""
PROBE_BYTES = 4096
"""Size of the probe's test write (one page)."""

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EACCES, errno.EPERM})
_SQLITE_FULL = 13
_SQLITE_READONLY = 8
_SQLITE_VAGUE = frozenset({10, 14})  # SQLITE_IOERR, SQLITE_CANTOPEN: the errno is not told
_RUST_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def kind_of(error: BaseException) -> Kind | None:
    """What the error, or one it was raised from, says of the storage: full, read-only or None."""
    for each in _chain(error):
        kind = _kind_of_one(each)
        if kind is not None:
            return kind
    return None


def classify(
    error: BaseException, folder: Path | None = None, any_error: bool = False
) -> Kind | None:
    """What a failed write says of the storage; failing that, what a look at the folder finds.

    ``kind_of(error)``, else ``probe(folder)`` for errors too vague to tell (SQLite's I/O
    errors), or for any error with ``any_error``: for a catch-all around work that writes (a
    training job), where a data folder full or read-only now is the likely cause, and the one
    thing the caller must hear of.
    """
    kind = kind_of(error)
    if kind is None and folder is not None and (any_error or _is_vague(error)):
        kind = probe(folder)
    return kind


def probe(folder: Path) -> Kind | None:
    """Whether ``folder`` takes a write now: None when it does, else what stops it.

    Read-only (the filesystem is mounted so, or a small file cannot be created: permissions),
    full (less than MIN_FREE_BYTES free for this user, or the test write fails for space or
    quota). The test write is one page, flushed and removed. A folder that does not exist is
    probed through its nearest existing parent, where it would be made.
    """
    while not folder.exists() and folder.parent != folder:
        folder = folder.parent
    try:
        stats = os.statvfs(folder)
    except OSError as error:
        return _kind_of_one(error)
    if stats.f_flag & os.ST_RDONLY:
        return READ_ONLY
    if stats.f_bavail * stats.f_frsize < MIN_FREE_BYTES:
        return FULL
    try:
        descriptor, name = tempfile.mkstemp(prefix=".storage-probe-", dir=folder)
        try:
            os.write(descriptor, bytes(PROBE_BYTES))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
            os.unlink(name)
    except OSError as error:
        return _kind_of_one(error) or READ_ONLY
    return None


def free_bytes(folder: Path) -> int | None:
    """Bytes free for this user on the filesystem of ``folder`` (None when it cannot be told)."""
    try:
        stats = os.statvfs(folder)
    except OSError:
        return None
    return stats.f_bavail * stats.f_frsize


def service_error(kind: Kind, needed_bytes: int | None = None) -> errors.ServiceError:
    """The error a caller receives for a write that failed of ``kind``.

    ``needed_bytes``: the size of what was to be written, when the call knows it.
    """
    if kind == FULL:
        return errors.StorageFull(
            "the server could not store the request: its data folder is out of space or over"
            " its disk quota",
            hint=_hint(FULL, "Retry after the RetryInfo delay", needed_bytes),
        )
    return errors.StorageReadOnly(
        "the server could not store the request: its data folder is read-only or not writable"
        " by the server's user",
        hint=_hint(READ_ONLY, "send the request again"),
    )


def job_error(kind: Kind, what: str = "the training job") -> dict[str, Any]:
    """The error of a job (``what``) that stopped because its files or events could not be written.

    In the shape jobs store: ``code``, ``message``, ``hint``, ``retryable``, and ``kind`` (the
    error class, which analysis jobs answer with).
    """
    error = service_error(kind)
    state = "is out of space or over its disk quota" if kind == FULL else "is read-only"
    again = "Train again after the operator freed space" if kind == FULL else "train again"
    return {
        "code": error.code,
        "message": f"{what} stopped: the server's data folder {state}",
        "hint": _hint(kind, again),
        "retryable": error.retryable,
        "kind": type(error).__name__,
    }


def _hint(kind: Kind, again: str, needed_bytes: int | None = None) -> str:
    setting = setting_name("data_dir")
    if kind == FULL:
        needed = f" This request needs about {_size(needed_bytes)}." if needed_bytes else ""
        return (
            f"{again}.{needed} The operator must free space (or raise the quota) on the"
            f" filesystem of the data folder, or move the data folder ({setting}) to a larger"
            " one."
        )
    return (
        "The operator must make the data folder writable again (its permissions, a read-only"
        f" mount, or a filesystem remounted read-only after errors), or point {setting} at a"
        f" writable folder; then {again}."
    )


def _chain(error: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _kind_of_one(error: BaseException) -> Kind | None:
    if isinstance(error, sqlite3.Error):
        code = getattr(error, "sqlite_errorcode", None)
        primary = code & 0xFF if isinstance(code, int) else None
        text = str(error).lower()
        if primary == _SQLITE_FULL or "database or disk is full" in text:
            return FULL
        if primary == _SQLITE_READONLY or "readonly database" in text:
            return READ_ONLY
        return None
    if isinstance(error, OSError):
        return _kind_of_errno(error.errno, names_a_file=error.filename is not None)
    match = _RUST_OS_ERROR.search(str(error))
    if match:
        return _kind_of_errno(int(match.group(1)), names_a_file=True)
    return None


def _kind_of_errno(number: int | None, names_a_file: bool) -> Kind | None:
    if number in _FULL_ERRNOS:
        return FULL
    if number == errno.EROFS or (number in _READ_ONLY_ERRNOS and names_a_file):
        return READ_ONLY
    return None


def _is_vague(error: BaseException) -> bool:
    for each in _chain(error):
        if isinstance(each, sqlite3.Error):
            code = getattr(each, "sqlite_errorcode", None)
            if isinstance(code, int) and code & 0xFF in _SQLITE_VAGUE:
                return True
            if "disk i/o error" in str(each).lower():
                return True
    return False


def _size(count: int | None) -> str:
    value = float(count or 0)
    if value < 1024:
        return f"{value:.0f} bytes"
    unit = "bytes"
    for unit in ("KiB", "MiB", "GiB"):  # noqa: B007 - the unit the loop stops at is the one
        value /= 1024
        if value < 1024:
            break
    return f"{value:.1f} {unit}"
