"""A real Prometheus server scrapes the service while jobs train; its HTTP API sees the counts.

The Prometheus binary is Debian's package, unpacked by `make prometheus` (part of `make test`);
PROMETHEUS_BINARY names it. It listens on loopback only and is stopped by the fixture.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import REPO_ROOT, ServerThread, expect_error, make_config
from tests.test_training import INTENTS, banking_examples

DEFAULT_BINARY = REPO_ROOT / ".tools" / "prometheus" / "usr" / "bin" / "prometheus"
SERVICE = "agent_training.v1.AgentTrainingService"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def prometheus_binary() -> Path:
    binary = Path(os.environ.get("PROMETHEUS_BINARY", DEFAULT_BINARY))
    if not binary.is_absolute():
        binary = REPO_ROOT / binary
    if not binary.exists():
        pytest.fail(f"no Prometheus server at {binary}: run `make prometheus` (part of make test)")
    return binary


def http_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


class Prometheus:
    """A Prometheus server scraping one target every second."""

    def __init__(self, folder: Path, target_port: int) -> None:
        self.port = free_port()
        config = folder / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: agent-training\n"
            f"    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
        )
        self.process = subprocess.Popen(
            [
                str(prometheus_binary()),
                f"--config.file={config}",
                f"--storage.tsdb.path={folder / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.process.stderr.read()}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2)
                return
            except OSError:
                time.sleep(0.2)
        raise TimeoutError("prometheus did not become ready in 60 s")

    def query(self, promql: str) -> float | None:
        """The value of an instant query with one result (None while there is none)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": promql}
        )
        answer = http_json(url)
        assert answer["status"] == "success", answer
        results = answer["data"]["result"]
        assert len(results) <= 1, results
        return float(results[0]["value"][1]) if results else None

    def wait_for(self, promql: str, expected: float, timeout: float = 30) -> float | None:
        """Query until the value is ``expected`` (scrapes come every second) or time runs out."""
        deadline = time.monotonic() + timeout
        value = self.query(promql)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.5)
            value = self.query(promql)
        return value

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def scraped(tmp_path) -> Iterator[tuple[ServerThread, Prometheus]]:
    running = ServerThread(make_config(tmp_path, workers=2))
    prometheus = Prometheus(tmp_path, running.running.metrics_port)
    try:
        yield running, prometheus
    finally:
        prometheus.stop()
        running.stop()


def test_prometheus_scrapes_job_and_grpc_counters_while_jobs_train(scraped):
    running, prometheus = scraped
    assert prometheus.wait_for('up{job="agent-training"}', 1.0) == 1.0
    agents = ["scraped-1", "scraped-2", "scraped-3"]
    with AgentTrainingClient(running.address, timeout=120) as client:
        for agent_id in agents:
            client.create_agent(agent_id=agent_id)

        def train(agent_id: str) -> int:
            data = banking_examples(INTENTS[:4], per_intent=10)
            events = list(client.train_agent(agent_id=agent_id, training_data=data))
            return events[-1].finished.status

        with ThreadPoolExecutor(len(agents)) as pool:  # concurrent jobs on two workers
            statuses = list(pool.map(train, agents))
        expect_error(client.get_agent, "nobody-here")
    assert statuses == [training_pb2.TRAINING_STATUS_SUCCEEDED] * 3

    jobs = 'sum(agent_training_jobs_total{training_type="supervised",status="SUCCEEDED"})'
    assert prometheus.wait_for(jobs, 3.0) == 3.0
    handled = (
        f'grpc_server_handled_total{{grpc_service="{SERVICE}",grpc_method="TrainAgent",'
        'grpc_type="server_stream",grpc_code="OK"}'
    )
    assert prometheus.wait_for(handled, 3.0) == 3.0
    not_found = (
        f'grpc_server_handled_total{{grpc_service="{SERVICE}",grpc_method="GetAgent",'
        'grpc_code="NotFound"}'
    )
    assert prometheus.wait_for(not_found, 1.0) == 1.0
    epochs = 'sum(agent_training_epochs_total{training_type="supervised"})'
    assert (prometheus.query(epochs) or 0) >= 3  # at least one epoch per job
    # Per-job gauges are removed when jobs end: no series left for finished jobs.
    assert prometheus.wait_for("count(agent_training_job_loss)", None) is None
