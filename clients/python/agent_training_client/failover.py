"""Failing over between replicas: several addresses, retried UNAVAILABLE, re-attached streams.

- **Addresses.** A target is one ``host:port``, a DNS name whose records name several servers
  (``dns:///agents.internal:50051``), or a comma-separated list of IP ``address:port``s; calls
  are spread over every address that answers (gRPC's round_robin), and an address that stops
  answering is skipped until it is back.
- **Retries.** UNAVAILABLE means the call did not take effect (the server is shutting down, a
  replica died, the database did not answer), so the calls that are safe to send twice are
  retried by the channel itself, with exponential backoff, on another address when there is one
  (AIP-194): reads, InvokeAgent, RecordFeedback (one feedback per answer) and the creates, which
  the client always sends with a ``request_id`` (one is made when the caller gives none), so a
  retried create returns what the first attempt made. DeleteAgent, DeleteDataset,
  CancelTrainingJob and ActivateAgentVersion are not retried: their UNAVAILABLE is the caller's to
  judge. A safe unary call ended CANCELLED by a server that did not send our error object is
  retried too (`LostCallRetry`): gRPC's core ends so the calls a server had received but not yet
  started when it began to shut down (grpc/grpc#41785), though they never took effect.
- **Streams.** A training stream (TrainAgent, WatchTrainingJob) cut by UNAVAILABLE after its first
  event re-attaches by itself with ``WatchTrainingJob(training_id, last sequence + 1)``, so the
  caller sees every event once, in order, across the death or restart of the server it was on.
"""

from __future__ import annotations

import ipaddress
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from agent_training.v1 import training_pb2
from agent_training_client.errors import AgentTrainingError

SERVICE = "agent_training.v1.AgentTrainingService"

RETRIED_METHODS = (
    "TrainAgent",
    "GenerateSyntheticTrainingData",
    "GenerateSyntheticExamples",
    "AnalyzeAndOptimize",
    "AnalyzeAndOptimizeStream",
    "GetAnalysisJob",
    "WatchAnalysisJob",
    "AdaptAgentBehavior",
    "CreateAgent",
    "GetAgent",
    "ListAgents",
    "ListAgentVersions",
    "GetTrainingJob",
    "ListTrainingJobs",
    "WatchTrainingJob",
    "InvokeAgent",
    "RecordFeedback",
    "UploadDataset",
    "GetDataset",
    "ListDatasets",
    "ListDatasetExamples",
)
"""Methods safe to send again after UNAVAILABLE (the creates with their request_id)."""

RETRY_POLICY = {
    "maxAttempts": 4,
    "initialBackoff": "0.1s",
    "maxBackoff": "1s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}
"""Up to 4 attempts, pausing at most 0.1, 0.2 and 0.4 s (gRPC draws each pause at random below
those): enough to reach another replica, short enough that a server nobody can reach is still
answered UNAVAILABLE within a short deadline. A stream is retried only before its first message;
after it, re-attaching is the client's (`resumable_events`)."""

SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [
            {
                "name": [{"service": SERVICE, "method": method} for method in RETRIED_METHODS],
                "retryPolicy": RETRY_POLICY,
            },
            {"name": [{"service": "grpc.health.v1.Health"}], "retryPolicy": RETRY_POLICY},
        ],
    }
)
"""The channel's service config: round robin over the addresses, and the retries above."""

LOST_CALL_ATTEMPTS = 4
"""Attempts of a safe unary call the server's shutdown ended CANCELLED before it started."""


class LostCallRetry(grpc.UnaryUnaryClientInterceptor):
    """Sends a safe unary call again when a server's shutdown ended it CANCELLED unstarted.

    Our service answers every error with its error object in the status details; a CANCELLED
    without them that the caller did not ask for came from gRPC itself: the connection lost under
    the call, or a server shutting down with the call not yet handed to the service (so it took
    no effect). Only the methods of RETRIED_METHODS are sent again, on the next address.
    """

    def intercept_unary_unary(
        self,
        continuation: Callable[[Any, Any], Any],
        client_call_details: grpc.ClientCallDetails,
        request: Any,
    ) -> Any:
        """Run the call; again (pausing as the channel's retries) while it is lost as above."""
        method = client_call_details.method
        name = method.decode() if isinstance(method, bytes) else str(method)
        if name.rsplit("/", 1)[-1] not in RETRIED_METHODS or not name.startswith(f"/{SERVICE}/"):
            return continuation(client_call_details, request)
        for attempt in range(1, LOST_CALL_ATTEMPTS + 1):
            outcome = continuation(client_call_details, request)
            if attempt == LOST_CALL_ATTEMPTS or not _lost_unstarted(outcome):
                return outcome
            time.sleep(random.uniform(0.0, 0.1 * 2 ** (attempt - 1)))
        raise AssertionError("unreachable")


def _lost_unstarted(outcome: Any) -> bool:
    """Whether a finished call ended CANCELLED without the service's error details."""
    if outcome.code() != grpc.StatusCode.CANCELLED:
        return False
    trailers = outcome.trailing_metadata() or ()
    return not any(key == "grpc-status-details-bin" for key, _value in trailers)


REATTACH_SECONDS = 120.0
"""How long a cut training stream keeps trying to re-attach before it raises UNAVAILABLE."""


def channel_target(target: str) -> str:
    """The gRPC target for ``target``: as it is, or an IP address list as ``ipv4:``/``ipv6:``.

    Raises:
        ValueError: a comma-separated list with a host name in it (gRPC resolves lists of IP
            addresses only; a DNS name with several records does the same).
    """
    if "," not in target:
        return target
    addresses = [part.strip() for part in target.split(",") if part.strip()]
    families = {_family(address, target) for address in addresses}
    if len(families) != 1:
        raise ValueError(f"target {target!r} mixes IPv4 and IPv6 addresses; use one family")
    return f"{families.pop()}:{','.join(addresses)}"


def _family(address: str, target: str) -> str:
    host = address.rsplit(":", 1)[0] if address.count(":") == 1 or address.startswith("[") else ""
    try:
        parsed = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"target {target!r}: {address!r} is not an IP address:port; a list takes IP"
            " addresses only (for host names, use one DNS name with several records:"
            " dns:///name:port)"
        ) from None
    return "ipv4" if parsed.version == 4 else "ipv6"


def new_request_id() -> str:
    """A fresh request_id: a retry with it replays the first attempt, not repeats it."""
    return uuid.uuid4().hex


def with_request_id(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with a fresh ``request_id`` when it has none."""
    if fields.get("request_id"):
        return fields
    return {**fields, "request_id": new_request_id()}


def resumable_events(
    events: Iterator[training_pb2.TrainingEvent],
    watch: Callable[[str, int], Iterator[training_pb2.TrainingEvent]],
    reattach_seconds: float = REATTACH_SECONDS,
) -> Iterator[training_pb2.TrainingEvent]:
    """Yield ``events``; when UNAVAILABLE cuts them after the first, go on from ``watch``.

    ``watch(training_id, from_sequence)`` opens a WatchTrainingJob stream. Each event is yielded
    once, in sequence order, until the finished one. Re-attaching is tried with growing pauses
    (0.5 s doubling to 5 s) for ``reattach_seconds`` after the cut; then the error of the cut is
    raised (at once for ``reattach_seconds`` 0).
    """
    training_id, last = "", 0
    current = events
    while True:
        try:
            for event in current:
                if event.sequence <= last:
                    continue  # already yielded before the cut
                training_id, last = event.training_id, event.sequence
                yield event
                if event.HasField("finished"):
                    return
            return
        except AgentTrainingError as error:
            if not _is_cut(error) or not training_id or reattach_seconds <= 0:
                raise
            current = _reattached(training_id, last, watch, error, reattach_seconds)


def _is_cut(error: AgentTrainingError) -> bool:
    """Whether ``error`` cut the stream: UNAVAILABLE, or a CANCELLED the server did not send.

    The connection closed under the call: the service's own errors carry a trace id, and a
    caller stops a stream by closing it, which raises nothing here.
    """
    if error.status_code == grpc.StatusCode.UNAVAILABLE:
        return True
    return error.status_code == grpc.StatusCode.CANCELLED and not error.trace_id


def _reattached(
    training_id: str,
    last: int,
    watch: Callable[[str, int], Iterator[training_pb2.TrainingEvent]],
    cut: AgentTrainingError,
    reattach_seconds: float,
) -> Iterator[training_pb2.TrainingEvent]:
    """A WatchTrainingJob stream from ``last + 1`` once one opens (its first event read)."""
    deadline = time.monotonic() + reattach_seconds
    pause = 0.5
    while True:
        stream = watch(training_id, last + 1)
        try:
            first = next(stream)
        except StopIteration:
            return iter(())
        except AgentTrainingError as error:
            if not _is_cut(error):
                raise
            if time.monotonic() + pause > deadline:
                raise cut from error
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
            continue
        return _chain(first, stream)


def _chain(
    first: training_pb2.TrainingEvent, rest: Iterator[training_pb2.TrainingEvent]
) -> Iterator[training_pb2.TrainingEvent]:
    yield first
    yield from rest
