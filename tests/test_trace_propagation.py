"""One TrainAgent call, one trace: exported over OTLP to a real receiver, across processes.

The server runs as a subprocess configured only by the standard OTEL_* variables; its training
worker is a process of its own. A small gRPC server implementing the OTLP trace service (from the
opentelemetry-proto definitions) receives what both export.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from agent_training.v1 import service_pb2, service_pb2_grpc, training_pb2
from tests.test_training import INTENTS, banking_examples

CALLER_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN_ID = "00f067aa0ba902b7"
TRAIN_METHOD = "/agent_training.v1.AgentTrainingService/TrainAgent"


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    service: str
    attributes: dict


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every span exported to it."""

    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self._lock = threading.Lock()

    def Export(self, request, context):
        received = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex(),
                            name=span.name,
                            service=resource.get("service.name", ""),
                            attributes={a.key: _value(a.value) for a in span.attributes},
                        )
                    )
        with self._lock:
            self.spans.extend(received)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [span for span in self.spans if span.trace_id == trace_id]


def _value(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[OtlpReceiver, int]]:
    collector = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(0)


@dataclass(frozen=True)
class TracedServer:
    address: str
    log: Path
    """Standard error of the server and its workers: JSON log lines."""


@pytest.fixture(scope="module")
def traced_server(receiver, tmp_path_factory) -> Iterator[TracedServer]:
    _collector, port = receiver
    folder = tmp_path_factory.mktemp("traced")
    log = folder / "server.log"
    environment = {
        **os.environ,
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        "OTEL_TRACES_SAMPLER": "parentbased_always_on",
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "agent_training_client", "serve", "--address", "127.0.0.1:0",
            "--data-dir", str(folder / "data"), "--metrics-address", "", "--workers", "1",
            "--log-format", "json",
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
        env=environment,
    )  # fmt: skip
    try:
        line = process.stdout.readline()
        yield TracedServer(line.split(" on ")[1].split()[0], log)
    finally:
        process.terminate()
        process.communicate(timeout=60)


def train(address: str, agent_id: str, metadata=()) -> training_pb2.TrainingJob:
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        stub.CreateAgent(service_pb2.CreateAgentRequest(agent_id=agent_id), timeout=30)
        request = service_pb2.TrainAgentRequest(
            agent_id=agent_id,
            training_data=banking_examples(INTENTS[:4], per_intent=12),
            training_type=training_pb2.TRAINING_TYPE_SUPERVISED,
            config=training_pb2.TrainingConfig(epochs=3, seed=7),
        )
        responses = stub.TrainAgent(request, metadata=metadata, timeout=120)
        events = [response.event for response in responses]
        assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
        reply = stub.GetTrainingJob(
            service_pb2.GetTrainingJobRequest(training_id=events[0].training_id), timeout=30
        )
        return reply.job


def wait_for(collector: OtlpReceiver, trace_id: str, names: set[str]) -> list[ReceivedSpan]:
    """The trace's spans once every named span has arrived (exports are batched)."""
    deadline = time.monotonic() + 30
    while True:
        spans = collector.trace(trace_id)
        if names <= {span.name for span in spans} or time.monotonic() > deadline:
            return spans
        time.sleep(0.1)


EXPECTED = {
    TRAIN_METHOD,
    "validate",
    "store.create_job",
    "training.queue",
    "training.job",
    "training.phase loading_data",
    "training.phase training",
    "training.epoch",
}


def test_a_callers_trace_continues_through_the_server_into_the_training_worker(
    receiver, traced_server
):
    collector, _port = receiver
    traceparent = f"00-{CALLER_TRACE_ID}-{CALLER_SPAN_ID}-01"
    job = train(traced_server.address, "traced-agent", metadata=[("traceparent", traceparent)])
    assert job.trace_id == CALLER_TRACE_ID

    spans = wait_for(collector, CALLER_TRACE_ID, EXPECTED)
    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)
    assert set(by_name) >= EXPECTED, sorted(by_name)

    (server_span,) = by_name[TRAIN_METHOD]
    assert server_span.parent_span_id == CALLER_SPAN_ID  # the caller's span is the parent
    (job_span,) = by_name["training.job"]
    assert job_span.parent_span_id == server_span.span_id  # joined across the process boundary
    assert job_span.attributes["training.id"] == job.training_id
    assert job_span.attributes["agent.id"] == "traced-agent"
    assert job_span.attributes["training.type"] == "supervised"
    assert by_name["training.queue"][0].parent_span_id == server_span.span_id

    (training_phase,) = by_name["training.phase training"]
    assert training_phase.parent_span_id == job_span.span_id
    epochs = by_name["training.epoch"]
    assert sorted(span.attributes["training.epoch"] for span in epochs) == [1, 2, 3]
    assert {span.parent_span_id for span in epochs} == {training_phase.span_id}
    assert all("training.validation_loss" in span.attributes for span in epochs)
    assert {span.service for span in spans} == {"agent-training"}

    # The worker's log lines about the job carry the trace and the span they were written in.
    worker_lines = [
        entry
        for entry in map(json.loads, traced_server.log.read_text().splitlines())
        if entry["logger"] == "agent_training_server.jobs.worker"
        and job.training_id in entry["message"]
    ]
    assert len(worker_lines) == 2, worker_lines  # started, succeeded
    assert {entry["trace_id"] for entry in worker_lines} == {CALLER_TRACE_ID}
    assert {entry["span_id"] for entry in worker_lines} == {job_span.span_id}


def test_the_trace_id_on_the_job_is_the_exported_trace_of_its_request(receiver, traced_server):
    collector, _port = receiver
    job = train(traced_server.address, "untraced-caller")
    assert len(job.trace_id) == 32 and job.trace_id != CALLER_TRACE_ID
    spans = wait_for(collector, job.trace_id, {TRAIN_METHOD, "training.job"})
    names = {span.name for span in spans}
    assert TRAIN_METHOD in names and "training.job" in names
    (server_span,) = [span for span in spans if span.name == TRAIN_METHOD]
    assert server_span.parent_span_id == ""  # a root span: the server started this trace
