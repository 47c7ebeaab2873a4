"""Whether the database answers, in gRPC health: the service name ``agent_training.database``.

A probe runs one trivial query every ``PROBE_SECONDS``; the name is SERVING while it succeeds and
NOT_SERVING while the database does not answer (a PostgreSQL server down or unreachable: every
call that needs it fails UNAVAILABLE, DATABASE_UNAVAILABLE, meanwhile). A load balancer's
readiness check pointed at it takes a replica out while its database is gone. For the embedded
SQLite file it stays SERVING.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from agent_training_server import errors
from agent_training_server.store.base import Store

log = logging.getLogger(__name__)

HEALTH_SERVICE = "agent_training.database"
PROBE_SECONDS = 5.0
"""Interval of the probe."""


class DatabaseMonitor:
    """Probes the store's database and reports it in gRPC health. Runs on the event loop."""

    def __init__(self, store: Store, probe_seconds: float = PROBE_SECONDS) -> None:
        self._store = store
        self._probe_seconds = probe_seconds
        self._task: asyncio.Task[None] | None = None
        self.reachable = True

    async def start(self, health: health_aio.HealthServicer) -> None:
        """Report SERVING now (the store was just opened) and probe from then on."""
        await health.set(HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        self._task = asyncio.create_task(self._probe(health))

    async def _probe(self, health: health_aio.HealthServicer) -> None:
        while True:
            await asyncio.sleep(self._probe_seconds)
            try:
                await asyncio.to_thread(self._store.ping)
            except errors.Unavailable as error:
                reachable, reason = False, error.message
            else:
                reachable, reason = True, ""
            if reachable == self.reachable:
                continue
            self.reachable = reachable
            if reachable:
                log.info("the database answers again")
            else:
                log.warning("the database does not answer: %s", reason)
            status = health_pb2.HealthCheckResponse
            await health.set(HEALTH_SERVICE, status.SERVING if reachable else status.NOT_SERVING)

    async def stop(self) -> None:
        """Stop probing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
