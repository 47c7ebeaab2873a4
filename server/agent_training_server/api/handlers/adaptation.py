"""Handler of AdaptAgentBehavior: behaviour changes from observed performance metrics."""

from __future__ import annotations

from agent_training.v1 import adaptation_pb2, service_pb2
from agent_training_server.api import convert, rollout_messages
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.domain import RolloutRequest
from agent_training_server.services.adaptation import AdaptationService


class AdaptationHandlers:
    """AdaptAgentBehavior."""

    def __init__(self, config: ServerConfig, adaptation: AdaptationService) -> None:
        self._config = config
        self._adaptation = adaptation

    async def adapt(
        self, request: service_pb2.AdaptAgentBehaviorRequest
    ) -> service_pb2.AdaptAgentBehaviorResponse:
        """AdaptAgentBehavior."""
        rollout = _check_adapt(request, self._config)
        # The adaptation service checks the metrics, then fetches the agent (tenant-checked).
        strategy = adaptation_pb2.AdaptationStrategy.Name(request.adaptation_strategy)
        result = await self._adaptation.adapt(
            request.agent_id,
            dict(request.performance_metrics),
            strategy.removeprefix("ADAPTATION_STRATEGY_").lower(),
            dict(request.targets),
            request.dry_run,
            rollout,
        )
        response = service_pb2.AdaptAgentBehaviorResponse(
            previous_version_id=result.previous_version_id,
            changes=[
                adaptation_pb2.BehaviorChange(
                    setting=c.setting,
                    old_value=c.old_value,
                    new_value=c.new_value,
                    reason=c.reason,
                    evidence=c.evidence,
                )
                for c in result.changes
            ],
            ignored_metrics=result.ignored_metrics,
            summary=result.summary,
            rollout_id=result.rollout_id,
        )
        if result.version is not None:
            response.version.CopyFrom(
                convert.version_to_proto(result.version, result.active_version_id)
            )
        return response


def _check_adapt(
    request: service_pb2.AdaptAgentBehaviorRequest, config: ServerConfig
) -> RolloutRequest | None:
    """Check the request; return the rollout it asks for, if any."""
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.enum(
        "adaptation_strategy", request.adaptation_strategy, adaptation_pb2.AdaptationStrategy
    )
    if not request.adaptation_strategy:
        valid = ", ".join(
            name
            for name in adaptation_pb2.AdaptationStrategy.DESCRIPTOR.values_by_name
            if not name.endswith("UNSPECIFIED")
        )
        checker.add("adaptation_strategy", f"is required; one of {valid}")
    # The adaptation checks observed values against what each metric means; targets are rates.
    checker.metric_map("performance_metrics", request.performance_metrics)
    checker.metric_map("targets", request.targets, bounds=(0, 1))
    checker.request_id(request.request_id)
    rollout = None
    if request.HasField("rollout"):
        checker.ranges(request.rollout.policy, config, "rollout.policy.")
        rollout = rollout_messages.check_rollout(checker, "rollout.", request.rollout)
    checker.raise_if_any()
    return rollout
