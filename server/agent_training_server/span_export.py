"""Span export from a child process, so that encoding spans never takes the server's GIL.

The OpenTelemetry exporters encode each span to protobuf in Python (about 20 us a span) on the
batch processor's thread; in the server process that time is taken from the request loop, since
only one thread runs Python at a time. ``ProcessSpanExporter`` stands in for the exporter inside
the server's ``BatchSpanProcessor``: it flattens each finished span to a tuple of plain values
(about 4 us) and writes the batch to a pipe. A child process rebuilds the spans and hands them to
the exporters ``OTEL_TRACES_EXPORTER`` names, configured by the same ``OTEL_*`` variables, so
what reaches the collector is what an in-process exporter would have sent.

The child ends when the server shuts the exporter down (after exporting what it was sent) or
when the pipe closes because the server died; it ignores SIGINT and SIGTERM, which a terminal or
a process manager sends to the whole process group, so that the server decides when it stops.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from agent_training_server import logs
from agent_training_server.span_exporters import exporters_from_environment

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 30.0
"""How long shutdown waits for the child to export what it was sent before stopping it."""

Batch = tuple[list[Any], list[Any], list[tuple[Any, ...]]]
"""(resources, scopes, spans): spans name their resource and scope by index."""


class ProcessSpanExporter(SpanExporter):
    """Sends finished spans to a child process that exports them (see the module docstring)."""

    def __init__(self, log_settings: tuple[str, str] = ("INFO", "json")) -> None:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded server
        receiver, self._sender = context.Pipe(duplex=False)
        self._process = context.Process(
            target=export_loop, args=(receiver, log_settings), name="span-exporter", daemon=True
        )
        self._process.start()
        receiver.close()  # the child holds the reading end; EOF there means the server is gone
        self._lock = threading.Lock()
        self._closed = False

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Flatten the batch and write it to the child; FAILURE once the child is gone."""
        if self._closed:
            return SpanExportResult.FAILURE
        batch = flatten(spans)
        try:
            with self._lock:
                self._sender.send(batch)
        except (OSError, ValueError):
            self._closed = True
            log.error("the span export process has stopped; spans are no longer exported")
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        """Let the child export what it holds and stop; stop it by force after a while."""
        if self._closed and not self._process.is_alive():
            return
        self._closed = True
        try:
            with self._lock:
                self._sender.send(None)
                self._sender.close()
        except (OSError, ValueError):
            pass  # already gone: the join below returns at once
        self._process.join(SHUTDOWN_SECONDS)
        if self._process.is_alive():
            log.warning(
                "the span export process did not stop in %ss; stopping it", SHUTDOWN_SECONDS
            )
            self._process.kill()
            self._process.join()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Spans handed to ``export`` are already in the pipe; nothing is held here."""
        return not self._closed


def flatten(spans: Sequence[ReadableSpan]) -> Batch:
    """A batch of spans as plain values that pickle quickly (resources and scopes listed once)."""
    resources: dict[int, int] = {}
    scopes: dict[int, int] = {}
    resource_list: list[Any] = []
    scope_list: list[Any] = []
    flat = []
    for span in spans:
        resource, scope = span.resource, span.instrumentation_scope
        if id(resource) not in resources:
            resources[id(resource)] = len(resource_list)
            resource_list.append((dict(resource.attributes), resource.schema_url))
        if id(scope) not in scopes:
            scopes[id(scope)] = len(scope_list)
            scope_list.append(
                None if scope is None else (scope.name, scope.version, scope.schema_url)
            )
        flat.append(_flatten_span(span, resources[id(resource)], scopes[id(scope)]))
    return resource_list, scope_list, flat


def _flatten_span(span: ReadableSpan, resource: int, scope: int) -> tuple[Any, ...]:
    context, parent, status = span.context, span.parent, span.status
    return (
        span.name,
        _flatten_context(context),
        None if parent is None else _flatten_context(parent),
        span.kind.value,
        span.start_time,
        span.end_time,
        dict(span.attributes) if span.attributes else None,
        [(e.name, e.timestamp, dict(e.attributes or {})) for e in span.events],
        [(_flatten_context(k.context), dict(k.attributes or {})) for k in span.links],
        status.status_code.value,
        status.description,
        resource,
        scope,
    )


def _flatten_context(context: SpanContext) -> tuple[Any, ...]:
    state = list(context.trace_state.items()) if context.trace_state else None
    return (context.trace_id, context.span_id, context.is_remote, int(context.trace_flags), state)


def rebuild(batch: Batch) -> list[ReadableSpan]:
    """The spans ``flatten`` was given, as ReadableSpans an exporter takes."""
    resource_list, scope_list, flat = batch
    resources = [Resource(attributes, schema_url) for attributes, schema_url in resource_list]
    scopes = [None if s is None else InstrumentationScope(*s) for s in scope_list]
    return [_rebuild_span(span, resources, scopes) for span in flat]


def _rebuild_span(
    flat: tuple[Any, ...], resources: list[Resource], scopes: list[InstrumentationScope | None]
) -> ReadableSpan:
    (name, context, parent, kind, start, end, attributes, events, links, code, description,
     resource, scope) = flat  # fmt: skip
    return ReadableSpan(
        name=name,
        context=_rebuild_context(context),
        parent=None if parent is None else _rebuild_context(parent),
        resource=resources[resource],
        attributes=attributes,
        events=[Event(n, attrs, timestamp) for n, timestamp, attrs in events],
        links=[Link(_rebuild_context(c), attrs) for c, attrs in links],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), description),
        start_time=start,
        end_time=end,
        instrumentation_scope=scopes[scope],
    )


def _rebuild_context(flat: tuple[Any, ...]) -> SpanContext:
    trace_id, span_id, is_remote, flags, state = flat
    return SpanContext(
        trace_id,
        span_id,
        is_remote=is_remote,
        trace_flags=TraceFlags(flags),
        trace_state=TraceState(state) if state else None,
    )


def export_loop(receiver: Connection, log_settings: tuple[str, str]) -> None:
    """The child process: export every batch received until told to stop or the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logs.configure(*log_settings)
    exporters = exporters_from_environment()
    while True:
        try:
            batch = receiver.recv()
        except (EOFError, OSError):
            break  # the server is gone
        if batch is None:
            break
        spans = rebuild(batch)
        for exporter in exporters:
            try:
                exporter.export(spans)
            except Exception:  # an exporter bug must not stop the others or later batches
                log.exception("span export failed")
    for exporter in exporters:
        exporter.shutdown()
