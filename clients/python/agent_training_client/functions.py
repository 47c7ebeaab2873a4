"""The seed API's four functions beside the typed client: ``client.functions.train_agent(...)``.

They take the seed's snake_case fields and string enums (``training_type="supervised"``) and
return the seed's success response ``{"success": True, "data": {...}}``; failures raise
:class:`AgentTrainingError`, whose ``to_dict()`` is the seed's error object. The data dicts are
the ones the TypeScript client's ``client.functions`` returns for the same call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

from google.protobuf.message import Message

from agent_training.v1 import service_pb2, synthetic_pb2, training_pb2
from agent_training_client.errors import AgentTrainingError
from agent_training_client.plain import from_plain, to_plain


class TypedCalls(Protocol):
    """The typed client's calls the seed functions wrap (AgentTrainingClient has them).

    Named here, not imported from client.py, so that the client can own a SeedFunctions and
    imports still run one way only.
    """

    def train_agent(
        self, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[training_pb2.TrainingEvent]:
        """As AgentTrainingClient.train_agent."""

    def generate_synthetic_training_data(
        self, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[service_pb2.GenerateSyntheticTrainingDataResponse]:
        """As AgentTrainingClient.generate_synthetic_training_data."""

    def analyze_and_optimize(self, **fields: Any) -> service_pb2.AnalyzeAndOptimizeResponse:
        """As AgentTrainingClient.analyze_and_optimize."""

    def adapt_agent_behavior(self, **fields: Any) -> service_pb2.AdaptAgentBehaviorResponse:
        """As AgentTrainingClient.adapt_agent_behavior."""


ProgressCallback = Callable[[dict[str, Any]], None]


def _fields_of(request: Message) -> dict[str, Any]:
    """The fields set in a request, as keyword arguments of the typed client's methods."""
    return {field.name: value for field, value in request.ListFields()}


def _success(data: dict[str, Any]) -> dict[str, Any]:
    return {"success": True, "data": data}


class SeedFunctions:
    """The seed's functions over one client (its channel, deadlines and error decoding)."""

    def __init__(self, client: TypedCalls) -> None:
        self._client = client

    def train_agent(
        self,
        *,
        on_progress: ProgressCallback | None = None,
        timeout: float | None = None,
        **fields: Any,
    ) -> dict[str, Any]:
        """Train an agent and return when the job ends; progress events go to ``on_progress``.

        Returns ``data`` with the seed's ``training_id``, ``status`` ("completed"), ``metrics``
        (``accuracy``, ``loss`` and the rest) and the new ``version_id``. A job that fails or is
        cancelled raises its error.
        """
        request = from_plain(service_pb2.TrainAgentRequest, fields)
        for event in self._client.train_agent(timeout=timeout, **_fields_of(request)):
            kind = event.WhichOneof("kind")
            if kind == "progress" and on_progress is not None:
                on_progress(
                    {
                        "training_id": event.training_id,
                        "sequence": event.sequence,
                        **to_plain(event.progress),
                    }
                )
            if kind == "finished":
                return _success(self._finished(request.agent_id, event))
        raise AgentTrainingError(
            code="UNAVAILABLE",
            message="the training stream ended before the job finished",
            hint="Re-attach with watch_training_job(training_id) to follow the job to its end.",
            retryable=True,
        )

    @staticmethod
    def _finished(agent_id: str, event: training_pb2.TrainingEvent) -> dict[str, Any]:
        finished = event.finished
        if finished.status != training_pb2.TRAINING_STATUS_SUCCEEDED:
            error = finished.error
            raise AgentTrainingError(
                code=error.code or "TRAINING_ERROR",
                message=error.message or f"training {event.training_id} did not succeed",
                hint=error.hint,
                retryable=error.retryable,
                trace_id=error.trace_id,
            )
        return {
            "training_id": event.training_id,
            "agent_id": agent_id,
            "status": "completed",
            "version_id": finished.version_id,
            "metrics": to_plain(finished.metrics),
        }

    def generate_synthetic_training_data(
        self, *, timeout: float | None = None, **fields: Any
    ) -> dict[str, Any]:
        """Generate ``count`` examples (streamed in chunks, gathered here).

        Returns ``data`` with ``training_data`` (the examples, ready for ``train_agent``),
        ``examples`` (the same with topic, intent, difficulty and generator) and ``summary``.
        """
        request = from_plain(service_pb2.GenerateSyntheticTrainingDataRequest, fields)
        examples: list[synthetic_pb2.SyntheticExample] = []
        summary: dict[str, Any] = {}
        chunks = self._client.generate_synthetic_training_data(
            timeout=timeout, **_fields_of(request)
        )
        for chunk in chunks:
            examples.extend(chunk.examples)
            if chunk.HasField("summary"):
                summary = to_plain(chunk.summary)
        return _success(
            {
                "training_data": [to_plain(example.example) for example in examples],
                "examples": [to_plain(example) for example in examples],
                "summary": summary,
            }
        )

    def analyze_and_optimize(self, **fields: Any) -> dict[str, Any]:
        """Evaluate an agent version; ``data`` is AnalyzeAndOptimizeResponse as a plain dict."""
        request = from_plain(service_pb2.AnalyzeAndOptimizeRequest, fields)
        return _success(to_plain(self._client.analyze_and_optimize(**_fields_of(request))))

    def adapt_agent_behavior(self, **fields: Any) -> dict[str, Any]:
        """Adapt behaviour from production metrics; ``data`` is AdaptAgentBehaviorResponse."""
        request = from_plain(service_pb2.AdaptAgentBehaviorRequest, fields)
        return _success(to_plain(self._client.adapt_agent_behavior(**_fields_of(request))))
