"""Prometheus metrics over real HTTP: grpc-ecosystem names, job counters right for jobs run in
worker processes, per-job gauges cleaned up, and the off switch."""

from __future__ import annotations

import concurrent.futures
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from agent_training.v1 import synthetic_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, expect_error, make_config
from tests.test_training import banking_examples


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of /metrics, keyed by (name, sorted labels)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_rpcs_jobs_and_answers_as_they_happened(tmp_path):
    running = ServerThread(make_config(tmp_path, workers=2))
    port = running.running.metrics_port
    try:
        with AgentTrainingClient(running.address, timeout=120) as client:
            for name in ("m1", "m2", "m3"):
                client.create_agent(agent_id=name)

            def train(agent_id: str) -> int:
                events = list(
                    client.train_agent(agent_id=agent_id, training_data=banking_examples())
                )
                return events[-1].finished.status

            with concurrent.futures.ThreadPoolExecutor(3) as pool:
                statuses = list(pool.map(train, ["m1", "m2", "m3"]))
            assert statuses == [training_pb2.TRAINING_STATUS_SUCCEEDED] * 3
            client.invoke_agent(agent_id="m1", inputs=["my card is lost", "top up failed"])
            expect_error(client.get_agent, "nobody")
            client.generate_synthetic_examples(
                data_type=synthetic_pb2.SYNTHETIC_DATA_TYPE_CUSTOMER_QUERIES, count=40
            )
            samples = scrape(port)
    finally:
        running.stop()
    service = "agent_training.v1.AgentTrainingService"
    assert (
        value(samples, "agent_training_jobs_total", training_type="supervised", status="SUCCEEDED")
        == 3
    )
    assert value(samples, "agent_training_jobs_running") == 0
    assert value(samples, "agent_training_epochs_total", training_type="supervised") >= 3
    assert (
        value(samples, "agent_training_job_duration_seconds_count", training_type="supervised") == 3
    )
    # Per-job gauges are gone once the jobs ended.
    assert not [key for key in samples if key[0] == "agent_training_job_loss"]
    base = dict(grpc_service=service, grpc_type="server_stream", grpc_method="TrainAgent")
    assert value(samples, "grpc_server_started_total", **base) == 3
    assert value(samples, "grpc_server_handled_total", **base, grpc_code="OK") == 3
    assert value(samples, "grpc_server_msg_sent_total", **base) >= 9
    unary = dict(grpc_service=service, grpc_type="unary", grpc_method="GetAgent")
    assert value(samples, "grpc_server_handled_total", **unary, grpc_code="NotFound") == 1
    assert value(samples, "grpc_server_handling_seconds_count", **unary) == 1
    assert value(samples, "agent_training_invocations_total", agent_id="m1") == 2
    assert value(samples, "agent_training_invocation_seconds_count", agent_id="m1") == 1
    assert (
        value(samples, "agent_training_synthetic_examples_total", data_type="customer_queries")
        == 40
    )


def test_metrics_can_be_turned_off(tmp_path):
    running = ServerThread(make_config(tmp_path, metrics_address=""))
    try:
        assert running.running.metrics_port == 0
        with AgentTrainingClient(running.address, timeout=30) as client:
            assert client.health() == "SERVING"
    finally:
        running.stop()
