"""Rollout requests: validation, and rollouts with their evidence as the contract's messages."""

from __future__ import annotations

from agent_training.v1 import rollouts_pb2, service_pb2
from agent_training_server.api import convert
from agent_training_server.api.field_limits import MAX_DESCRIPTION
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.domain import RolloutMode, RolloutPolicy, RolloutRequest
from agent_training_server.rollouts.evidence import ArmEvidence
from agent_training_server.services.rollouts import RolloutReport

MODES = {
    rollouts_pb2.ROLLOUT_MODE_CANARY: RolloutMode.CANARY,
    rollouts_pb2.ROLLOUT_MODE_SHADOW: RolloutMode.SHADOW,
}
MODE_VALUES = {name: value for value, name in MODES.items()}
STATE_VALUES = {
    "running": rollouts_pb2.ROLLOUT_STATE_RUNNING,
    "promoted": rollouts_pb2.ROLLOUT_STATE_PROMOTED,
    "aborted": rollouts_pb2.ROLLOUT_STATE_ABORTED,
}
SHARE_RULE = "is the canary's share of the traffic, in (0, 1): both arms need some"
SHADOW_SHARE = "is for canaries: a shadow answers every input unseen"


def check_start(request: service_pb2.StartRolloutRequest, config: ServerConfig) -> RolloutRequest:
    """Validate StartRollout; return the rollout it asks for."""
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.resource_id("candidate_version_id", request.candidate_version_id)
    checker.request_id(request.request_id)
    checker.ranges(request, config)
    asked = check_rollout(checker, "", request)
    checker.raise_if_any()
    return asked


def check_rollout(
    checker: Checker,
    prefix: str,
    message: service_pb2.StartRolloutRequest | rollouts_pb2.VersionRollout,
) -> RolloutRequest:
    """Check a rollout's mode and share; return the rollout.

    StartRollout's own fields (``prefix`` ""), or the `rollout` of TrainAgent and
    AdaptAgentBehavior (``prefix`` "rollout."). Its policy's ranges are checked with the
    request's.
    """
    mode = MODES.get(message.mode, "")
    if not mode:
        checker.add(f"{prefix}mode", "is required: ROLLOUT_MODE_CANARY or ROLLOUT_MODE_SHADOW")
    share = message.traffic_share
    if mode == RolloutMode.CANARY:
        if not message.HasField("traffic_share"):
            checker.add(f"{prefix}traffic_share", SHARE_RULE + "; it is required for a canary")
        elif not 0 < share < 1:  # also refuses NaN
            checker.add(f"{prefix}traffic_share", f"{SHARE_RULE}; got {share}")
    elif mode == RolloutMode.SHADOW and message.HasField("traffic_share"):
        checker.add(f"{prefix}traffic_share", SHADOW_SHARE)
    return RolloutRequest(
        mode=mode or RolloutMode.CANARY,
        traffic_share=share if mode == RolloutMode.CANARY else 0.0,
        policy=policy_from_proto(message.policy) if message.HasField("policy") else None,
    )


def check_update(
    request: service_pb2.UpdateRolloutRequest, config: ServerConfig
) -> tuple[str | None, float | None, RolloutPolicy | None]:
    """Validate UpdateRollout; return (mode, traffic share, policy), None where unchanged."""
    checker = Checker()
    checker.resource_id("agent_id", request.agent_id)
    checker.ranges(request, config)
    mode = MODES.get(request.mode) if request.mode else None
    if request.mode and mode is None:
        checker.add("mode", "is ROLLOUT_MODE_CANARY or ROLLOUT_MODE_SHADOW (unset keeps it)")
    share = request.traffic_share if request.HasField("traffic_share") else None
    if share is not None and not 0 < share < 1:
        checker.add("traffic_share", f"{SHARE_RULE}; got {share}")
    if share is not None and mode == RolloutMode.SHADOW:
        checker.add("traffic_share", SHADOW_SHARE)
    if request.remove_policy and request.HasField("policy"):
        checker.add("remove_policy", "removes the policy: send it without a policy")
    checker.raise_if_any()
    policy = policy_from_proto(request.policy) if request.HasField("policy") else None
    return mode, share, policy


def check_agent(agent_id: str, rollout_id: str = "", reason: str = "") -> None:
    """Validate GetRollout, PromoteRollout and AbortRollout (their sizes checked before)."""
    checker = Checker()
    checker.resource_id("agent_id", agent_id)
    checker.resource_id("rollout_id", rollout_id, required=False)
    checker.text("reason", reason, MAX_DESCRIPTION)
    checker.raise_if_any()


def policy_from_proto(message: rollouts_pb2.RolloutPolicy) -> RolloutPolicy:
    """The policy, its unset fields at their defaults (ranges checked by the caller)."""
    default = RolloutPolicy()
    return RolloutPolicy(
        confidence=message.confidence if message.HasField("confidence") else default.confidence,
        abort_margin=(
            message.abort_margin if message.HasField("abort_margin") else default.abort_margin
        ),
        min_feedback=(
            message.min_feedback if message.HasField("min_feedback") else default.min_feedback
        ),
    )


def rollout_to_proto(report: RolloutReport) -> rollouts_pb2.Rollout:
    """A rollout with its evidence as the contract's message."""
    rollout, evidence = report.rollout, report.evidence
    message = rollouts_pb2.Rollout(
        rollout_id=rollout.rollout_id,
        agent_id=rollout.agent_id,
        candidate_version_id=rollout.candidate_version_id,
        active_version_id=rollout.active_version_id,
        mode=MODE_VALUES[rollout.mode],
        traffic_share=rollout.traffic_share,
        state=STATE_VALUES[rollout.state],
        arms=[_arm(evidence.active), _arm(evidence.candidate)],
        create_time=convert.timestamp(rollout.create_time),
        update_time=convert.timestamp(rollout.update_time),
    )
    if rollout.policy is not None:
        message.policy.CopyFrom(
            rollouts_pb2.RolloutPolicy(
                confidence=rollout.policy.confidence,
                abort_margin=rollout.policy.abort_margin,
                min_feedback=rollout.policy.min_feedback,
            )
        )
    if rollout.mode == RolloutMode.SHADOW:
        shadow = evidence.shadow
        message.shadow.CopyFrom(
            rollouts_pb2.ShadowEvidence(
                compared=shadow.compared,
                agreement=shadow.agreement,
                logged_feedback=shadow.logged_feedback,
                estimated_success_rate=shadow.estimated_success_rate,
                estimated_standard_error=shadow.estimated_standard_error,
            )
        )
    for decision in rollout.decisions:
        message.decisions.append(
            rollouts_pb2.RolloutDecision(
                action=decision.action,
                reason=decision.reason,
                automatic=decision.automatic,
                evidence=decision.evidence,
                time=convert.timestamp(decision.time),
            )
        )
    return message


def _arm(arm: ArmEvidence) -> rollouts_pb2.RolloutArm:
    low, high = arm.success_interval
    return rollouts_pb2.RolloutArm(
        arm=arm.arm,
        version_id=arm.version_id,
        answers=arm.answers,
        feedback=arm.feedback,
        success_rate=arm.success_rate,
        success_rate_low=low,
        success_rate_high=high,
        fallback_rate=arm.fallback_rate,
        latency_p50_ms=arm.latency_p50_ms,
        latency_p95_ms=arm.latency_p95_ms,
    )
