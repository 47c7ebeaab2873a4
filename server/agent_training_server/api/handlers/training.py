"""Handlers of the training RPCs: TrainAgent, and the jobs' reads, watches and checkpoints.

Jobs are read, listed, cancelled, paused, resumed and watched; their kept checkpoints listed and
made into versions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from opentelemetry import trace

from agent_training.v1 import service_pb2, training_pb2
from agent_training_server import job_checkpoints
from agent_training_server.api import convert, rollout_messages, validation
from agent_training_server.api.validation import Checker
from agent_training_server.config import ServerConfig
from agent_training_server.job_checkpoints import KeptCheckpoint
from agent_training_server.services.checkpoints import CheckpointService
from agent_training_server.services.training import TrainingOrder, TrainingService
from agent_training_server.telemetry import child_span


class TrainingHandlers:
    """TrainAgent, the job RPCs (Get, List, Cancel, Watch, Pause, Resume) and the checkpoints'."""

    def __init__(
        self,
        config: ServerConfig,
        training: TrainingService,
        tracer: trace.Tracer,
        checkpoints: CheckpointService,
    ) -> None:
        self._config = config
        self._training = training
        self._tracer = tracer
        self._checkpoints = checkpoints

    async def train(
        self, request: service_pb2.TrainAgentRequest
    ) -> AsyncIterator[service_pb2.TrainAgentResponse]:
        """TrainAgent: start a job and stream its events; closing the stream leaves it running."""
        with child_span(self._tracer, "validate", **{"rpc.method": "TrainAgent"}):
            validation.check_train_agent(request, self._config)
            rollout = None
            if request.HasField("rollout"):
                checker = Checker()
                rollout = rollout_messages.check_rollout(checker, "rollout.", request.rollout)
                checker.raise_if_any()
        training_type = convert.TRAINING_TYPE_NAMES[request.training_type]
        order = TrainingOrder(
            agent_id=request.agent_id,
            training_type=training_type,
            settings=convert.settings_from_proto(
                request.config, training_type, self._config.max_job_seconds
            ),
            examples=convert.examples_from_proto(request.training_data),
            dataset_id=request.dataset_id,
            request_id=request.request_id,
            request_bytes=request.SerializeToString(deterministic=True),
            rollout=rollout,
        )
        async for event in self._training.train(order):
            yield service_pb2.TrainAgentResponse(event=convert.event_to_proto(event))

    async def get_job(
        self, request: service_pb2.GetTrainingJobRequest
    ) -> service_pb2.GetTrainingJobResponse:
        """GetTrainingJob."""
        validation.check_training_id(request.training_id)
        job = await self._training.job(request.training_id)
        return service_pb2.GetTrainingJobResponse(job=convert.job_to_proto(job))

    async def list_jobs(
        self, request: service_pb2.ListTrainingJobsRequest
    ) -> service_pb2.ListTrainingJobsResponse:
        """ListTrainingJobs."""
        checker = Checker()
        checker.resource_id("agent_id", request.agent_id, required=False)
        checker.enum("status", request.status, training_pb2.TrainingStatus)
        position = checker.page(request.page_size, request.page_token, self._config)
        before = position.get("before", 0)
        if not isinstance(before, int) or before < 0:
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        statuses: tuple[str, ...] = ()
        if request.status:
            name = training_pb2.TrainingStatus.Name(request.status)
            statuses = (name.removeprefix("TRAINING_STATUS_"),)
        page = await self._training.jobs(
            request.agent_id,
            statuses,
            validation.page_size_or_default(request.page_size),
            before,
        )
        return service_pb2.ListTrainingJobsResponse(
            jobs=[convert.job_to_proto(job) for job in page.items],
            next_page_token=validation.next_page_token(
                {"before": int(page.next_page_token or 0)}, page.next_page_token
            ),
        )

    async def cancel_job(
        self, request: service_pb2.CancelTrainingJobRequest
    ) -> service_pb2.CancelTrainingJobResponse:
        """CancelTrainingJob."""
        validation.check_training_id(request.training_id)
        job = await self._training.cancel(request.training_id)
        return service_pb2.CancelTrainingJobResponse(job=convert.job_to_proto(job))

    async def watch_job(
        self, request: service_pb2.WatchTrainingJobRequest
    ) -> AsyncIterator[service_pb2.WatchTrainingJobResponse]:
        """WatchTrainingJob: a job's events from from_sequence to its end."""
        checker = Checker()
        checker.resource_id("training_id", request.training_id)
        if request.from_sequence < 0:
            checker.add("from_sequence", "must be 0 or more")
        checker.raise_if_any()
        async for event in self._training.watch(request.training_id, request.from_sequence):
            yield service_pb2.WatchTrainingJobResponse(event=convert.event_to_proto(event))

    async def pause_job(
        self, request: service_pb2.PauseTrainingJobRequest
    ) -> service_pb2.PauseTrainingJobResponse:
        """PauseTrainingJob."""
        validation.check_training_id(request.training_id)
        job = await self._training.pause(request.training_id)
        return service_pb2.PauseTrainingJobResponse(job=convert.job_to_proto(job))

    async def resume_job(
        self, request: service_pb2.ResumeTrainingJobRequest
    ) -> service_pb2.ResumeTrainingJobResponse:
        """ResumeTrainingJob."""
        validation.check_training_id(request.training_id)
        job = await self._training.resume(request.training_id)
        return service_pb2.ResumeTrainingJobResponse(job=convert.job_to_proto(job))

    async def list_checkpoints(
        self, request: service_pb2.ListTrainingCheckpointsRequest
    ) -> service_pb2.ListTrainingCheckpointsResponse:
        """ListTrainingCheckpoints: oldest first."""
        checker = Checker()
        checker.resource_id("training_id", request.training_id)
        position = checker.page(request.page_size, request.page_token, self._config)
        after = position.get("after", 0)
        if not isinstance(after, int) or after < 0:
            checker.add("page_token", "is not a token returned by this list call")
        checker.raise_if_any()
        page, best = await self._checkpoints.list(
            request.training_id, validation.page_size_or_default(request.page_size), after
        )
        return service_pb2.ListTrainingCheckpointsResponse(
            checkpoints=[_checkpoint_to_proto(request.training_id, c, best) for c in page.items],
            next_page_token=validation.next_page_token(
                {"after": int(page.next_page_token or 0)}, page.next_page_token
            ),
        )

    async def version_from_checkpoint(
        self, request: service_pb2.CreateVersionFromCheckpointRequest
    ) -> service_pb2.CreateVersionFromCheckpointResponse:
        """CreateVersionFromCheckpoint."""
        checker = Checker()
        checker.resource_id("training_id", request.training_id)
        checker.request_id(request.request_id)
        if job_checkpoints.epoch_of(request.checkpoint_id) is None:
            checker.add(
                "checkpoint_id",
                f"must name a kept checkpoint such as 'epoch-3', got {request.checkpoint_id!r}",
            )
        checker.raise_if_any()
        version = await self._checkpoints.create_version(
            request.training_id,
            request.checkpoint_id,
            request.activate,
            request.request_id,
            request.SerializeToString(deterministic=True),
        )
        active = version.version_id if request.activate else ""
        return service_pb2.CreateVersionFromCheckpointResponse(
            version=convert.version_to_proto(version, active)
        )


def _checkpoint_to_proto(
    training_id: str, checkpoint: KeptCheckpoint, best_epoch: int
) -> training_pb2.TrainingCheckpoint:
    message = training_pb2.TrainingCheckpoint(
        checkpoint_id=checkpoint.checkpoint_id,
        training_id=training_id,
        epoch=checkpoint.epoch,
        step=checkpoint.step,
        best=checkpoint.epoch == best_epoch,
        create_time=convert.timestamp(checkpoint.time),
        size_bytes=checkpoint.size_bytes,
    )
    for name, value in checkpoint.figures.items():
        setattr(message, name, value)
    return message
