"""Agent management over a real channel: CRUD, pagination, idempotency, versions."""

from __future__ import annotations

import grpc

from agent_training_client import AgentTrainingClient
from tests.conftest import ServerThread, assert_status, expect_error


def test_create_get_list_delete(client: AgentTrainingClient) -> None:
    created = client.create_agent(
        agent_id="support-bot",
        display_name="Support",
        description="answers billing questions",
        labels={"team": "payments"},
    )
    assert created.agent_id == "support-bot"
    assert created.active_version_id == ""
    assert created.create_time.seconds > 0

    fetched = client.get_agent("support-bot")
    assert fetched.display_name == "Support"
    assert dict(fetched.labels) == {"team": "payments"}
    assert fetched.default_behavior.num_alternatives == 3  # defaults are resolved and shown

    assert [agent.agent_id for agent in client.iter_agents()] == ["support-bot"]
    client.delete_agent("support-bot")
    assert_status(expect_error(client.get_agent, "support-bot"), grpc.StatusCode.NOT_FOUND)
    assert list(client.iter_agents()) == []


def test_server_assigns_an_id_when_none_is_given(client: AgentTrainingClient) -> None:
    agent = client.create_agent(display_name="anonymous")
    assert agent.agent_id.startswith("agent_") and len(agent.agent_id) == len("agent_") + 16
    assert client.get_agent(agent.agent_id).display_name == "anonymous"


def test_create_existing_id_is_already_exists(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="dup")
    error = expect_error(client.create_agent, agent_id="dup")
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS)
    assert error.code == "AGENT_ALREADY_EXISTS"


def test_pagination_walks_every_agent_once(client: AgentTrainingClient) -> None:
    ids = [f"agent-{index:02d}" for index in range(7)]
    for agent_id in reversed(ids):
        client.create_agent(agent_id=agent_id)
    seen, token, pages = [], "", 0
    while True:
        page = client.list_agents(page_size=3, page_token=token)
        assert len(page.agents) <= 3
        seen += [agent.agent_id for agent in page.agents]
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert seen == ids
    assert pages == 3


def test_bad_page_token_and_size_are_invalid_argument(client: AgentTrainingClient) -> None:
    error = expect_error(client.list_agents, page_token="not-a-token!")
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert [v.field for v in error.field_violations] == ["page_token"]
    error = expect_error(client.list_agents, page_size=-1)
    assert [v.field for v in error.field_violations] == ["page_size"]


def test_idempotent_create_with_request_id(client: AgentTrainingClient) -> None:
    first = client.create_agent(display_name="retry me", request_id="req-123")
    again = client.create_agent(display_name="retry me", request_id="req-123")
    assert again.agent_id == first.agent_id
    assert [agent.agent_id for agent in client.iter_agents()] == [first.agent_id]

    error = expect_error(client.create_agent, display_name="other", request_id="req-123")
    assert_status(error, grpc.StatusCode.ALREADY_EXISTS)
    assert error.code == "REQUEST_ID_REUSED"
    assert len(list(client.iter_agents())) == 1


def test_unknown_agent_is_not_found_everywhere(client: AgentTrainingClient) -> None:
    for call, args in (
        (client.get_agent, ("ghost",)),
        (client.delete_agent, ("ghost",)),
        (client.list_agent_versions, ("ghost",)),
        (client.activate_agent_version, ("ghost", "ver_1")),
    ):
        error = expect_error(call, *args)
        assert_status(error, grpc.StatusCode.NOT_FOUND)
        assert error.code == "AGENT_NOT_FOUND"
        assert "ghost" in error.message


def test_versions_of_a_new_agent_are_empty_and_unknown_version_is_not_found(
    client: AgentTrainingClient,
) -> None:
    client.create_agent(agent_id="fresh")
    assert list(client.list_agent_versions("fresh").versions) == []
    error = expect_error(client.activate_agent_version, "fresh", "ver_missing")
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert error.code == "VERSION_NOT_FOUND"


def test_agents_survive_a_restart(server: ServerThread, tmp_path) -> None:
    from tests.conftest import make_config

    with AgentTrainingClient(server.address) as client:
        client.create_agent(agent_id="durable", display_name="kept")
    server.stop()
    restarted = ServerThread(make_config(tmp_path))
    try:
        with AgentTrainingClient(restarted.address) as client:
            assert client.get_agent("durable").display_name == "kept"
    finally:
        restarted.stop()
        server.stop = lambda grace=0: None  # the fixture's server is already stopped
