"""Handlers of using an agent: InvokeAgent and RecordFeedback."""

from __future__ import annotations

from opentelemetry import trace

from agent_training.v1 import service_pb2
from agent_training_server.api import convert, validation
from agent_training_server.api.field_limits import MAX_DESCRIPTION
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.example_checks import check_feedback
from agent_training_server.services.feedback import FeedbackService
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.rollouts import RolloutService
from agent_training_server.telemetry import child_span


class InferenceHandlers:
    """InvokeAgent and RecordFeedback."""

    def __init__(
        self,
        config: ServerConfig,
        inference: InferenceService,
        feedback: FeedbackService,
        rollouts: RolloutService,
        tracer: trace.Tracer,
    ) -> None:
        self._config = config
        self._inference = inference
        self._feedback = feedback
        self._rollouts = rollouts
        self._tracer = tracer

    async def invoke(
        self, request: service_pb2.InvokeAgentRequest
    ) -> service_pb2.InvokeAgentResponse:
        """InvokeAgent: answer one input or a batch."""
        with child_span(self._tracer, "validate", **{"rpc.method": "InvokeAgent"}):
            validation.check_invoke_agent(request, self._config)
        inputs = [request.input] if request.input else list(request.inputs)
        served = await self._inference.invoke(
            request.agent_id,
            inputs,
            request.version_id,
            list(request.context),
            request.assignment_key,
        )
        return service_pb2.InvokeAgentResponse(
            version_id=served.version.version_id,
            predictions=[convert.answer_to_proto(answer) for answer in served.answers],
            rollout_arm=served.arm,
        )

    async def record_feedback(
        self, request: service_pb2.RecordFeedbackRequest
    ) -> service_pb2.RecordFeedbackResponse:
        """RecordFeedback on an answer the agent gave."""
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id)
        checker.text("invocation_id", request.invocation_id, 64, required=True)
        check_feedback(checker, "feedback", request.feedback, required=True)
        checker.text("corrected_output", request.corrected_output, self._config.max_text_length)
        checker.text("comment", request.comment, MAX_DESCRIPTION)
        checker.raise_if_any()
        feedback, duplicate, answer = await self._feedback.record(
            request.agent_id,
            request.invocation_id,
            request.feedback,
            request.corrected_output,
            request.comment,
        )
        if answer.rollout_id and not duplicate:
            # The rollout's policy may now decide (it answers before this call does); feedback
            # on an answer given outside a rollout changes no rollout's evidence.
            await self._rollouts.follow_policy(request.agent_id)
        return service_pb2.RecordFeedbackResponse(
            feedback_id=feedback.feedback_id, duplicate=duplicate
        )
