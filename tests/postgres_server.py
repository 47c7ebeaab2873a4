"""A real PostgreSQL server for the tests that use one, on a free loopback port.

`scripts/postgres.sh` puts Debian's server binaries in place (`make postgres`, part of `make
test`), creates the cluster and starts and stops it; this module picks the port and the folder,
and gives each test a database of its own. The `postgres_server` fixture (conftest.py) starts
one server per test process, the first time a test asks for it, and stops it when the process
ends; `postgres_url` creates an empty database for one test and drops it afterwards.
"""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import psycopg

REPO_ROOT = Path(__file__).resolve().parent.parent
SCRIPT = REPO_ROOT / "scripts" / "postgres.sh"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One PostgreSQL server in a temporary folder; `stop` ends it and removes the folder."""

    def __init__(self) -> None:
        # Under /tmp, readable by all: as root the server runs as `nobody` (postgres.sh), and
        # pytest's own temporary folders are private to root.
        self.folder = Path(tempfile.mkdtemp(prefix="agent-training-postgres-"))
        self.folder.chmod(0o755)
        self.data = self.folder / "cluster"
        self.port = free_port()
        self._names = itertools.count(1)
        self.start()

    def start(self) -> None:
        """Start the server (again, after `halt`: the same data, the same port)."""
        subprocess.run(
            [str(SCRIPT), "start", str(self.data), str(self.port)],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
            text=True,
            timeout=120,
        )

    def halt(self) -> None:
        """Stop the server, keeping its data: connections to it fail until `start`."""
        subprocess.run(
            [str(SCRIPT), "stop", str(self.data)], cwd=REPO_ROOT, check=True, timeout=120
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A new, empty database; returns its URL."""
        name = f"test_{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(self.url(), autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server and remove its folder."""
        subprocess.run(
            [str(SCRIPT), "stop", str(self.data)], cwd=REPO_ROOT, check=False, timeout=120
        )
        shutil.rmtree(self.folder, ignore_errors=True)
