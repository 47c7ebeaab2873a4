"""Shared fixtures: the real server on a free loopback port, in its own thread and event loop."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_server.app import RunningServer, create_server
from agent_training_server.config import ServerConfig
from agent_training_server.telemetry import create_tracer_provider
from tests.postgres_server import PostgresServer

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO_ROOT = Path(__file__).resolve().parents[1]
BANKING77 = REPO_ROOT.parent / "shared" / "data" / "banking77"
TRACE_ID = re.compile(r"^[0-9a-f]{32}$")


class ServerThread:
    """Runs the real server in a background thread, as a separate process would, on port 0."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.spans = InMemorySpanExporter()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        provider = create_tracer_provider([SimpleSpanProcessor(self.spans)])
        self.running: RunningServer = self.call(create_server(config, provider))
        self.address = self.running.address

    def call(self, coroutine, timeout: float = 60):
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self, grace: float = 0) -> None:
        """Stop the server and its loop."""
        self.call(self.running.stop(grace))
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def has_server_span(self, trace_id: str, timeout: float = 10) -> bool:
        """Whether a server span with this trace id ends (streams end theirs just after the
        client sees the status, so this waits for it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if trace_id in self.server_trace_ids():
                return True
            time.sleep(0.01)
        return False

    def server_trace_ids(self) -> set[str]:
        """Trace ids of the finished server spans."""
        return {
            format(span.context.trace_id, "032x")
            for span in self.spans.get_finished_spans()
            if span.kind.name == "SERVER"
        }


def make_config(tmp_path: Path, **overrides) -> ServerConfig:
    """A configuration for tests: loopback, port 0, data under tmp_path, one worker."""
    values = {
        "address": "127.0.0.1:0",
        "data_dir": tmp_path / "data",
        "workers": 1,
        "metrics_address": "127.0.0.1:0",
        # Tests run on the CPU everywhere; the cuda-marked ones name the GPU themselves.
        "device": "cpu",
    }
    values.update(overrides)
    return ServerConfig(**values)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Skip the tests marked ``cuda`` where torch sees no CUDA GPU."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch  # only when a cuda test was collected: collection stays fast otherwise

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is false)")
    for item in marked:
        item.add_marker(skip)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path))
    yield running
    running.stop()


@pytest.fixture
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=30) as made:
        yield made


def expect_error(call, *args, **kwargs) -> AgentTrainingError:
    """Run a call that must fail and return the client's error."""
    with pytest.raises(AgentTrainingError) as caught:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):  # streams fail when iterated
            list(result)
    return caught.value


def assert_status(error: AgentTrainingError, code: grpc.StatusCode) -> None:
    """Check the status and that the seed's error object is complete."""
    assert error.status_code == code, error
    assert error.code and error.message and error.hint, error.to_dict()
    assert TRACE_ID.match(error.trace_id), error.trace_id


@pytest.fixture(scope="module", autouse=True)
def _module_folders_removed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Removes the folders a test module made once its last test ends. A trained encoder and
    its checkpoints take hundreds of MB; kept to the end of the session, a full run would hold
    gigabytes of them (tests' own folders go as each passes: tmp_path_retention_policy)."""
    base = tmp_path_factory.getbasetemp()
    before = set(base.iterdir())
    yield
    for folder in set(base.iterdir()) - before:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A real PostgreSQL server on loopback for this test process (started on first use)."""
    server = PostgresServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of the server, dropped after the test."""
    url = postgres_server.create_database()
    try:
        yield url
    finally:
        postgres_server.drop_database(url)
