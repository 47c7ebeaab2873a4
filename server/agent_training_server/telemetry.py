"""Tracing set-up: the tracer provider whose server spans give every error its trace_id.

Exporters follow the standard OpenTelemetry environment variables: ``OTEL_TRACES_EXPORTER``
(``none`` by default, ``console``, or ``otlp``), ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` by
default, or ``http/protobuf``) with the ``OTEL_EXPORTER_OTLP_*`` endpoint settings the exporters
read themselves, and the sampler from ``OTEL_TRACES_SAMPLER`` / ``OTEL_TRACES_SAMPLER_ARG``
(read by the SDK; every request is traced by default).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from agent_training_server import __version__
from agent_training_server.span_export import ProcessSpanExporter
from agent_training_server.span_exporters import exporters_from_environment

SERVICE_NAME = "agent-training"
INSTRUMENTATION_NAME = "agent_training_server"
"""Instrumentation scope of the service's own spans (the gRPC server spans have their own)."""

_PROPAGATOR = TraceContextTextMapPropagator()


def create_tracer_provider(
    processors: list[SpanProcessor] | None = None,
    export_process: bool = False,
    log_settings: tuple[str, str] = ("INFO", "json"),
) -> TracerProvider:
    """Return a tracer provider for the service, with the given span processors attached.

    Without `processors`, the exporters named by ``OTEL_TRACES_EXPORTER`` are attached: in this
    process, or with `export_process` in a child process that encodes and sends the spans
    (span_export.py), which the server uses to keep that work off its request loop.
    """
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    if processors is None:
        processors = _export_processors(export_process, log_settings)
    for processor in processors:
        provider.add_span_processor(processor)
    return provider


def _export_processors(export_process: bool, log_settings: tuple[str, str]) -> list[SpanProcessor]:
    exporters = exporters_from_environment()  # a bad setting stops start-up here, not in a child
    if not export_process or not exporters:
        return [BatchSpanProcessor(exporter) for exporter in exporters]
    for exporter in exporters:
        exporter.shutdown()  # only built to check the settings: the child builds its own
    return [BatchSpanProcessor(ProcessSpanExporter(log_settings))]


def current_trace_id() -> str:
    """Return the current span's trace id as 32 lowercase hex digits ("" when there is none)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return trace.format_trace_id(context.trace_id)


def current_trace_context() -> dict[str, str]:
    """The current span as W3C trace context headers (``traceparent``), to carry across processes.

    Empty when there is no current span: a job submitted outside a request starts its own trace.
    """
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier


def context_from(carrier: Mapping[str, str]) -> otel_context.Context:
    """The OpenTelemetry context that ``current_trace_context`` captured (an empty one if none)."""
    return _PROPAGATOR.extract(dict(carrier))


def trace_id_of(carrier: Mapping[str, str]) -> str:
    """The trace id held by captured trace context, as 32 hex digits ("" when there is none)."""
    span_context = trace.get_current_span(context_from(carrier)).get_span_context()
    return trace.format_trace_id(span_context.trace_id) if span_context.is_valid else ""


@contextmanager
def child_span(tracer: trace.Tracer, name: str, **attributes: Any) -> Iterator[None]:
    """A leaf span under the current one; nothing at all outside a traced request or job.

    Background work (write-behind flushes, the job dispatcher) would otherwise start a new trace
    for every store call it makes. The span is not made current: the work it wraps (a check, one
    store call) starts no spans of its own, and skipping the context switch takes a quarter off
    the cost of a span on the InvokeAgent path. An exception is recorded on the span, as
    ``start_as_current_span`` would, and goes on.
    """
    if not trace.get_current_span().get_span_context().is_valid:
        yield
        return
    span = tracer.start_span(name, attributes=attributes)
    try:
        yield
    except Exception as error:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        raise
    finally:
        span.end()
