"""Structured logs: JSON lines carrying the trace and span of the request being handled."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

from opentelemetry.sdk.trace import TracerProvider

from agent_training_server.logs import JsonFormatter


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord(
        "agent_training_server", logging.WARNING, __file__, 1, message, (), None
    )


def test_lines_inside_a_span_carry_its_trace_and_span_ids():
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("request") as span:
        line = json.loads(JsonFormatter().format(record("inside a request")))
    context = span.get_span_context()
    assert line["message"] == "inside a request" and line["level"] == "WARNING"
    assert line["trace_id"] == format(context.trace_id, "032x")
    assert line["span_id"] == format(context.span_id, "016x")
    outside = json.loads(JsonFormatter().format(record("outside")))
    assert "trace_id" not in outside and outside["time"].endswith("Z")


def test_the_server_process_writes_json_lines(tmp_path):
    process = subprocess.Popen(
        [
            sys.executable, "-m", "agent_training_client", "serve", "--address", "127.0.0.1:0",
            "--data-dir", str(tmp_path), "--metrics-address", "",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert "serving" in process.stdout.readline()
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert any("shutting down" in line["message"] for line in lines)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
