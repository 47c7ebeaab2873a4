"""Tracing set-up: the tracer provider whose server spans give every error its trace_id."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider

from agent_training_server import __version__

SERVICE_NAME = "agent-training"


def create_tracer_provider(processors: list[SpanProcessor] | None = None) -> TracerProvider:
    """Return a tracer provider for the service, with the given span processors attached."""
    resource = Resource.create({"service.name": SERVICE_NAME, "service.version": __version__})
    provider = TracerProvider(resource=resource)
    for processor in processors or []:
        provider.add_span_processor(processor)
    return provider


def current_trace_id() -> str:
    """Return the current span's trace id as 32 lowercase hex digits ("" when there is none)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return ""
    return trace.format_trace_id(context.trace_id)
