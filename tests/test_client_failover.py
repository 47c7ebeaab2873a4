"""The Python client across servers: several addresses, retried UNAVAILABLE, re-attached streams.

Real servers over real gRPC. A target naming two servers spreads calls over both and skips one
that is down; a create refused UNAVAILABLE by a server shutting down is retried on the other (with
the request_id the client adds); a training stream cut by a kill -9 of its server goes on by
itself once the server is back, every event once, in order.
"""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_client.failover import channel_target
from tests.conftest import ServerThread, make_config
from tests.postgres_server import free_port
from tests.server_process import ServerProcess
from tests.test_training import banking_examples

INTENTS = ("card_arrival", "lost_or_stolen_card", "top_up_failed")
LONG_JOB = training_pb2.TrainingConfig(
    epochs=60, batch_size=1, seed=5, early_stopping=training_pb2.EarlyStopping(patience=0)
)


def test_targets_lists_of_ip_addresses_become_one_grpc_target() -> None:
    assert channel_target("agents.internal:50051") == "agents.internal:50051"
    assert channel_target("dns:///agents.internal:50051") == "dns:///agents.internal:50051"
    assert channel_target("10.0.0.1:50051, 10.0.0.2:50051") == "ipv4:10.0.0.1:50051,10.0.0.2:50051"
    assert channel_target("[::1]:50051,[::1]:50052") == "ipv6:[::1]:50051,[::1]:50052"
    with pytest.raises(ValueError, match=r"not an IP address:port.*dns:///name:port"):
        channel_target("a.internal:50051,b.internal:50051")
    with pytest.raises(ValueError, match="mixes IPv4 and IPv6"):
        channel_target("10.0.0.1:50051,[::1]:50051")


def _server_calls(server: ServerThread) -> int:
    return sum(1 for span in server.spans.get_finished_spans() if span.kind.name == "SERVER")


def test_calls_spread_over_every_address_and_skip_one_that_is_down(tmp_path: Path) -> None:
    first = ServerThread(make_config(tmp_path / "a"))
    second = ServerThread(make_config(tmp_path / "b"))
    dead = f"127.0.0.1:{free_port()}"
    try:
        target = f"{first.address},{dead},{second.address}"
        with AgentTrainingClient(target, timeout=30) as client:
            for _ in range(40):
                assert client.health() == "SERVING"
        assert _server_calls(first) >= 5 and _server_calls(second) >= 5
    finally:
        first.stop()
        second.stop()


def test_a_create_refused_by_a_server_shutting_down_is_retried_on_the_other(
    tmp_path: Path,
) -> None:
    closing = ServerThread(make_config(tmp_path / "closing"))
    serving = ServerThread(make_config(tmp_path / "serving"))
    try:
        # What a server does first when it shuts down: refuse new jobs with UNAVAILABLE.
        closing.running.jobs.end_streams()
        for server in (closing, serving):
            with AgentTrainingClient(server.address, timeout=30) as client:
                client.create_agent(agent_id="bot")
        target = f"{closing.address},{serving.address}"
        with AgentTrainingClient(target, timeout=60) as client:
            for _ in range(4):  # whichever server round robin starts with
                events = list(
                    client.train_agent(
                        agent_id="bot",
                        training_data=banking_examples(INTENTS, per_intent=5),
                        config=training_pb2.TrainingConfig(epochs=1, seed=1),
                        timeout=120,
                    )
                )
                assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
        with AgentTrainingClient(serving.address, timeout=30) as client:
            assert len(client.list_training_jobs(agent_id="bot").jobs) == 4
        with AgentTrainingClient(closing.address, timeout=30) as client:
            assert len(client.list_training_jobs(agent_id="bot").jobs) == 0
    finally:
        closing.stop()
        serving.stop()


def test_a_training_stream_cut_by_its_server_dying_goes_on_once_the_server_is_back(
    tmp_path: Path,
) -> None:
    address = f"127.0.0.1:{free_port()}"
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    server = ServerProcess(data_dir, log, address=address, checkpoint_every_steps=40)
    try:
        with AgentTrainingClient(address, timeout=60) as client:
            client.create_agent(agent_id="follower")
            stream = client.train_agent(
                agent_id="follower",
                training_data=banking_examples(INTENTS, per_intent=10),
                config=LONG_JOB,
                timeout=600,
            )
            seen = [next(stream) for _ in range(4)]
            server.kill()  # kill -9 of the server and its workers, mid-stream
            server = ServerProcess(data_dir, log, address=address, checkpoint_every_steps=40)
            rest = list(stream)  # the same iterator: it re-attaches by itself
        events = seen + rest
        assert [event.sequence for event in events] == list(range(1, len(events) + 1))
        assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
        assert any(event.progress.status == training_pb2.TRAINING_STATUS_QUEUED for event in rest)
    finally:
        server.kill()


def test_a_stream_that_fails_otherwise_is_not_re_attached(tmp_path: Path) -> None:
    server = ServerThread(make_config(tmp_path))
    try:
        with AgentTrainingClient(server.address, timeout=30) as client:
            stream = client.watch_training_job("train_0123456789abcdef", 0, timeout=30)
            with pytest.raises(Exception) as raised:
                next(stream)
            assert getattr(raised.value, "status_code", None) == grpc.StatusCode.NOT_FOUND
    finally:
        server.stop()
