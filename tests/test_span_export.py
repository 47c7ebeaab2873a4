"""Span export from a child process: the same OTLP content, every span delivered, no orphan."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from agent_training_server.span_export import ProcessSpanExporter, flatten, rebuild
from tests.test_trace_propagation import OtlpReceiver


def _spans(count: int = 3) -> list[ReadableSpan]:
    """Finished spans with every kind of content an exporter encodes."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "span-export-test"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests", "1.2.3")
    other = provider.get_tracer("other-scope")
    for index in range(count):
        with tracer.start_as_current_span(
            "/pkg.Service/Method",
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "index": index, "ratio": 0.5, "ok": True},
        ) as server:
            server.add_event("received", {"bytes": 42, "names": ("a", "b")})
            linked = server.get_span_context()
            with other.start_as_current_span(
                "validate", links=[Link(linked, {"why": "x"})]
            ) as span:
                span.set_status(Status(StatusCode.ERROR, "bad input"))
    return list(memory.get_finished_spans())


def test_flattened_spans_encode_exactly_as_the_originals() -> None:
    spans = _spans()
    carried = pickle.loads(pickle.dumps(flatten(spans)))
    assert encode_spans(rebuild(carried)) == encode_spans(spans)


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    collector = OtlpReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
    yield collector
    server.stop(0)


def test_every_span_reaches_the_collector_by_shutdown(receiver: OtlpReceiver) -> None:
    exporter = ProcessSpanExporter(log_settings=("WARNING", "json"))
    sent = [_spans(100) for _ in range(3)]
    for batch in sent:
        assert exporter.export(batch) == SpanExportResult.SUCCESS
    exporter.shutdown()  # returns once the child has exported everything and stopped

    expected = sorted(f"{span.context.span_id:016x}" for batch in sent for span in batch)
    assert sorted(span.span_id for span in receiver.spans) == expected
    assert exporter.export(sent[0]) == SpanExportResult.FAILURE


def test_the_export_process_ends_when_the_server_is_killed(receiver: OtlpReceiver) -> None:
    server = subprocess.Popen(
        [
            sys.executable, "-c",
            "from agent_training_server.span_export import ProcessSpanExporter\n"
            "import time\n"
            "exporter = ProcessSpanExporter()\n"
            "print(exporter._process.pid, flush=True)\n"
            "time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    child = int(server.stdout.readline())
    os.kill(server.pid, signal.SIGKILL)
    server.wait()
    deadline = time.monotonic() + 30
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the span export process outlived the server"


def _alive(pid: int) -> bool:
    """Running (not a zombie waiting for a parent that is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
