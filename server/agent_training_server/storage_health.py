"""Whether the data folder takes writes: counted, shown on /metrics and in gRPC health.

A write that fails because the data folder is full or read-only (storage_errors.py) is counted
(``agent_training_storage_errors_total{kind}``), turns ``agent_training_storage_writable`` to 0 and
the health service name ``HEALTH_SERVICE`` to NOT_SERVING. From then on the folder is probed
every ``PROBE_SECONDS`` (free space, and a one-page test write in each folder the server creates
files in); the first probe that passes turns both back. The server's overall health ("" and the
service's name) stays SERVING throughout: reads and InvokeAgent go on working on a full disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from grpc_health.v1 import health_pb2
from grpc_health.v1.health import aio as health_aio

from agent_training_server import errors, storage_errors
from agent_training_server.metrics import Metrics
from agent_training_server.storage_errors import Kind

log = logging.getLogger(__name__)

HEALTH_SERVICE = "agent_training.storage"
"""gRPC health service name that reports whether writes can be stored: SERVING, or NOT_SERVING
from a write that failed for a full or read-only data folder until a probe passes."""
PROBE_SECONDS = 5.0
"""Interval of the probe while the data folder is not writable (none runs while it is)."""
WRITTEN_FOLDERS = ("", "jobs", "artifacts")
"""Folders under the data folder that new files are created in, all probed."""

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class StorageMonitor:
    """Names storage failures for callers and tracks the data folder's writability.

    Its methods run on the server's event loop.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        metrics: Metrics | None = None,
        probe_seconds: float = PROBE_SECONDS,
    ) -> None:
        self.data_dir = data_dir
        self._metrics = metrics
        self._probe_seconds = probe_seconds
        self._health: health_aio.HealthServicer | None = None
        self._problem: Kind | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopped = False
        if metrics is not None:
            metrics.storage_writable.set(1)
            for kind in storage_errors.KINDS:
                metrics.storage_errors.labels(kind)  # shown at 0 before the first failure

    @property
    def problem(self) -> Kind | None:
        """What keeps the data folder from taking writes now; None while it takes them."""
        return self._problem

    async def start(self, health: health_aio.HealthServicer) -> None:
        """Report through ``health`` from now on, starting with a probe of the folder."""
        self._health = health
        problem = await asyncio.to_thread(self._probe) if self.data_dir is not None else None
        if problem is None:
            await health.set(HEALTH_SERVICE, _SERVING)
        else:
            self.failed(problem, "the start-up probe")

    def stop(self) -> None:
        """Stop probing (shutdown)."""
        self._stopped = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def classify(self, error: BaseException, any_error: bool = False) -> Kind | None:
        """``storage_errors.classify`` with this server's data folder to probe."""
        return storage_errors.classify(error, self.data_dir, any_error)

    def named(
        self, error: BaseException, needed_bytes: int | None = None
    ) -> errors.ServiceError | None:
        """The storage error (STORAGE_FULL, STORAGE_READ_ONLY) ``error`` stands for, or None.

        One that is, is recorded as a failure (counted, health NOT_SERVING until a probe passes).
        """
        kind = self.classify(error)
        if kind is None:
            return None
        self.failed(kind, error)
        return storage_errors.service_error(kind, needed_bytes)

    def failed(self, kind: Kind, cause: BaseException | str = "") -> None:
        """Record a write that failed of ``kind``: counted, unhealthy until a probe passes."""
        if self._metrics is not None:
            self._metrics.storage_errors.labels(kind).inc()
            self._metrics.storage_writable.set(0)
        if self._problem is None:
            free = storage_errors.free_bytes(self.data_dir) if self.data_dir else None
            log.warning(
                "the data folder %s does not take writes (%s; %s bytes free): %s",
                self.data_dir,
                kind,
                "unknown" if free is None else free,
                f"{type(cause).__name__}: {cause}" if isinstance(cause, BaseException) else cause,
            )
            self._set_health(_NOT_SERVING)
        self._problem = kind
        self._schedule_probe()

    def _schedule_probe(self) -> None:
        if self._timer is not None or self._stopped or self.data_dir is None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the loop (a test calling directly): nothing to schedule on
        self._timer = loop.call_later(self._probe_seconds, self._probe_later)

    def _probe_later(self) -> None:
        self._timer = None
        self._spawn(self._check())

    async def _check(self) -> None:
        problem = await asyncio.to_thread(self._probe)
        if self._stopped:
            return
        if problem is not None:
            self._problem = problem
            self._schedule_probe()
            return
        log.info("the data folder %s takes writes again", self.data_dir)
        self._problem = None
        if self._metrics is not None:
            self._metrics.storage_writable.set(1)
        self._set_health(_SERVING)

    def _probe(self) -> Kind | None:
        assert self.data_dir is not None
        for name in WRITTEN_FOLDERS:
            folder = self.data_dir / name
            if name and not folder.is_dir():
                continue
            problem = storage_errors.probe(folder)
            if problem is not None:
                return problem
        return None

    def _set_health(self, status: int) -> None:
        if self._health is not None:
            self._spawn(self._health.set(HEALTH_SERVICE, status))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)  # held: the loop keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)
