"""The service on PostgreSQL (``database_url``): the same calls, the state in the database.

A real server over real gRPC and a real PostgreSQL server on loopback (tests/postgres_server.py).
What it stores survives a restart of the service; a database it cannot use stops the start with
one line naming the setting.
"""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import psycopg
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.postgres_server import PostgresServer, free_port
from tests.test_startup import refused_start, server_command
from tests.test_training import banking_examples

INTENTS = ("card_arrival", "lost_or_stolen_card", "top_up_failed")


def test_a_server_on_postgres_trains_serves_and_keeps_its_state_across_a_restart(
    tmp_path: Path, postgres_url: str
) -> None:
    config = make_config(tmp_path, database_url=postgres_url)
    server = ServerThread(config)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="pg-bot", display_name="On PostgreSQL")
            events = list(
                client.train_agent(
                    agent_id="pg-bot",
                    training_data=banking_examples(INTENTS, per_intent=10),
                    config=training_pb2.TrainingConfig(epochs=3, seed=3),
                    timeout=120,
                )
            )
            finished = events[-1].finished
            assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            answer = client.invoke_agent(agent_id="pg-bot", inputs=["my card has not arrived"])
            invocation_id = answer.predictions[0].invocation_id
            client.record_feedback(
                agent_id="pg-bot", invocation_id=invocation_id, feedback="correct"
            )
    finally:
        server.stop()
    # Nothing went to a SQLite file; the rows are in PostgreSQL.
    assert not config.database_path.exists()
    with psycopg.connect(postgres_url) as connection:
        (agents,) = connection.execute("SELECT COUNT(*) FROM agents").fetchone() or (0,)
        (events_stored,) = connection.execute("SELECT COUNT(*) FROM job_events").fetchone() or (0,)
    assert agents == 1 and events_stored == len(events)

    server = ServerThread(config)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            agent = client.get_agent("pg-bot")
            assert agent.active_version_id == finished.version_id
            again = list(client.watch_training_job(events[0].training_id, 0, timeout=60))
            assert [e.SerializeToString() for e in again] == [e.SerializeToString() for e in events]
            answer = client.invoke_agent(agent_id="pg-bot", inputs=["my card has not arrived"])
            assert answer.predictions[0].output
    finally:
        server.stop()


def test_an_unreachable_database_stops_the_start_with_one_line(tmp_path: Path) -> None:
    url = f"postgresql://postgres:secret-password@127.0.0.1:{free_port()}/nothing"
    line = refused_start(server_command(tmp_path / "data", "--database-url", url), None)
    assert "--database-url (AGENT_TRAINING_DATABASE_URL)" in line
    assert "cannot open database 127.0.0.1:" in line
    assert "secret-password" not in line


def test_a_url_that_is_not_postgresql_stops_the_start(tmp_path: Path) -> None:
    command = server_command(tmp_path / "data", "--database-url", "mysql://somewhere/db")
    line = refused_start(command, None)
    assert "database_url must be a postgresql:// URL" in line


def test_a_missing_database_stops_the_start_with_one_line(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    url = postgres_server.url("no_such_database")
    line = refused_start(server_command(tmp_path / "data", "--database-url", url), None)
    assert "no_such_database" in line and "does not exist" in line


def until_health(client: AgentTrainingClient, status: str, seconds: float = 60) -> bool:
    """Whether agent_training.database reports ``status`` within ``seconds`` (probed every 5 s)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if client.health("agent_training.database") == status:
            return True
        time.sleep(0.2)
    return False


def test_calls_while_the_database_is_down_are_unavailable_and_work_again_once_it_is_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = PostgresServer()  # its own server: this test stops it
    server = None
    try:
        server = ServerThread(make_config(tmp_path, database_url=database.create_database()))
        with AgentTrainingClient(server.address, timeout=30) as client:
            client.create_agent(agent_id="before")
            assert client.health("agent_training.database") == "SERVING"
            database.halt()
            assert until_health(client, "NOT_SERVING")  # a load balancer's readiness check
            assert client.health() == "SERVING"  # the server itself still answers
            for call in (
                lambda: client.get_agent("before"),
                lambda: client.create_agent(agent_id="during"),
            ):
                error = expect_error(call)
                assert_status(error, grpc.StatusCode.UNAVAILABLE)
                assert error.code == "DATABASE_UNAVAILABLE" and error.trace_id
            database.start()
            assert until_health(client, "SERVING")
            assert client.get_agent("before").agent_id == "before"
            client.create_agent(agent_id="after")
            names = [agent.agent_id for agent in client.list_agents().agents]
            assert names == ["after", "before"]  # nothing of the refused create was stored
            # The replica's lease could not be renewed meanwhile: said once, not every second.
            assert caplog.text.count("heartbeat failed") == 1, caplog.text
    finally:
        if server is not None:
            server.stop()
        database.stop()


def test_a_replica_with_its_own_data_folder_serves_what_another_trained_into_the_shared_artifacts(
    tmp_path: Path, postgres_url: str
) -> None:
    shared = tmp_path / "shared-artifacts"
    first = make_config(tmp_path / "a", database_url=postgres_url, artifact_dir=str(shared))
    server = ServerThread(first)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="shared-bot")
            events = list(
                client.train_agent(
                    agent_id="shared-bot",
                    training_data=banking_examples(INTENTS, per_intent=10),
                    config=training_pb2.TrainingConfig(epochs=2, seed=4),
                    timeout=120,
                )
            )
            assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            expected = client.invoke_agent(agent_id="shared-bot", inputs=["top up failed"])
    finally:
        server.stop()
    assert list((shared / "artifacts" / "shared-bot").iterdir())
    assert not (first.data_dir / "artifacts").exists()

    second = make_config(tmp_path / "b", database_url=postgres_url, artifact_dir=str(shared))
    server = ServerThread(second)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            answer = client.invoke_agent(agent_id="shared-bot", inputs=["top up failed"])
            assert answer.predictions[0].output == expected.predictions[0].output
            assert answer.predictions[0].confidence == expected.predictions[0].confidence
    finally:
        server.stop()
