"""Builds the gRPC server: our service, health checking, reflection and interceptors."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider

from agent_training.v1 import service_pb2, service_pb2_grpc
from agent_training_server import __version__, devices
from agent_training_server.api.call_guard import CallGuardInterceptor
from agent_training_server.api.error_translation import ErrorTranslationInterceptor
from agent_training_server.api.handlers.adaptation import AdaptationHandlers
from agent_training_server.api.handlers.agents import AgentHandlers
from agent_training_server.api.handlers.analysis import AnalysisHandlers
from agent_training_server.api.handlers.datasets import DatasetHandlers
from agent_training_server.api.handlers.export import ExportHandlers
from agent_training_server.api.handlers.inference import InferenceHandlers
from agent_training_server.api.handlers.rollouts import RolloutHandlers
from agent_training_server.api.handlers.synthetic import SyntheticHandlers
from agent_training_server.api.handlers.training import TrainingHandlers
from agent_training_server.api.keepalive import keepalive_options
from agent_training_server.api.open_calls import OpenCalls, OpenCallsInterceptor, answer_delay
from agent_training_server.api.servicer import AgentTrainingServicer
from agent_training_server.api.stream_tasks import StreamTaskInterceptor
from agent_training_server.auth import setup as auth_setup
from agent_training_server.auth.interceptor import AuthInterceptor
from agent_training_server.config import ServerConfig
from agent_training_server.database_health import DatabaseMonitor
from agent_training_server.jobs.executor import create_executor
from agent_training_server.metrics import GrpcMetricsInterceptor, Metrics, MetricsEndpoint
from agent_training_server.services.adaptation import AdaptationService
from agent_training_server.services.agents import AgentService, new_id
from agent_training_server.services.analysis import AnalysisService
from agent_training_server.services.analysis_jobs import AnalysisJobs
from agent_training_server.services.analysis_runs import AnalysisRuns
from agent_training_server.services.checkpoints import CheckpointService
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.export import ExportService
from agent_training_server.services.feedback import FeedbackService
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.jobs import JobManager
from agent_training_server.services.replicas import ReplicaLease
from agent_training_server.services.rollouts import RolloutService
from agent_training_server.services.synthetic import SyntheticService
from agent_training_server.services.training import TrainingService
from agent_training_server.startup import (
    DataFolderLock,
    bind_grpc_port,
    check_data_folder,
    check_device,
    open_store,
)
from agent_training_server.storage_health import StorageMonitor
from agent_training_server.store.base import Store
from agent_training_server.store.traced import TracedStore
from agent_training_server.telemetry import INSTRUMENTATION_NAME, create_tracer_provider

log = logging.getLogger(__name__)

SERVICE_NAME = service_pb2.DESCRIPTOR.services_by_name["AgentTrainingService"].full_name


@dataclasses.dataclass
class RunningServer:
    """A started server and what it owns."""

    server: grpc.aio.Server
    port: int
    """The port it listens on (the chosen one when the address asked for port 0)."""
    config: ServerConfig
    health: health_aio.HealthServicer
    store: Store
    jobs: JobManager
    tracer_provider: TracerProvider
    feedback: FeedbackService
    metrics: Metrics
    data_lock: DataFolderLock
    metrics_endpoint: MetricsEndpoint | None = None
    analysis_jobs: AnalysisJobs | None = None
    open_calls: OpenCalls | None = None
    """Our service's running calls, answered SERVER_SHUTTING_DOWN shortly before the grace ends."""
    storage: StorageMonitor | None = None
    """Whether the data folder takes writes (health service ``agent_training.storage``)."""
    database: DatabaseMonitor | None = None
    """Whether the database answers (health service ``agent_training.database``)."""
    replica: ReplicaLease | None = None
    """This process among the replicas sharing the database; removed last."""

    @property
    def metrics_port(self) -> int:
        """Port of /metrics (0 when metrics are off)."""
        return self.metrics_endpoint.port if self.metrics_endpoint is not None else 0

    @property
    def address(self) -> str:
        """host:port clients can dial."""
        host = self.config.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting calls, let running ones finish within the grace period, release all.

        Training streams end at once with UNAVAILABLE (retryable: re-attach after the restart);
        running jobs checkpoint where they are and resume at the next start. Calls still running
        just before the grace period ends are answered SERVER_SHUTTING_DOWN (see `open_calls`).
        """
        await self.health.enter_graceful_shutdown()
        self.jobs.end_streams()
        grace = self.config.shutdown_grace_seconds if grace is None else grace
        stopping = asyncio.create_task(self.server.stop(grace))
        answering = None
        if self.open_calls is not None:
            answering = asyncio.create_task(self.open_calls.end_after(answer_delay(grace)))
        await self.jobs.stop()
        await stopping
        if answering is not None:
            answering.cancel()
        if self.analysis_jobs is not None:
            await self.analysis_jobs.stop()  # stored as interrupted, retryable
        await self.feedback.stop()  # answers still in memory reach the database
        if self.replica is not None:
            await self.replica.stop()  # its queued jobs go to the other replicas at once
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
        if self.storage is not None:
            self.storage.stop()
        if self.database is not None:
            await self.database.stop()
        self.store.close()
        self.data_lock.release()  # last: the folder is another server's only once we are done
        self.tracer_provider.shutdown()


def _channel_options(config: ServerConfig) -> list[tuple[str, int]]:
    return [
        # gRPC sets SO_REUSEPORT by default on Linux: a second server on a port in use would
        # start and take a share of the calls, silently. Off, the second bind fails.
        ("grpc.so_reuseport", int(config.reuse_port)),
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        *keepalive_options(config),
    ]


async def create_server(
    config: ServerConfig, tracer_provider: TracerProvider | None = None
) -> RunningServer:
    """Build and start the server described by ``config``.

    What can stop a start is checked before anything is started or written: the files settings
    name are read, the data folder is checked, the ports are bound and the data folder locked.
    Only then is the database opened, interrupted jobs recovered and workers started.

    Raises:
        StartupError: one of those checks failed; the message names the setting to change.
        ValueError: a setting is wrong in another way (e.g. an OTEL_* variable).
    """
    credentials = auth_setup.server_credentials(config)
    authentication = auth_setup.authentication(config)
    open_prefixes = auth_setup.open_prefixes(config)
    check_data_folder(config.data_dir)
    check_device(config.device)
    # What a predictor with no device of its own runs on (engines/few_shot.py reads it).
    devices.use_setting(config.device)
    if config.artifact_root != config.data_dir:
        check_data_folder(config.artifact_root, "artifact_dir")
    async with contextlib.AsyncExitStack() as undo:  # on a failed start, release what was taken
        if tracer_provider is None:
            tracer_provider = create_tracer_provider(
                export_process=True, log_settings=(config.log_level, config.log_format)
            )
            undo.callback(tracer_provider.shutdown)
        metrics = Metrics()
        storage = StorageMonitor(config.data_dir, metrics)
        open_calls = OpenCallsInterceptor(f"/{SERVICE_NAME}/")
        server = grpc.aio.server(
            interceptors=[
                # Outermost: streams end in their call's task, so contexts detach where attached.
                StreamTaskInterceptor(),
                # Tracing next, so errors see the server span's trace id.
                aio_server_interceptor(tracer_provider=tracer_provider),
                # Outside error translation, so the codes it sets are the codes counted.
                GrpcMetricsInterceptor(metrics),
                ErrorTranslationInterceptor(f"/{SERVICE_NAME}/", metrics, storage),
                # Inside error translation: the calls a shutdown stops raise the rich error.
                open_calls,
                # Sets the caller's principal in the context the handler runs in; before the
                # call guard, whose stream limit counts each tenant's streams.
                *_auth_interceptors(authentication, open_prefixes),
                # Inside error translation, so the errors it raises get the rich status.
                CallGuardInterceptor(
                    f"/{SERVICE_NAME}/", config, tenants_share=authentication is not None
                ),
            ],
            options=_channel_options(config),
        )
        undo.push_async_callback(server.stop, None)
        port = bind_grpc_port(server, config.address, credentials)
        metrics_endpoint = None
        if config.metrics_address:
            metrics_endpoint = metrics.bind(config.metrics_address)
            undo.callback(metrics_endpoint.close)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        config.artifact_root.mkdir(parents=True, exist_ok=True)
        address = f"{config.address.rsplit(':', 1)[0]}:{port}"
        data_lock = DataFolderLock.acquire(config.data_dir, address)
        undo.callback(data_lock.release)

        # The folder and the ports are ours: from here on the data folder is read and written.
        tracer = tracer_provider.get_tracer(INSTRUMENTATION_NAME, __version__)
        store = TracedStore(open_store(config), tracer)
        undo.callback(store.close)
        replica = ReplicaLease(
            store, new_id("replica"), config.replica_lease_seconds, sole=not config.database_url
        )
        await replica.register(address)
        undo.push_async_callback(replica.stop)
        jobs = JobManager(
            store,
            config,
            create_executor(config),
            metrics=metrics,
            tracer=tracer,
            storage=storage,
            replica=replica,
        )
        await jobs.start()
        undo.push_async_callback(jobs.stop)
        artifacts = config.artifact_root
        agents = AgentService(store, artifacts, jobs)
        feedback = FeedbackService(store, metrics)
        undo.push_async_callback(feedback.stop)
        inference = InferenceService(
            store,
            artifacts,
            on_answers=feedback.remember,
            metrics=metrics,
            # Another replica's activation is not among this process's commits: bound the age.
            read_seconds=config.replica_read_seconds if config.database_url else math.inf,
            batch_inputs=config.invoke_batch_inputs,
            batch_wait=config.invoke_batch_wait_ms / 1000,
        )
        datasets = DatasetService(store, config.max_dataset_examples, owner=replica.replica_id)
        await datasets.discard_orphaned()
        replica.on_beat(datasets.discard_orphaned)
        synthetic = SyntheticService(
            inference, agents, datasets, config.max_concurrent_generations, metrics
        )
        analysis = AnalysisService(store, agents, inference, artifacts, work=jobs)
        adaptation = AdaptationService(store, agents, inference, analysis, artifacts, metrics)
        rollouts = RolloutService(store, tracer, metrics, flush_answers=feedback.flush)
        analysis_jobs = AnalysisJobs(store, config.max_analysis_jobs, owner=replica.replica_id)
        await analysis_jobs.fail_orphaned()
        replica.on_beat(analysis_jobs.fail_orphaned)
        replica.start()
        undo.push_async_callback(analysis_jobs.stop)

        service_pb2_grpc.add_AgentTrainingServiceServicer_to_server(
            AgentTrainingServicer(
                agents=AgentHandlers(config, agents, tracer),
                training=TrainingHandlers(
                    config,
                    TrainingService(agents, datasets, jobs, config),
                    tracer,
                    CheckpointService(store, jobs, config),
                ),
                inference=InferenceHandlers(config, inference, feedback, rollouts, tracer),
                datasets=DatasetHandlers(config, datasets),
                synthetic=SyntheticHandlers(config, synthetic, datasets),
                analysis=AnalysisHandlers(
                    config, AnalysisRuns(agents, datasets, analysis, analysis_jobs)
                ),
                adaptation=AdaptationHandlers(config, adaptation),
                rollouts=RolloutHandlers(config, rollouts),
                export=ExportHandlers(config, ExportService(agents, artifacts, jobs)),
            ),
            server,
        )
        health = health_aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        await server.start()
        if metrics_endpoint is not None:
            metrics_endpoint.start()
        _log_security(config, authentication is not None)
        for name in ("", SERVICE_NAME):
            await health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await storage.start(health)  # agent_training.storage: SERVING while writes can be stored
        database = DatabaseMonitor(store)
        await database.start(health)  # agent_training.database: SERVING while the database answers
        undo.pop_all()  # started: from now on RunningServer.stop releases it all
    return RunningServer(
        server,
        port,
        config,
        health,
        store,
        jobs,
        tracer_provider,
        feedback,
        metrics,
        data_lock,
        metrics_endpoint,
        analysis_jobs,
        open_calls.calls,
        storage=storage,
        database=database,
        replica=replica,
    )


def _auth_interceptors(
    authentication: auth_setup.Authentication | None, open_prefixes: list[str]
) -> list[grpc.aio.ServerInterceptor]:
    if authentication is None:
        return []  # every caller is the local principal: tenant "default", every scope
    return [AuthInterceptor(authentication, f"/{SERVICE_NAME}/", open_prefixes)]


def _log_security(config: ServerConfig, authenticated: bool) -> None:
    if config.tls_client_ca_file:
        log.info("transport: mutual TLS (clients need a certificate signed by the client CA)")
    elif config.tls_cert_file:
        log.info("transport: TLS")
    else:
        log.warning("transport: PLAINTEXT (no TLS); set tls_cert_file and tls_key_file for TLS")
    if authenticated:
        log.info(
            "authentication: bearer tokens required (open without a token: %s)",
            config.auth_open_services or "nothing",
        )
    else:
        log.warning(
            "authentication: OFF: every caller is tenant 'default' with every scope;"
            " set auth_token_file or auth_jwt_issuer to require tokens"
        )
