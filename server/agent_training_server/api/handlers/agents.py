"""Handlers of the agent RPCs: create, get, list and delete agents; list and activate versions."""

from __future__ import annotations

from opentelemetry import trace

from agent_training.v1 import service_pb2
from agent_training_server.api import convert, validation
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.services.agents import AgentService
from agent_training_server.telemetry import child_span


class AgentHandlers:
    """CreateAgent, GetAgent, ListAgents, DeleteAgent, ListAgentVersions, ActivateAgentVersion."""

    def __init__(self, config: ServerConfig, agents: AgentService, tracer: trace.Tracer) -> None:
        self._config = config
        self._agents = agents
        self._tracer = tracer

    async def create(
        self, request: service_pb2.CreateAgentRequest
    ) -> service_pb2.CreateAgentResponse:
        """CreateAgent."""
        with child_span(self._tracer, "validate", **{"rpc.method": "CreateAgent"}):
            validation.check_create_agent(request)
        agent = await self._agents.create(
            agent_id=request.agent_id,
            display_name=request.display_name,
            description=request.description,
            labels=dict(request.labels),
            default_behavior=convert.behavior_from_proto(request.default_behavior),
            request_id=request.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
        )
        return service_pb2.CreateAgentResponse(agent=convert.agent_to_proto(agent))

    async def get(self, request: service_pb2.GetAgentRequest) -> service_pb2.GetAgentResponse:
        """GetAgent."""
        validation.check_agent_id_only(request.agent_id)
        agent = await self._agents.get(request.agent_id)
        return service_pb2.GetAgentResponse(agent=convert.agent_to_proto(agent))

    async def list(self, request: service_pb2.ListAgentsRequest) -> service_pb2.ListAgentsResponse:
        """ListAgents."""
        checker = Checker()
        position = checker.page(request.page_size, request.page_token, self._config)
        checker.raise_if_any()
        page = await self._agents.list(
            validation.page_size_or_default(request.page_size), str(position.get("after", ""))
        )
        return service_pb2.ListAgentsResponse(
            agents=[convert.agent_to_proto(agent) for agent in page.items],
            next_page_token=validation.next_page_token(
                {"after": page.next_page_token}, page.next_page_token
            ),
        )

    async def delete(
        self, request: service_pb2.DeleteAgentRequest
    ) -> service_pb2.DeleteAgentResponse:
        """DeleteAgent (with force, its unfinished jobs are cancelled first)."""
        validation.check_agent_id_only(request.agent_id)
        await self._agents.delete(request.agent_id, force=request.force)
        return service_pb2.DeleteAgentResponse()

    async def list_versions(
        self, request: service_pb2.ListAgentVersionsRequest
    ) -> service_pb2.ListAgentVersionsResponse:
        """ListAgentVersions."""
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        position = checker.page(request.page_size, request.page_token, self._config)
        before = position.get("before", 0)
        if not isinstance(before, int) or before < 0:
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        page, active = await self._agents.list_versions(
            request.agent_id, validation.page_size_or_default(request.page_size), before
        )
        next_before = int(page.next_page_token or 0)
        return service_pb2.ListAgentVersionsResponse(
            versions=[convert.version_to_proto(v, active) for v in page.items],
            next_page_token=validation.next_page_token(
                {"before": next_before}, page.next_page_token
            ),
        )

    async def activate_version(
        self, request: service_pb2.ActivateAgentVersionRequest
    ) -> service_pb2.ActivateAgentVersionResponse:
        """ActivateAgentVersion (also how a rollback is done)."""
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        checker.resource_id("version_id", request.version_id)
        checker.raise_if_any()
        agent = await self._agents.activate(request.agent_id, request.version_id)
        return service_pb2.ActivateAgentVersionResponse(agent=convert.agent_to_proto(agent))
