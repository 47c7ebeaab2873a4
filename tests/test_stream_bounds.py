"""Streams bounded by flow control, over a real channel to the server in its own process.

- A generation stream that the client does not read holds little server memory (measured as the
  server process's resident memory).
- An upload whose client sends nothing is ended after `stream_idle_timeout_seconds` with
  STREAM_IDLE, and frees its stream slot.
- With authentication on, one tenant holds at most its share of the stream slots: another
  tenant's TrainAgent and WatchTrainingJob still open while the first has its share in use.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from agent_training.v1 import synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_server.api.call_guard import tenant_share
from agent_training_server.config import ServerConfig
from tests.conftest import assert_status, expect_error
from tests.security_support import write_token_file
from tests.server_process import ServerProcess
from tests.test_training import banking_examples

pytestmark = pytest.mark.skipif(
    not Path("/proc/self/status").exists(), reason="reads resident memory from /proc"
)

QUERIES = synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES
UNREAD_STREAM_MB = 50
"""What an unread generation stream may hold (docs/limits.md: about 14 MB; 404 MB before)."""
TENANT_A, TENANT_B = "stream-bounds-token-a", "stream-bounds-token-b"
SHARE = 4
"""Each tenant's streams, of the server's 8."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("stream-bounds")
    tokens = write_token_file(
        folder / "tokens.json",
        {TENANT_A: ("tenant-a", ["admin"]), TENANT_B: ("tenant-b", ["admin"])},
    )
    running = ServerProcess(
        folder / "data",
        folder / "server.log",
        auth_token_file=tokens,
        max_concurrent_streams=8,
        max_streams_per_tenant=SHARE,
        stream_idle_timeout_seconds=1,
    )
    yield running
    running.kill()


def connect(server: ServerProcess, token: str) -> AgentTrainingClient:
    return AgentTrainingClient(server.address, token=token, timeout=120)


def resident_mb(pid: int) -> float:
    """The process's resident memory (VmRSS) in MB."""
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"VmRSS:\s+(\d+) kB", status)
    assert match, status
    return int(match.group(1)) / 1024


def test_an_unread_generation_stream_holds_little_server_memory(server: ServerProcess) -> None:
    with connect(server, TENANT_A) as client:
        # Warm up what every generation shares (grammars, caches, the channel's buffers).
        assert list(client.generate_synthetic_training_data(count=2_000, data_type=QUERIES))
        before = resident_mb(server.process.pid)
        stream = client.generate_synthetic_training_data(count=10_000_000, data_type=QUERIES)
        assert len(next(stream).examples) == 1_000  # generating; from here on nobody reads
        time.sleep(3)  # the generator runs until flow control stops it (well under a second)
        held = resident_mb(server.process.pid) - before
        stream.close()  # cancels the call
    assert held < UNREAD_STREAM_MB, f"an unread stream holds {held:.0f} MB of server memory"


def test_uploads_that_send_nothing_are_ended_and_free_their_slots(server: ServerProcess) -> None:
    resume = threading.Event()
    example = training_pb2.TrainingExample(input="where is my card", expected_output="card")

    def then_nothing(sent: int) -> Iterator[training_pb2.TrainingExample]:
        yield from [example] * sent
        resume.wait()  # the client goes quiet (its gRPC thread waits here)

    def quiet_upload(index: int) -> AgentTrainingError:
        # Even ones never send a message; odd ones send one and then nothing.
        return expect_error(
            client.upload_dataset, f"quiet-{index}", then_nothing(index % 2), chunk_size=1
        )

    with connect(server, TENANT_A) as client:
        try:
            # As many as the tenant's share, at once: each ends on its own, none is left open.
            with ThreadPoolExecutor(SHARE) as pool:
                errors = list(pool.map(quiet_upload, range(SHARE)))
        finally:
            resume.set()
        for error in errors:
            assert_status(error, grpc.StatusCode.DEADLINE_EXCEEDED)
            assert error.code == "STREAM_IDLE" and not error.retryable
            assert "stream_idle_timeout_seconds" in error.message
        assert not client.list_datasets().datasets  # nothing of them was stored
        # Their slots are free: a share of streams opens again.
        streams = [
            client.generate_synthetic_training_data(count=10, data_type=QUERIES)
            for _ in range(SHARE)
        ]
        assert all(list(stream) for stream in streams)


def test_one_tenant_holding_its_share_leaves_streams_to_the_others(server: ServerProcess) -> None:
    with connect(server, TENANT_A) as a, connect(server, TENANT_B) as b:
        a.create_agent(agent_id="a-bot")
        b.create_agent(agent_id="b-bot")
        unread = [
            a.generate_synthetic_training_data(count=10_000_000, data_type=QUERIES)
            for _ in range(SHARE)
        ]
        try:
            for stream in unread:
                next(stream)  # open, and never read again
            error = expect_error(a.train_agent, agent_id="a-bot")
            assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert error.code == "TOO_MANY_STREAMS" and error.retryable
            assert "max_streams_per_tenant" in error.hint and "share" in error.message
            # Tenant B trains and watches while A holds its share.
            slow = training_pb2.TrainingConfig(epochs=1000, validation_split=0)
            examples = banking_examples(per_intent=20)[:40]
            events = b.train_agent(agent_id="b-bot", training_data=examples, config=slow)
            training_id = next(events).training_id
            watched = next(b.watch_training_job(training_id))
            assert watched.training_id == training_id
            b.cancel_training_job(training_id)
            assert list(events)[-1].HasField("finished")
        finally:
            for stream in unread:
                stream.close()
        # Closing them gives A's share back as the server notices each cancel, quietly.
        deadline = time.monotonic() + 30
        while not _opens_a_stream(a):
            assert time.monotonic() < deadline, "closed streams kept their slots"
            time.sleep(0.05)
    log = (server.data_dir.parent / "server.log").read_text()
    assert not [line for line in log.splitlines() if " ERROR " in line or "Traceback" in line]


def _opens_a_stream(client: AgentTrainingClient) -> bool:
    try:
        return bool(list(client.generate_synthetic_training_data(count=10, data_type=QUERIES)))
    except AgentTrainingError as refused:
        assert refused.code in ("TOO_MANY_STREAMS", "TOO_MANY_GENERATIONS"), refused
        return False


def test_each_tenants_share_is_a_quarter_of_the_streams_by_default() -> None:
    assert tenant_share(ServerConfig()) == 250
    assert tenant_share(ServerConfig(max_concurrent_streams=2)) == 1
    assert tenant_share(ServerConfig(max_concurrent_streams=8, max_streams_per_tenant=3)) == 3
    # A share above the server's limit is the server's limit: no share.
    assert tenant_share(ServerConfig(max_concurrent_streams=8, max_streams_per_tenant=50)) == 8
