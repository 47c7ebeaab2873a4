"""This server process as one replica among those sharing the store.

A replica registers itself with a lease (`replica_lease_seconds`) and renews it on a heartbeat
several times per lease. What it runs (training jobs, analyses, dataset uploads) records it as
owner; once a replica stops renewing (killed, hung, cut off from the database), its lease runs
out and another replica's heartbeat finds its work orphaned: jobs are claimed and resumed from
their checkpoint, analyses failed (retryable), uploads discarded. A replica that stops cleanly
removes itself, so its queued jobs are taken at once. With SQLite the process is the only one
(the data folder lock says so): every replica recorded before it is dead from the start, and it
has no heartbeat, since no other process could take or cancel its work.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from agent_training_server.store.base import Store

log = logging.getLogger(__name__)

Beat = Callable[[bool], Awaitable[None]]
"""Called on each heartbeat, with False when the lease had expired (the work may be gone)."""


class ReplicaLease:
    """This process's registration in the store, renewed in the background."""

    def __init__(self, store: Store, replica_id: str, lease_seconds: float, sole: bool) -> None:
        """``sole``: no other process uses the store (SQLite), so none other is alive."""
        self.replica_id = replica_id
        self._store = store
        self._lease_seconds = lease_seconds
        self._sole = sole
        self._beats: list[Beat] = []
        self._task: asyncio.Task[None] | None = None

    @property
    def interval(self) -> float:
        """Seconds between heartbeats: four or more per lease, at most one second apart."""
        return min(1.0, self._lease_seconds / 4)

    def on_beat(self, beat: Beat) -> None:
        """Call ``beat`` after each renewal (in the order registered)."""
        self._beats.append(beat)

    async def register(self, address: str) -> None:
        """Record this replica alive (before it claims or starts any work)."""
        now = time.time()
        await asyncio.to_thread(
            self._store.register_replica,
            self.replica_id,
            address,
            now,
            now + self._lease_seconds,
            self._sole,
        )
        log.info("replica %s registered (lease %.0f s)", self.replica_id, self._lease_seconds)

    def start(self) -> None:
        """Start the heartbeat; the sole process of a store needs none (and writes nothing)."""
        if not self._sole:
            self._task = asyncio.create_task(self._beat_forever())

    async def beat(self) -> None:
        """Renew the lease now and run the heartbeat's callbacks."""
        now = time.time()
        renewed = await asyncio.to_thread(
            self._store.renew_replica, self.replica_id, now, now + self._lease_seconds
        )
        if not renewed:
            log.error(
                "replica %s: its lease had expired (no renewal for %.0f s): other replicas may"
                " have taken its work",
                self.replica_id,
                self._lease_seconds,
            )
        for beat in self._beats:
            await beat(renewed)

    async def _beat_forever(self) -> None:
        failing = False
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.beat()
            except Exception as error:  # the database away: the next beat tries again
                if not failing:  # once per outage, not every second
                    log.warning("replica %s: heartbeat failed: %s", self.replica_id, error)
                failing = True
            else:
                if failing:
                    log.info("replica %s: heartbeat renewed again", self.replica_id)
                failing = False

    async def stop(self) -> None:
        """Stop the heartbeat and remove the replica: what it still owns is orphaned at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):  # the database away: the lease runs out instead
            await asyncio.to_thread(self._store.remove_replica, self.replica_id)
