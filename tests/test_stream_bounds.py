"""Streams bounded by flow control, over a real channel to the server in its own process.

A generation stream that the client does not read holds little server memory (measured as the
server process's resident memory).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent_training.v1 import synthetic_pb2
from agent_training_client import AgentTrainingClient
from tests.server_process import ServerProcess

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads resident memory from /proc"
)

QUERIES = synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES
UNREAD_STREAM_MB = 50
"""What an unread generation stream may hold (docs/limits.md: about 14 MB; 404 MB before)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("stream-bounds")
    running = ServerProcess(folder / "data", folder / "server.log", max_concurrent_streams=8)
    yield running
    running.kill()


def resident_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


def test_an_unread_generation_stream_holds_little_server_memory(server: ServerProcess) -> None:
    with AgentTrainingClient(server.address, timeout=120) as client:
        # Warm up what every generation shares (grammars, caches, the channel's buffers).
        assert list(client.generate_synthetic_training_data(count=2_000, data_type=QUERIES))
        before = resident_mb(server.process.pid)
        stream = client.generate_synthetic_training_data(count=10_000_000, data_type=QUERIES)
        assert len(next(stream).examples) == 1_000  # generating; from here on nobody reads
        time.sleep(3)  # the generator runs until flow control stops it (well under a second)
        held = resident_mb(server.process.pid) - before
        stream.close()  # cancels the call
    assert held < UNREAD_STREAM_MB, f"an unread stream holds {held:.0f} MB of server memory"
