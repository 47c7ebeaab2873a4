"""A typed Python client over the generated stubs.

Every method takes the request's fields as keyword arguments, returns the contract's messages, and
raises :class:`AgentTrainingError` (the seed's error object) on failure. Streams are iterators.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agent_training.v1 import (
    agents_pb2,
    rollouts_pb2,
    service_pb2,
    service_pb2_grpc,
    synthetic_pb2,
    training_pb2,
)
from agent_training_client.credentials import BearerTokenInterceptor, channel_credentials
from agent_training_client.errors import AgentTrainingError
from agent_training_client.failover import (
    REATTACH_SECONDS,
    SERVICE_CONFIG,
    LostCallRetry,
    channel_target,
    new_request_id,
    resumable_events,
    with_request_id,
)
from agent_training_client.functions import SeedFunctions
from agent_training_client.settings import DEFAULT_TARGET, ClientSettings

__all__ = ["DEFAULT_TARGET", "KEEPALIVE_OPTIONS", "AgentTrainingClient"]
KEEPALIVE_OPTIONS: list[tuple[str, int]] = [
    # Ping every 30 s (the server accepts pings every 10 s or slower), also while only a quiet
    # training stream is open, and give up on a connection that does not answer in 10 s.
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]
"""Channel options matching the server's keepalive settings (docs/limits.md)."""
R = TypeVar("R")


class AgentTrainingClient:
    """Client of agent_training.v1.AgentTrainingService.

    What is not passed comes from ``settings``, by default :meth:`ClientSettings.from_env`: the
    AGENT_TRAINING_TARGET, AGENT_TRAINING_TOKEN, AGENT_TRAINING_TLS, AGENT_TRAINING_CA_CERT,
    AGENT_TRAINING_CLIENT_CERT and AGENT_TRAINING_CLIENT_KEY variables the CLI reads too. An
    explicit argument always wins over them.

    Args:
        target: ``host:port`` of the service; default: AGENT_TRAINING_TARGET, else
            ``127.0.0.1:50051``.
        timeout: Deadline in seconds of unary calls (streams have none unless given per call).
        channel: An existing channel to use instead of opening one (its owner closes it);
            ``target`` and ``credentials`` are then unused.
        max_message_bytes: Largest message sent or received.
        token: Bearer token sent with every call; default: AGENT_TRAINING_TOKEN. ``""``: none.
        credentials: TLS channel credentials (see :func:`tls_credentials`); default: TLS when
            AGENT_TRAINING_TLS, AGENT_TRAINING_CA_CERT or AGENT_TRAINING_CLIENT_CERT asks for
            it, else plaintext.
        settings: Where the defaults of ``target``, ``token`` and ``credentials`` come from
            instead of the environment; ``ClientSettings()`` ignores the environment (plaintext
            to ``127.0.0.1:50051``, no token).
        reattach_seconds: How long a training stream cut by its server's death or restart
            tries to re-attach (failover.py); 0: the cut is raised at once.
    """

    def __init__(
        self,
        target: str | None = None,
        *,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
        max_message_bytes: int = 64 * 1024 * 1024,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        settings: ClientSettings | None = None,
        reattach_seconds: float = REATTACH_SECONDS,
    ) -> None:
        settings = ClientSettings.from_env() if settings is None else settings
        self._owns_channel = channel is None
        if channel is None:
            if credentials is None:
                credentials = channel_credentials(settings)
            channel = _open_channel(target or settings.target, credentials, max_message_bytes)
        self._raw_channel = channel
        self._channel = grpc.intercept_channel(self._raw_channel, LostCallRetry())
        token = settings.token if token is None else token
        if token:
            self._channel = grpc.intercept_channel(self._channel, BearerTokenInterceptor(token))
        self._stub = service_pb2_grpc.AgentTrainingServiceStub(self._channel)
        self._timeout = timeout
        self._reattach_seconds = reattach_seconds
        self.functions = SeedFunctions(self)
        """The seed API's functions (``train_agent``...), returning the seed's plain dicts."""

    def close(self) -> None:
        """Close the channel if this client opened it."""
        if self._owns_channel:
            self._raw_channel.close()

    def __enter__(self) -> AgentTrainingClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _unary(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        try:
            return method(request, timeout=timeout if timeout is not None else self._timeout)
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None

    def _events(self, call: Any) -> Iterator[training_pb2.TrainingEvent]:
        try:
            for response in call:
                yield response.event
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None
        finally:
            call.cancel()  # closing early detaches the subscriber; the job goes on

    # The four seed operations --------------------------------------------------------------

    def train_agent(
        self, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[training_pb2.TrainingEvent]:
        """Start a training job and yield its events: accepted, progress..., finished.

        A stream cut by UNAVAILABLE (the server restarting, a replica dying) re-attaches by
        itself, missing and repeating nothing (failover.py).
        """
        request = service_pb2.TrainAgentRequest(**with_request_id(fields))
        call = self._stub.TrainAgent(request, timeout=timeout)
        return resumable_events(self._events(call), self._watch(timeout), self._reattach_seconds)

    def generate_synthetic_training_data(
        self, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[service_pb2.GenerateSyntheticTrainingDataResponse]:
        """Yield chunks of generated examples."""
        request = service_pb2.GenerateSyntheticTrainingDataRequest(**with_request_id(fields))
        call = self._stub.GenerateSyntheticTrainingData(request, timeout=timeout)
        try:
            yield from call
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None
        finally:
            call.cancel()  # stopping early (closing the iterator) ends the server's generation

    def generate_synthetic_examples(
        self, **fields: Any
    ) -> service_pb2.GenerateSyntheticExamplesResponse:
        """Generate up to the server's unary limit of examples in one response."""
        request = service_pb2.GenerateSyntheticExamplesRequest(**with_request_id(fields))
        return self._unary(self._stub.GenerateSyntheticExamples, request)

    def analyze_and_optimize(self, **fields: Any) -> service_pb2.AnalyzeAndOptimizeResponse:
        """Evaluate an agent version and get measured suggestions."""
        request = service_pb2.AnalyzeAndOptimizeRequest(**with_request_id(fields))
        return self._unary(self._stub.AnalyzeAndOptimize, request)

    def analyze_and_optimize_stream(
        self, *, timeout: float | None = None, **fields: Any
    ) -> Iterator[service_pb2.AnalyzeAndOptimizeStreamResponse]:
        """Start an analysis job: yields `accepted` (its analysis_id), progress, then the result.

        Closing the iterator early leaves the analysis running (see watch_analysis_job).
        """
        request = service_pb2.AnalyzeAndOptimizeStreamRequest(
            request=service_pb2.AnalyzeAndOptimizeRequest(**with_request_id(fields))
        )
        return self._stream(self._stub.AnalyzeAndOptimizeStream(request, timeout=timeout))

    def get_analysis_job(self, analysis_id: str) -> service_pb2.AnalysisJob:
        """Return an analysis job: status, latest progress, and its result once it succeeded."""
        request = service_pb2.GetAnalysisJobRequest(analysis_id=analysis_id)
        return self._unary(self._stub.GetAnalysisJob, request).job

    def watch_analysis_job(
        self, analysis_id: str, *, timeout: float | None = None
    ) -> Iterator[service_pb2.WatchAnalysisJobResponse]:
        """Re-attach to an analysis job: latest progress, live progress, then the result."""
        request = service_pb2.WatchAnalysisJobRequest(analysis_id=analysis_id)
        return self._stream(self._stub.WatchAnalysisJob(request, timeout=timeout))

    def _stream(self, call: Any) -> Iterator[Any]:
        try:
            yield from call
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None
        finally:
            call.cancel()

    def adapt_agent_behavior(self, **fields: Any) -> service_pb2.AdaptAgentBehaviorResponse:
        """Adapt an agent's behaviour from production metrics."""
        request = service_pb2.AdaptAgentBehaviorRequest(**with_request_id(fields))
        return self._unary(self._stub.AdaptAgentBehavior, request)

    # Agents ---------------------------------------------------------------------------------

    def create_agent(self, **fields: Any) -> agents_pb2.Agent:
        """Create an agent and return it."""
        request = service_pb2.CreateAgentRequest(**with_request_id(fields))
        return self._unary(self._stub.CreateAgent, request).agent

    def get_agent(self, agent_id: str) -> agents_pb2.Agent:
        """Return an agent."""
        request = service_pb2.GetAgentRequest(agent_id=agent_id)
        return self._unary(self._stub.GetAgent, request).agent

    def list_agents(
        self, page_size: int = 0, page_token: str = ""
    ) -> service_pb2.ListAgentsResponse:
        """Return one page of agents."""
        request = service_pb2.ListAgentsRequest(page_size=page_size, page_token=page_token)
        return self._unary(self._stub.ListAgents, request)

    def iter_agents(self, page_size: int = 0) -> Iterator[agents_pb2.Agent]:
        """Yield every agent, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_agents(page_size, token)
            yield from page.agents
            token = page.next_page_token
            if not token:
                return

    def delete_agent(self, agent_id: str, *, force: bool = False) -> None:
        """Delete an agent with its versions and jobs."""
        request = service_pb2.DeleteAgentRequest(agent_id=agent_id, force=force)
        self._unary(self._stub.DeleteAgent, request)

    def list_agent_versions(
        self, agent_id: str, page_size: int = 0, page_token: str = ""
    ) -> service_pb2.ListAgentVersionsResponse:
        """Return one page of an agent's versions, newest first."""
        request = service_pb2.ListAgentVersionsRequest(
            agent_id=agent_id, page_size=page_size, page_token=page_token
        )
        return self._unary(self._stub.ListAgentVersions, request)

    def activate_agent_version(self, agent_id: str, version_id: str) -> agents_pb2.Agent:
        """Make a version active (roll back or forward) and return the agent."""
        request = service_pb2.ActivateAgentVersionRequest(agent_id=agent_id, version_id=version_id)
        return self._unary(self._stub.ActivateAgentVersion, request).agent

    def export_agent_version(
        self,
        agent_id: str,
        version_id: str = "",
        path: str | os.PathLike[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> tuple[service_pb2.ExportHeader, Path]:
        """Download a version's export bundle (default: the active version's) to ``path``.

        ``path`` defaults to ``<agent_id>-<version_id>.tar`` in the current folder. The bytes
        go to ``<path>.partial`` first and are renamed to ``path`` only once their size and
        SHA-256 match the stream's trailer; a stream that fails or does not match leaves no
        file. Returns the stream's header (the version, the bundle's files, whether it holds
        an ONNX model) and the path written.

        Raises:
            AgentTrainingError: the call failed, or the bytes received do not match the trailer
                (EXPORT_INCOMPLETE).
            OSError: ``path`` cannot be written.
        """
        request = service_pb2.ExportAgentVersionRequest(agent_id=agent_id, version_id=version_id)
        call = self._stub.ExportAgentVersion(request, timeout=timeout)
        header: service_pb2.ExportHeader | None = None
        trailer: service_pb2.ExportTrailer | None = None
        target = partial = Path()
        hasher = hashlib.sha256()
        try:
            for response in call:
                part = response.WhichOneof("part")
                if part == "header":
                    header = response.header
                    target = Path(path or f"{agent_id}-{header.version.version_id}.tar")
                    partial = target.with_name(f"{target.name}.partial")
                    partial.write_bytes(b"")
                elif part == "chunk" and header is not None:
                    with partial.open("ab") as handle:  # chunks are 1 MiB: reopening is cheap
                        handle.write(response.chunk)
                    hasher.update(response.chunk)
                elif part == "trailer":
                    trailer = response.trailer
            received = partial.stat().st_size if header is not None else 0
            if header is None or trailer is None:
                problem = "the stream ended without its header or trailer"
            elif (received, hasher.hexdigest()) != (trailer.size_bytes, trailer.sha256):
                problem = (
                    f"received {received} bytes with SHA-256 {hasher.hexdigest()}; the server"
                    f" sent {trailer.size_bytes} bytes with SHA-256 {trailer.sha256}"
                )
            else:
                return header, partial.replace(target)
            raise AgentTrainingError(
                code="EXPORT_INCOMPLETE",
                message=f"the bundle was not received whole: {problem}",
                hint="Export again; the partial file was removed.",
                retryable=True,
            )
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None
        finally:
            call.cancel()
            if header is not None:
                partial.unlink(missing_ok=True)  # gone already when the bundle was whole

    # Rollouts -------------------------------------------------------------------------------

    def start_rollout(self, **fields: Any) -> rollouts_pb2.Rollout:
        """Start a rollout of a version (canary or shadow) and return it."""
        request = service_pb2.StartRolloutRequest(**with_request_id(fields))
        return self._unary(self._stub.StartRollout, request).rollout

    def get_rollout(self, agent_id: str, rollout_id: str = "") -> rollouts_pb2.Rollout:
        """The agent's running (else latest) rollout, or a named one, with its evidence."""
        request = service_pb2.GetRolloutRequest(agent_id=agent_id, rollout_id=rollout_id)
        return self._unary(self._stub.GetRollout, request).rollout

    def update_rollout(self, **fields: Any) -> rollouts_pb2.Rollout:
        """Change the running rollout's mode, traffic share or policy and return it."""
        request = service_pb2.UpdateRolloutRequest(**fields)
        return self._unary(self._stub.UpdateRollout, request).rollout

    def promote_rollout(
        self, agent_id: str, reason: str = ""
    ) -> service_pb2.PromoteRolloutResponse:
        """Make the rollout's candidate the active version; the rollout and the agent."""
        request = service_pb2.PromoteRolloutRequest(agent_id=agent_id, reason=reason)
        return self._unary(self._stub.PromoteRollout, request)

    def abort_rollout(self, agent_id: str, reason: str = "") -> rollouts_pb2.Rollout:
        """End the rollout, keeping the active version; return the rollout."""
        request = service_pb2.AbortRolloutRequest(agent_id=agent_id, reason=reason)
        return self._unary(self._stub.AbortRollout, request).rollout

    # Jobs -----------------------------------------------------------------------------------

    def get_training_job(self, training_id: str) -> training_pb2.TrainingJob:
        """Return a training job."""
        request = service_pb2.GetTrainingJobRequest(training_id=training_id)
        return self._unary(self._stub.GetTrainingJob, request).job

    def list_training_jobs(self, **fields: Any) -> service_pb2.ListTrainingJobsResponse:
        """Return one page of jobs (filters: agent_id, status)."""
        request = service_pb2.ListTrainingJobsRequest(**fields)
        return self._unary(self._stub.ListTrainingJobs, request)

    def cancel_training_job(self, training_id: str) -> training_pb2.TrainingJob:
        """Cancel a queued or running job and return it."""
        request = service_pb2.CancelTrainingJobRequest(training_id=training_id)
        return self._unary(self._stub.CancelTrainingJob, request).job

    def pause_training_job(self, training_id: str) -> training_pb2.TrainingJob:
        """Pause a queued or running job (it checkpoints and frees its worker); return it."""
        request = service_pb2.PauseTrainingJobRequest(training_id=training_id)
        return self._unary(self._stub.PauseTrainingJob, request).job

    def resume_training_job(self, training_id: str) -> training_pb2.TrainingJob:
        """Queue a paused job again; return it."""
        request = service_pb2.ResumeTrainingJobRequest(training_id=training_id)
        return self._unary(self._stub.ResumeTrainingJob, request).job

    def list_training_checkpoints(
        self, training_id: str, **fields: Any
    ) -> service_pb2.ListTrainingCheckpointsResponse:
        """Return one page of the checkpoints a job kept (page_size, page_token)."""
        request = service_pb2.ListTrainingCheckpointsRequest(training_id=training_id, **fields)
        return self._unary(self._stub.ListTrainingCheckpoints, request)

    def iter_training_checkpoints(
        self, training_id: str, page_size: int = 0
    ) -> Iterator[training_pb2.TrainingCheckpoint]:
        """Yield every checkpoint a job kept, oldest first, fetching pages as needed."""
        token = ""
        while True:
            page = self.list_training_checkpoints(
                training_id, page_size=page_size, page_token=token
            )
            yield from page.checkpoints
            token = page.next_page_token
            if not token:
                return

    def create_version_from_checkpoint(
        self, training_id: str, checkpoint_id: str, **fields: Any
    ) -> agents_pb2.AgentVersion:
        """Make a version from one of a job's kept checkpoints (activate, request_id)."""
        request = service_pb2.CreateVersionFromCheckpointRequest(
            training_id=training_id, checkpoint_id=checkpoint_id, **fields
        )
        return self._unary(self._stub.CreateVersionFromCheckpoint, request).version

    def watch_training_job(
        self, training_id: str, from_sequence: int = 0, *, timeout: float | None = None
    ) -> Iterator[training_pb2.TrainingEvent]:
        """Yield a job's events from ``from_sequence`` to its end (re-attaching when cut)."""
        watch = self._watch(timeout)
        return resumable_events(watch(training_id, from_sequence), watch, self._reattach_seconds)

    def _watch(
        self, timeout: float | None
    ) -> Callable[[str, int], Iterator[training_pb2.TrainingEvent]]:
        """Opens one WatchTrainingJob stream (what a cut stream re-attaches with)."""

        def watch(training_id: str, from_sequence: int) -> Iterator[training_pb2.TrainingEvent]:
            request = service_pb2.WatchTrainingJobRequest(
                training_id=training_id, from_sequence=from_sequence
            )
            return self._events(self._stub.WatchTrainingJob(request, timeout=timeout))

        return watch

    # Using agents ---------------------------------------------------------------------------

    def invoke_agent(self, **fields: Any) -> service_pb2.InvokeAgentResponse:
        """Answer one ``input`` or a batch of ``inputs``."""
        request = service_pb2.InvokeAgentRequest(**fields)
        return self._unary(self._stub.InvokeAgent, request)

    def record_feedback(self, **fields: Any) -> service_pb2.RecordFeedbackResponse:
        """Record how an answer was received."""
        request = service_pb2.RecordFeedbackRequest(**fields)
        return self._unary(self._stub.RecordFeedback, request)

    # Standard services ----------------------------------------------------------------------

    # Datasets -------------------------------------------------------------------------------

    def upload_dataset(
        self,
        name: str,
        examples: Iterable[training_pb2.TrainingExample],
        *,
        description: str = "",
        request_id: str = "",
        chunk_size: int = 5_000,
        timeout: float | None = None,
    ) -> synthetic_pb2.Dataset:
        """Store `examples` as a dataset, sent `chunk_size` at a time (any size fits)."""
        upload_id = request_id or new_request_id()

        def messages() -> Iterator[service_pb2.UploadDatasetRequest]:
            first = service_pb2.UploadDatasetRequest(
                name=name, description=description, request_id=upload_id
            )
            chunk: list[training_pb2.TrainingExample] = []
            for example in examples:
                chunk.append(example)
                if len(chunk) == chunk_size:
                    first.examples.extend(chunk)
                    yield first
                    first, chunk = service_pb2.UploadDatasetRequest(), []
            first.examples.extend(chunk)
            yield first

        try:
            return self._stub.UploadDataset(messages(), timeout=timeout).dataset
        except grpc.RpcError as error:
            raise AgentTrainingError.from_rpc_error(error) from None

    def get_dataset(self, dataset_id: str) -> synthetic_pb2.Dataset:
        """Return a dataset's description."""
        request = service_pb2.GetDatasetRequest(dataset_id=dataset_id)
        return self._unary(self._stub.GetDataset, request).dataset

    def list_datasets(
        self, page_size: int = 0, page_token: str = ""
    ) -> service_pb2.ListDatasetsResponse:
        """Return one page of datasets, ordered by name."""
        request = service_pb2.ListDatasetsRequest(page_size=page_size, page_token=page_token)
        return self._unary(self._stub.ListDatasets, request)

    def list_dataset_examples(
        self, dataset_id: str, page_size: int = 0, page_token: str = ""
    ) -> service_pb2.ListDatasetExamplesResponse:
        """Return one page of a dataset's examples, in stored order."""
        request = service_pb2.ListDatasetExamplesRequest(
            dataset_id=dataset_id, page_size=page_size, page_token=page_token
        )
        return self._unary(self._stub.ListDatasetExamples, request)

    def iter_dataset_examples(
        self, dataset_id: str, page_size: int = 0
    ) -> Iterator[synthetic_pb2.SyntheticExample]:
        """Yield every example of a dataset, reading it page by page."""
        token = ""
        while True:
            page = self.list_dataset_examples(dataset_id, page_size, token)
            yield from page.examples
            token = page.next_page_token
            if not token:
                return

    def delete_dataset(self, dataset_id: str) -> None:
        """Delete a dataset."""
        request = service_pb2.DeleteDatasetRequest(dataset_id=dataset_id)
        self._unary(self._stub.DeleteDataset, request)

    def health(self, service: str = "") -> str:
        """Return the standard health status name (e.g. ``SERVING``) of the server or a service."""
        stub = health_pb2_grpc.HealthStub(self._channel)
        check = stub.Check  # type: ignore[attr-defined]  # the grpcio-health stubs omit the stub's calls
        response = self._unary(check, health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def _open_channel(
    target: str, credentials: grpc.ChannelCredentials | None, max_message_bytes: int
) -> grpc.Channel:
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        *KEEPALIVE_OPTIONS,
        # Round robin over the target's addresses, UNAVAILABLE retried for safe calls.
        ("grpc.service_config", SERVICE_CONFIG),
        ("grpc.enable_retries", 1),
    ]
    if credentials is None:
        return grpc.insecure_channel(channel_target(target), options=options)
    return grpc.secure_channel(channel_target(target), credentials, options=options)
