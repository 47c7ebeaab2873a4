"""Handlers of the rollout RPCs: start, get, update, promote and abort an agent's rollout."""

from __future__ import annotations

from agent_training.v1 import service_pb2
from agent_training_server.api import convert, rollout_messages
from agent_training_server.config import ServerConfig
from agent_training_server.services.rollouts import RolloutService


class RolloutHandlers:
    """StartRollout, GetRollout, UpdateRollout, PromoteRollout, AbortRollout."""

    def __init__(self, config: ServerConfig, rollouts: RolloutService) -> None:
        self._config = config
        self._rollouts = rollouts

    async def start(
        self, request: service_pb2.StartRolloutRequest
    ) -> service_pb2.StartRolloutResponse:
        """StartRollout."""
        asked = rollout_messages.check_start(request, self._config)
        report = await self._rollouts.start(
            agent_id=request.agent_id,
            candidate_version_id=request.candidate_version_id,
            mode=asked.mode,
            traffic_share=asked.traffic_share,
            policy=asked.policy,
            request_id=request.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
        )
        return service_pb2.StartRolloutResponse(rollout=rollout_messages.rollout_to_proto(report))

    async def get(self, request: service_pb2.GetRolloutRequest) -> service_pb2.GetRolloutResponse:
        """GetRollout."""
        rollout_messages.check_agent(request.agent_id, request.rollout_id)
        report = await self._rollouts.get(request.agent_id, request.rollout_id)
        return service_pb2.GetRolloutResponse(rollout=rollout_messages.rollout_to_proto(report))

    async def update(
        self, request: service_pb2.UpdateRolloutRequest
    ) -> service_pb2.UpdateRolloutResponse:
        """UpdateRollout."""
        mode, share, policy = rollout_messages.check_update(request, self._config)
        report = await self._rollouts.update(
            request.agent_id,
            mode=mode,
            traffic_share=share,
            policy=policy,
            remove_policy=request.remove_policy,
        )
        return service_pb2.UpdateRolloutResponse(rollout=rollout_messages.rollout_to_proto(report))

    async def promote(
        self, request: service_pb2.PromoteRolloutRequest
    ) -> service_pb2.PromoteRolloutResponse:
        """PromoteRollout."""
        rollout_messages.check_agent(request.agent_id, reason=request.reason)
        report, agent = await self._rollouts.promote(request.agent_id, request.reason)
        return service_pb2.PromoteRolloutResponse(
            rollout=rollout_messages.rollout_to_proto(report),
            agent=convert.agent_to_proto(agent),
        )

    async def abort(
        self, request: service_pb2.AbortRolloutRequest
    ) -> service_pb2.AbortRolloutResponse:
        """AbortRollout."""
        rollout_messages.check_agent(request.agent_id, reason=request.reason)
        report = await self._rollouts.abort(request.agent_id, request.reason)
        return service_pb2.AbortRolloutResponse(rollout=rollout_messages.rollout_to_proto(report))
