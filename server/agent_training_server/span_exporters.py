"""The span exporters the standard OpenTelemetry environment variables name.

``OTEL_TRACES_EXPORTER`` (``none`` by default, ``console``, or ``otlp``) and
``OTEL_EXPORTER_OTLP_PROTOCOL`` (``grpc`` by default, or ``http/protobuf``); the OTLP exporters
read their endpoint settings themselves. Used by the server process (telemetry.py, to check the
settings at start-up) and by the export child process (span_export.py), so it imports neither.
"""

from __future__ import annotations

import os

from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter


def exporters_from_environment() -> list[SpanExporter]:
    """The span exporters ``OTEL_TRACES_EXPORTER`` names (comma-separated; default none)."""
    names = [n.strip() for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")]
    exporters: list[SpanExporter] = []
    for name in names:
        if name in ("", "none"):
            continue
        if name == "console":
            exporters.append(ConsoleSpanExporter())
        elif name == "otlp":
            exporters.append(_otlp_exporter())
        else:
            raise ValueError(f"OTEL_TRACES_EXPORTER names {name!r}; use none, console or otlp")
    return exporters


def _otlp_exporter() -> SpanExporter:
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[assignment]
                OTLPSpanExporter,
            )
        else:
            raise ValueError(f"OTEL_EXPORTER_OTLP_PROTOCOL {protocol!r}: use grpc or http/protobuf")
    except ImportError as error:
        raise ValueError(
            "OTEL_TRACES_EXPORTER=otlp needs the exporter package: install agent-training[otlp]"
        ) from error
    return OTLPSpanExporter()
