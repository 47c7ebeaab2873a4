"""Span export configured by the standard OTEL_* environment variables."""

from __future__ import annotations

import os
import subprocess
import sys

import grpc

from agent_training_client import AgentTrainingClient
from tests.conftest import assert_status, expect_error


def serve(tmp_path, **env) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable, "-m", "agent_training_client", "serve", "--address", "127.0.0.1:0",
            "--data-dir", str(tmp_path), "--metrics-address", "",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )  # fmt: skip


def test_console_exporter_writes_the_span_whose_trace_id_the_error_carries(tmp_path):
    process = serve(tmp_path, OTEL_TRACES_EXPORTER="console")
    try:
        line = process.stdout.readline()
        address = line.split(" on ")[1].split()[0]
        with AgentTrainingClient(address, timeout=30) as client:
            error = expect_error(client.get_agent, "nobody")
        assert_status(error, grpc.StatusCode.NOT_FOUND)
    finally:
        process.terminate()
        out, _err = process.communicate(timeout=60)
    assert "/agent_training.v1.AgentTrainingService/GetAgent" in out
    assert f'"trace_id": "0x{error.trace_id}"' in out


def test_an_unknown_exporter_is_a_configuration_error(tmp_path):
    process = serve(tmp_path, OTEL_TRACES_EXPORTER="carrier-pigeon")
    _out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "bad configuration" in err and "carrier-pigeon" in err
