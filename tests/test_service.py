"""The served contract: every RPC has a client method, standard services, the process itself."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from agent_training.v1 import service_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread

SERVICE = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"]


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def test_every_rpc_has_a_client_method_none_missing_none_extra() -> None:
    rpc_methods = {_snake(method.name) for method in SERVICE.methods}
    client_methods = {
        name
        for name in vars(AgentTrainingClient)
        if not name.startswith("_") and callable(getattr(AgentTrainingClient, name))
    }
    helpers = {
        "close",
        "iter_agents",
        "iter_dataset_examples",
        "iter_training_checkpoints",
        "health",
    }
    assert rpc_methods - client_methods == set()
    assert client_methods - rpc_methods - helpers == set()


def test_contract_has_the_seed_operations_and_streams() -> None:
    methods = {method.name: method for method in SERVICE.methods}
    for name in (
        "TrainAgent",
        "GenerateSyntheticTrainingData",
        "AnalyzeAndOptimize",
        "AdaptAgentBehavior",
    ):
        assert name in methods
    streaming = {name for name, method in methods.items() if method.server_streaming}
    assert streaming == {
        "TrainAgent",
        "WatchTrainingJob",
        "GenerateSyntheticTrainingData",
        "AnalyzeAndOptimizeStream",
        "WatchAnalysisJob",
        "ExportAgentVersion",
    }
    uploads = {name for name, method in methods.items() if method.client_streaming}
    assert uploads == {"UploadDataset"}
    request = service_pb2.TrainAgentRequest.DESCRIPTOR.fields_by_name
    assert {"agent_id", "training_data", "training_type", "config"} <= set(request)


def test_health_check_answers_serving(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE.full_name):
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_and_describes_the_service(server: ServerThread) -> None:
    with grpc.insecure_channel(server.address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert SERVICE.full_name in services
        assert "grpc.health.v1.Health" in services
        described = database.FindFileContainingSymbol(SERVICE.full_name)
        assert "TrainAgent" in {method.name for method in described.service[0].method}


def test_parts_not_served_yet_answer_unimplemented_with_a_hint(
    client: AgentTrainingClient,
) -> None:
    from agent_training.v1 import adaptation_pb2
    from tests.conftest import assert_status, expect_error

    client.create_agent(agent_id="someone")
    error = expect_error(
        client.adapt_agent_behavior,
        agent_id="someone",
        performance_metrics={"success_rate": 0.9},
        adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_EXPLORATION,
    )
    assert_status(error, grpc.StatusCode.UNIMPLEMENTED)
    assert error.code == "STRATEGY_NOT_SERVED"
    assert "threshold" in error.hint


def _cli(address: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent_training_client", "--target", address, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_manages_agents(server: ServerThread) -> None:
    created = _cli(server.address, "agents", "create", "cli-bot", "--name", "CLI bot")
    assert created.returncode == 0, created.stderr
    assert '"agent_id": "cli-bot"' in created.stdout
    assert "CLI bot" in _cli(server.address, "agents", "get", "cli-bot").stdout
    assert "cli-bot" in _cli(server.address, "agents", "list").stdout
    assert _cli(server.address, "health").stdout.strip() == "SERVING"
    assert _cli(server.address, "agents", "delete", "cli-bot").returncode == 0
    missing = _cli(server.address, "agents", "get", "cli-bot")
    assert missing.returncode == 1
    assert '"code": "AGENT_NOT_FOUND"' in missing.stderr
    assert '"trace_id"' in missing.stderr


def test_server_process_serves_and_stops_gracefully_on_sigterm(tmp_path) -> None:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_training_client",
            "serve",
            "--address",
            "127.0.0.1:0",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "AGENT_TRAINING_LOG_LEVEL": "WARNING"},
    )
    try:
        line = process.stdout.readline()
        match = re.search(r"on (127\.0\.0\.1:\d+)", line)
        assert match, line + process.stderr.read()
        with AgentTrainingClient(match.group(1)) as client:
            assert client.health() == "SERVING"
            client.create_agent(agent_id="from-process")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert (tmp_path / "data" / "agent_training.sqlite3").exists()
