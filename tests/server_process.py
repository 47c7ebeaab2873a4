"""The real server as a separate process, in its own process group, for crash and shutdown tests."""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SERVING = re.compile(r"serving .* on (\S+:\d+)")


class ServerProcess:
    """``agent-training-server`` on a free loopback port, with its workers in one process group."""

    def __init__(
        self, data_dir: Path, log_path: Path, wrapper: Sequence[str] = (), **settings: Any
    ) -> None:
        """``wrapper``: a command the server's command line is appended to (it must exec it)."""
        self.data_dir = data_dir
        flags = {
            "address": "127.0.0.1:0",
            "data_dir": str(data_dir),
            "workers": 1,
            "torch_threads": 1,  # one thread: the same sums in the same order, run after run
            "metrics_address": "",
            "log_format": "text",
            "device": "cpu",  # tests run on the CPU everywhere
            **settings,
        }
        command = [*wrapper, sys.executable, "-m", "agent_training_server.main"]
        for name, value in flags.items():
            command += ["--" + name.replace("_", "-"), str(value)]
        self.log_path = log_path
        self._log = log_path.open("a")
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            start_new_session=True,  # its own process group: kill -9 reaches the workers too
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        self.address = self._wait_until_serving(timeout=120)

    def _wait_until_serving(self, timeout: float) -> str:
        lines: queue.Queue[str] = queue.Queue()

        def read() -> None:
            assert self.process.stdout is not None
            for line in self.process.stdout:
                lines.put(line)

        threading.Thread(target=read, daemon=True).start()
        while True:
            try:
                line = lines.get(timeout=timeout)
            except queue.Empty:
                self.kill()
                raise TimeoutError("the server did not start") from None
            match = SERVING.search(line)
            if match:
                return match.group(1)

    def kill(self) -> None:
        """``kill -9`` the server and its workers (the whole process group)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(30)
        self._log.close()

    def terminate(self, timeout: float = 60) -> int:
        """Send SIGTERM to the server alone (as a container runtime does); return its exit code."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        finally:
            self.kill()  # whatever is left of the group


def integrity_check(database: Path) -> str:
    """SQLite's own verdict on the database file ("ok" when intact)."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        return db.execute("PRAGMA integrity_check").fetchone()[0]


def table_rows(database: Path, tables: tuple[str, ...]) -> dict[str, set[tuple]]:
    """Every row of the named tables, read through a read-only connection."""
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return {table: set(db.execute(f"SELECT * FROM {table}").fetchall()) for table in tables}
