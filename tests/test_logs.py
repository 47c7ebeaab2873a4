"""Structured logs: JSON lines carrying the trace and span of the request being handled."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import sys
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient, AgentTrainingError
from agent_training_server.logs import JsonFormatter
from tests.test_training import INTENTS, banking_examples


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


def test_a_session_of_calls_leaves_a_log_of_json_lines_without_errors(tmp_path: Path) -> None:
    """The log of a normal run: successful, cancelled and shut-down streams, the encoder loaded
    in a worker and in the server: JSON lines only, no traceback, no library noise."""
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "agent-training-server"), "--address", "127.0.0.1:0",
            "--data-dir", str(tmp_path / "data"), "--metrics-address", "127.0.0.1:0",
            "--workers", "1",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    examples = banking_examples(INTENTS, per_intent=6)
    ended_by_shutdown: list[AgentTrainingError] = []
    try:
        address = re.search(r"on (\S+:\d+)", server.stdout.readline()).group(1)
        # No re-attaching: the stream the shutdown ends must end here, with the server's error.
        with AgentTrainingClient(address, timeout=120, reattach_seconds=0) as client:
            client.create_agent(agent_id="plain")
            client.create_agent(agent_id="encoded")
            done = list(client.train_agent(agent_id="plain", training_data=examples, timeout=120))
            list(
                client.train_agent(
                    agent_id="encoded",
                    training_data=examples,
                    training_type=training_pb2.TRAINING_TYPE_FEW_SHOT,
                    timeout=300,
                )
            )
            client.invoke_agent(agent_id="encoded", inputs=["my card has not arrived yet"])
            client.invoke_agent(agent_id="plain", inputs=["my card has not arrived yet"])
            list(client.watch_training_job(done[0].training_id, 0))
            watch = client.watch_training_job(done[0].training_id, 0)
            next(watch)
            watch.close()  # cancelled by the client after its first message
            stream = client.train_agent(agent_id="plain", training_data=examples, timeout=120)
            next(stream)
            stream.close()  # cancelled; the job goes on
            long_job = training_pb2.TrainingConfig(epochs=200, batch_size=1)
            stream = client.train_agent(
                agent_id="plain", training_data=examples, config=long_job, timeout=300
            )
            for event in stream:
                if event.progress.status == training_pb2.TRAINING_STATUS_RUNNING:
                    break
            server.send_signal(signal.SIGTERM)  # ends the open stream: a shut-down stream
            try:
                list(stream)
            except AgentTrainingError as error:
                ended_by_shutdown.append(error)
        assert server.wait(60) == 0
    finally:
        server.kill()
        _out, err = server.communicate(timeout=30)

    assert ended_by_shutdown and ended_by_shutdown[0].code == "SERVER_SHUTTING_DOWN"
    assert "\r" not in err and "Loading weights" not in err, "a progress bar in the log"
    assert "Traceback" not in err and "Failed to detach context" not in err
    lines = [json.loads(line) for line in err.splitlines()]  # nothing but JSON lines
    assert [line for line in lines if line["level"] in ("ERROR", "CRITICAL")] == []
    assert any(line["message"] == "stopped" for line in lines)
