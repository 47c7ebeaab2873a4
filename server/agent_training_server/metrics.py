"""Prometheus metrics: the grpc-ecosystem server metrics and the service's own.

Every server has its own registry (so several can run in one process, as the tests do) served on
an HTTP port of its own. Training runs in worker processes, but its numbers are recorded here, in
the server process, from the progress events the workers send, so they are right without the
client's multiprocess mode. Per-job gauges are removed when the job ends: labels do not grow
without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from agent_training_server.config import setting_name
from agent_training_server.grpc_handlers import Continuation, aio_handler
from agent_training_server.startup import StartupError

# Label values exactly as the grpc-ecosystem interceptors (Go, Java) write them, so that queries
# and dashboards written for those servers match this one.
_GRPC_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}
_GRPC_CODES = {
    grpc.StatusCode.OK: "OK",
    grpc.StatusCode.CANCELLED: "Canceled",
    grpc.StatusCode.UNKNOWN: "Unknown",
    grpc.StatusCode.INVALID_ARGUMENT: "InvalidArgument",
    grpc.StatusCode.DEADLINE_EXCEEDED: "DeadlineExceeded",
    grpc.StatusCode.NOT_FOUND: "NotFound",
    grpc.StatusCode.ALREADY_EXISTS: "AlreadyExists",
    grpc.StatusCode.PERMISSION_DENIED: "PermissionDenied",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "ResourceExhausted",
    grpc.StatusCode.FAILED_PRECONDITION: "FailedPrecondition",
    grpc.StatusCode.ABORTED: "Aborted",
    grpc.StatusCode.OUT_OF_RANGE: "OutOfRange",
    grpc.StatusCode.UNIMPLEMENTED: "Unimplemented",
    grpc.StatusCode.INTERNAL: "Internal",
    grpc.StatusCode.UNAVAILABLE: "Unavailable",
    grpc.StatusCode.DATA_LOSS: "DataLoss",
    grpc.StatusCode.UNAUTHENTICATED: "Unauthenticated",
}
_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096)


class Metrics:
    """The service's metrics, in one registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        labels = ("grpc_type", "grpc_service", "grpc_method")
        self.grpc_started = Counter(
            "grpc_server_started", "RPCs started on the server.", labels, registry=r
        )
        self.grpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, regardless of success or failure.",
            (*labels, "grpc_code"),
            registry=r,
        )
        self.grpc_received = Counter(
            "grpc_server_msg_received", "RPC stream messages received on the server.", labels,
            registry=r,
        )  # fmt: skip
        self.grpc_sent = Counter(
            "grpc_server_msg_sent", "gRPC stream messages sent by the server.", labels, registry=r
        )
        self.grpc_seconds = Histogram(
            "grpc_server_handling_seconds",
            "Response latency of gRPC calls handled by the server, in seconds.",
            labels,
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        p = "agent_training_"
        self.jobs = Counter(
            p + "jobs", "Training jobs that ended, by type and status.",
            ("training_type", "status"), registry=r,
        )  # fmt: skip
        self.jobs_running = Gauge(p + "jobs_running", "Training jobs running.", registry=r)
        self.jobs_queued = Gauge(p + "jobs_queued", "Training jobs waiting.", registry=r)
        self.job_seconds = Histogram(
            p + "job_duration_seconds", "Wall time of ended jobs.", ("training_type",),
            buckets=(1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600), registry=r,
        )  # fmt: skip
        self.epochs = Counter(
            p + "epochs", "Training epochs completed.", ("training_type",), registry=r
        )
        self.job_examples_per_second = Gauge(
            p + "job_examples_per_second", "Examples per second of a running job.",
            ("training_id",), registry=r,
        )  # fmt: skip
        self.job_loss = Gauge(
            p + "job_loss", "Current loss of a running job.", ("training_id",), registry=r
        )
        self.job_accuracy = Gauge(
            p + "job_accuracy", "Current training accuracy of a running job.", ("training_id",),
            registry=r,
        )  # fmt: skip
        self.synthetic = Counter(
            p + "synthetic_examples", "Synthetic examples generated, by data type.",
            ("data_type",), registry=r,
        )  # fmt: skip
        self.invocations = Counter(
            p + "invocations", "Inputs answered by InvokeAgent, by agent.", ("agent_id",),
            registry=r,
        )  # fmt: skip
        self.invocation_seconds = Histogram(
            p + "invocation_seconds", "InvokeAgent scoring time per call, by agent.",
            ("agent_id",), buckets=_LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.invoke_batch_calls = Histogram(
            p + "invoke_batch_calls", "InvokeAgent calls scored together in one pass.",
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.invoke_batch_inputs = Histogram(
            p + "invoke_batch_inputs", "Inputs scored together in one InvokeAgent pass.",
            buckets=_BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.answers_unrecorded = Counter(
            p + "answers_unrecorded", "Answers given but not recorded: the store fell too far"
            " behind (feedback on them is refused as unknown).", registry=r,
        )  # fmt: skip
        self.fallbacks = Counter(
            p + "fallbacks", "Answers that were the fallback output, by agent.", ("agent_id",),
            registry=r,
        )  # fmt: skip
        self.feedback = Counter(
            p + "feedback", "Feedback recorded, by kind.", ("kind",), registry=r
        )
        self.adaptations = Counter(
            p + "adaptations", "AdaptAgentBehavior calls that changed something, by strategy.",
            ("strategy",), registry=r,
        )  # fmt: skip
        self.rollout_decisions = Counter(
            p + "rollout_decisions", "Rollouts ended, by action (promote, abort) and by whether"
            " the rollout's policy decided (automatic).", ("action", "automatic"), registry=r,
        )  # fmt: skip
        self.store_errors = Counter(
            p + "store_errors", "Store operations that failed unexpectedly.", registry=r
        )
        self.event_log_failures = Counter(
            p + "event_log_failures",
            "Training jobs failed because an event could not be stored (EVENT_LOG_UNAVAILABLE;"
            " STORAGE_FULL or STORAGE_READ_ONLY when the data folder was the cause).",
            registry=r,
        )
        # The data folder (storage_health.py).
        self.storage_errors = Counter(
            p + "storage_errors",
            "Writes to the data folder that failed because it is full or over quota (full) or"
            " read-only or not writable (read_only).",
            ("kind",), registry=r,
        )  # fmt: skip
        self.storage_writable = Gauge(
            p + "storage_writable",
            "1 while the data folder takes writes; 0 from a write that failed for a full or"
            " read-only folder until a probe finds it writable again.",
            registry=r,
        )

    def bind(self, address: str) -> MetricsEndpoint:
        """Bind /metrics to `address` (host:port; port 0 picks one), to serve once started.

        Raises:
            StartupError: the address cannot be bound (a port in use, an unknown host).
        """
        host, _, port = address.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"
        try:
            family = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)[0][0]

            class Server(_ExclusiveServer):
                address_family = family  # IPv4 or IPv6, as the host is

            server = make_server(
                host, int(port), make_wsgi_app(self.registry), Server, _QuietHandler
            )
        except (OSError, ValueError) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise StartupError(
                f"cannot serve metrics on {address}: {reason.lower()};"
                f" set {setting_name('metrics_address')} to a free port, or to '' for no metrics"
            ) from error
        return MetricsEndpoint(server)

    # Training jobs ---------------------------------------------------------------------------

    def job_progress(self, training_id: str, update: dict[str, Any]) -> None:
        """A running job's latest numbers."""
        if update.get("examples_per_second") is not None:
            self.job_examples_per_second.labels(training_id).set(update["examples_per_second"])
        if update.get("loss") is not None:
            self.job_loss.labels(training_id).set(update["loss"])
        if update.get("train_accuracy") is not None:
            self.job_accuracy.labels(training_id).set(update["train_accuracy"])

    def job_ended(
        self, training_id: str, training_type: str, status: str, seconds: float, epochs: int
    ) -> None:
        """Count an ended job and drop its per-job gauges."""
        self.jobs.labels(training_type, status).inc()
        self.job_seconds.labels(training_type).observe(seconds)
        if epochs:
            self.epochs.labels(training_type).inc(epochs)
        for gauge in (self.job_examples_per_second, self.job_loss, self.job_accuracy):
            with contextlib.suppress(KeyError):  # the job never reported that number
                gauge.remove(training_id)


class _ExclusiveServer(ThreadingWSGIServer):
    """Binds with SO_REUSEADDR, never SO_REUSEPORT.

    SO_REUSEADDR lets a restart bind while old connections wait out their close; without
    SO_REUSEPORT a port another process listens on stops the start instead of being shared.
    """

    allow_reuse_address = True
    allow_reuse_port = False


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged."""


class MetricsEndpoint:
    """The /metrics HTTP server: its port held from binding, answering once started."""

    def __init__(self, server: ThreadingWSGIServer) -> None:
        self._server = server
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (the chosen one when the address asked for port 0)."""
        return int(self._server.server_port)

    def start(self) -> None:
        """Answer scrapes, on a daemon thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )
        self._thread.start()

    def close(self) -> None:
        """Stop answering and release the port."""
        if self._thread is not None:
            self._server.shutdown()  # waits for serve_forever, so only once it was started
            self._thread = None
        self._server.server_close()


class GrpcMetricsInterceptor(grpc.aio.ServerInterceptor):
    """grpc_server_* metrics for every RPC, with the grpc-ecosystem names and labels."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self,
        continuation: Continuation,
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        """Wrap the handler so its start, messages, outcome and duration are counted."""
        found = await continuation(handler_call_details)
        if found is None:
            return found
        handler = aio_handler(found)
        service, _, method = handler_call_details.method.lstrip("/").rpartition("/")
        kind = _GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        labels = (kind, service, method)
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, labels))
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, labels))
        if handler.stream_unary is not None:
            return handler._replace(stream_unary=self._upload(handler.stream_unary, labels))
        return found

    def _done(self, labels: tuple[str, str, str], context: Any, started: float, error: Any) -> None:
        m = self._metrics
        code = _code_of(context, error)
        m.grpc_handled.labels(*labels, code).inc()
        m.grpc_seconds.labels(*labels).observe(time.perf_counter() - started)

    def _unary(
        self, behavior: Callable, labels: tuple[str, str, str], one_request: bool = True
    ) -> Callable:
        m = self._metrics

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            m.grpc_started.labels(*labels).inc()
            if one_request:
                m.grpc_received.labels(*labels).inc()
            started, error = time.perf_counter(), None
            try:
                response = await behavior(request, context)
                m.grpc_sent.labels(*labels).inc()
                return response
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._done(labels, context, started, error)

        return handle

    def _stream(self, behavior: Callable, labels: tuple[str, str, str]) -> Callable:
        m = self._metrics

        async def handle(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            m.grpc_started.labels(*labels).inc()
            m.grpc_received.labels(*labels).inc()
            started, error = time.perf_counter(), None
            sent = m.grpc_sent.labels(*labels)
            try:
                responses = behavior(request, context)
                if inspect.isawaitable(responses):
                    # A coroutine that sends with context.write (grpc health's Watch): its
                    # messages are not seen here, its start and end are.
                    await responses
                    return
                async for response in responses:
                    sent.inc()
                    yield response
            except BaseException as raised:
                error = raised
                raise
            finally:
                self._done(labels, context, started, error)

        return handle

    def _upload(self, behavior: Callable, labels: tuple[str, str, str]) -> Callable:
        """A client stream: a unary call whose request messages are counted as they arrive."""
        received = self._metrics.grpc_received.labels(*labels)
        unary = self._unary(behavior, labels, one_request=False)

        async def counted(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
            async for request in requests:
                received.inc()
                yield request

        async def handle(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> Any:
            return await unary(counted(requests), context)

        return handle


def _code_of(context: Any, error: BaseException | None) -> str:
    """The status code the call ended with, as the grpc-ecosystem label spells it."""
    code = context.code()  # set by abort() (error translation) or by grpc on completion
    if isinstance(code, grpc.StatusCode):
        return _GRPC_CODES[code]
    if error is None:
        return "OK"
    return "Canceled" if isinstance(error, asyncio.CancelledError) else "Unknown"
