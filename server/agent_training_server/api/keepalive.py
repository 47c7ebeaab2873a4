"""Keepalive settings of the server's HTTP/2 connections, suited to long streams.

A training stream can stay open for an hour with minutes between events. Without pings a NAT or
proxy on the way drops the idle connection silently, and neither side notices until it writes.
The server pings idle connections every `keepalive_time_seconds` and closes those that do not
answer within `keepalive_timeout_seconds`; it accepts client pings as often as every
`min_client_ping_seconds`, also on connections without calls (a client's keepalive must not be
punished with GOAWAY "too_many_pings"). The Python client's channel options match
(`agent_training_client.client.KEEPALIVE_OPTIONS`); docs/limits.md has the table.
"""

from __future__ import annotations

from agent_training_server.config import ServerConfig


def keepalive_options(config: ServerConfig) -> list[tuple[str, int]]:
    """GRPC server channel arguments for keepalive."""
    return [
        ("grpc.keepalive_time_ms", int(config.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(config.keepalive_timeout_seconds * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        # Keep pinging a connection whose stream is quiet: 0 lifts the cap on pings sent
        # without data in between (the default, 2, would stop the server's keepalive).
        ("grpc.http2.max_pings_without_data", 0),
        (
            "grpc.http2.min_ping_interval_without_data_ms",
            int(config.min_client_ping_seconds * 1000),
        ),
        # A client pinging faster than allowed is closed after this many offences.
        ("grpc.http2.max_ping_strikes", 2),
    ]
