"""An OTLP trace receiver that counts the spans it is sent and keeps nothing.

Benchmarks point the service's exporter at it, so that tracing is measured with its export cost
(encoding, batching, sending) rather than with spans that go nowhere.
Usage: python bench/otlp_sink.py  (prints the port it listens on, then serves until killed)
"""

from __future__ import annotations

import signal
import sys
from concurrent import futures

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


class CountingSink(trace_service_pb2_grpc.TraceServiceServicer):
    """Accepts every export; counts spans."""

    def __init__(self) -> None:
        self.spans = 0

    def Export(self, request, context):  # noqa: D102 - generated signature
        self.spans += sum(
            len(scope.spans)
            for resource in request.resource_spans
            for scope in resource.scope_spans
        )
        return trace_service_pb2.ExportTraceServiceResponse()


def main() -> None:
    sink = CountingSink()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)

    def stop(*_args: object) -> None:
        print(f"received {sink.spans} spans", file=sys.stderr, flush=True)
        server.stop(0)

    signal.signal(signal.SIGTERM, stop)
    server.wait_for_termination()


if __name__ == "__main__":
    main()
