"""Analysis jobs: analyses of large evaluation sets, run in the background, kept with the result.

A client starts one with AnalyzeAndOptimizeStream and may go away: the analysis goes on, and
WatchAnalysisJob re-attaches (latest progress, live progress, then the result) while
GetAnalysisJob reads its state at any time. The job is stored when it starts and when it ends;
progress lives in memory. A restart cannot resume an analysis half-way (it holds no checkpoint
worth keeping: running it again costs what resuming would), so the jobs a stopped server left
RUNNING are marked FAILED with a retryable error: at the next start, or, among replicas sharing
a database, by any replica once the lease of the one running it has run out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from agent_training_server import errors
from agent_training_server.cancellation import outside_call
from agent_training_server.domain import AnalysisJob, AnalysisStatus
from agent_training_server.errors import ResourceExhausted, ServiceError
from agent_training_server.services.agents import new_id
from agent_training_server.store.base import IdempotencyKey, Store
from agent_training_server.telemetry import current_trace_id

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int, float], None]
"""progress(phase, examples_done, examples_total, percent_complete), callable from any thread."""
Analysis = Callable[[Progress], Awaitable[bytes]]
"""Runs the analysis, reporting progress; returns the serialised result."""

INTERRUPTED = {
    "code": "ANALYSIS_INTERRUPTED",
    "message": "the server running the analysis stopped before it ended",
    "hint": "Start the analysis again with AnalyzeAndOptimizeStream.",
    "retryable": True,
    "kind": "Unavailable",
}

_ERROR_KINDS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, ServiceError)
}


@dataclasses.dataclass
class _Running:
    """A job being worked on: its latest state and who is watching."""

    job: AnalysisJob
    subscribers: set[asyncio.Queue[AnalysisJob]] = dataclasses.field(default_factory=set)
    task: asyncio.Task[None] | None = None


class AnalysisJobs:
    """Starts, runs, stores and serves analysis jobs."""

    def __init__(
        self, store: Store, max_running: int, owner: str = "", poll_seconds: float = 1.0
    ) -> None:
        """Run at most ``max_running`` analyses in this process, recorded as ``owner``'s.

        ``poll_seconds``: how often a watcher of an analysis another replica runs reads it.
        """
        self._store = store
        self._max_running = max_running
        self._owner = owner
        self._poll_seconds = poll_seconds
        self._running: dict[str, _Running] = {}

    async def fail_orphaned(self, _renewed: bool = True) -> None:
        """Mark RUNNING analyses of stopped servers (replicas) as interrupted (retryable)."""
        count = await asyncio.to_thread(
            self._store.fail_orphaned_analyses, INTERRUPTED, time.time()
        )
        if count:
            log.info("%d analysis jobs of a stopped server were marked interrupted", count)

    async def stop(self) -> None:
        """Stop running analyses; they are stored as interrupted."""
        for running in list(self._running.values()):
            if running.task is not None:
                running.task.cancel()
        tasks = [r.task for r in self._running.values() if r.task is not None]
        await asyncio.gather(*tasks, return_exceptions=True)

    async def start(
        self, agent_id: str, analysis: Analysis, key: IdempotencyKey | None = None
    ) -> AnalysisJob:
        """Store a job and start ``analysis`` in the background (a same-key retry re-attaches)."""
        if len(self._running) >= self._max_running:
            raise ResourceExhausted(
                f"{len(self._running)} analysis jobs are running, the most this server runs",
                code="TOO_MANY_ANALYSES",
                hint="Retry after the RetryInfo delay, or watch a running one to its end.",
                retryable=True,
                retry_after_seconds=30.0,
            )
        job = AnalysisJob(
            analysis_id=new_id("analysis"),
            agent_id=agent_id,
            create_time=time.time(),
            trace_id=current_trace_id(),
        )
        stored, replayed = await asyncio.to_thread(
            self._store.create_analysis, job, key, self._owner
        )
        if replayed:
            return stored
        running = _Running(stored)
        self._running[job.analysis_id] = running
        # Outside the call's cancellation: the job goes on when the client that started it leaves.
        running.task = asyncio.create_task(self._run(running, analysis), context=outside_call())
        return stored

    async def _run(self, running: _Running, analysis: Analysis) -> None:
        loop = asyncio.get_running_loop()

        def progress(phase: str, done: int, total: int, percent: float) -> None:
            update = {
                "phase": phase,
                "examples_done": done,
                "examples_total": total,
                "percent_complete": round(percent, 1),
            }
            loop.call_soon_threadsafe(self._publish, running, update)

        try:
            result = await analysis(progress)
            ended = dataclasses.replace(
                running.job, status=AnalysisStatus.SUCCEEDED, result=result, end_time=time.time()
            )
        except asyncio.CancelledError:
            ended = self._failed(running.job, INTERRUPTED)
        except ServiceError as error:
            ended = self._failed(running.job, _error_dict(error))
        except Exception:
            log.exception("analysis %s failed", running.job.analysis_id)
            ended = self._failed(
                running.job,
                {
                    "code": "ANALYSIS_ERROR",
                    "message": "the analysis failed unexpectedly",
                    "hint": "Retry; if it persists, report the trace_id.",
                    "retryable": True,
                    "kind": "Internal",
                },
            )
        try:
            await asyncio.shield(asyncio.to_thread(self._store.finish_analysis, ended))
        finally:
            self._running.pop(ended.analysis_id, None)
            running.job = ended
            for subscriber in running.subscribers:
                subscriber.put_nowait(ended)

    @staticmethod
    def _failed(job: AnalysisJob, error: dict[str, Any]) -> AnalysisJob:
        return dataclasses.replace(
            job, status=AnalysisStatus.FAILED, error=error, end_time=time.time()
        )

    def _publish(self, running: _Running, update: dict[str, Any]) -> None:
        if running.job.status != AnalysisStatus.RUNNING:
            return  # a late report from the analysis thread
        running.job = dataclasses.replace(running.job, progress=update)
        for subscriber in running.subscribers:
            subscriber.put_nowait(running.job)

    async def get(self, analysis_id: str, tenant: str | None = None) -> AnalysisJob:
        """Return a job (of ``tenant``'s agents) with its latest progress. Raises NotFound.

        The store is read even for a running job, so another tenant's is a row not found on the
        same path as a missing id.
        """
        stored = await asyncio.to_thread(self._store.get_analysis, analysis_id, tenant)
        running = self._running.get(analysis_id)
        return stored if running is None else running.job

    async def watch(self, analysis_id: str) -> AsyncIterator[AnalysisJob]:
        """Yield the job's state now, at each progress report, and at its end (last).

        A job that failed is yielded like any other; callers turn its error into theirs.
        """
        running = self._running.get(analysis_id)
        if running is None:
            async for state in self._watch_stored(analysis_id):
                yield state
            return
        inbox: asyncio.Queue[AnalysisJob] = asyncio.Queue()
        running.subscribers.add(inbox)
        try:
            state = running.job
            while True:
                yield state
                if state.status != AnalysisStatus.RUNNING:
                    return
                state = await inbox.get()
        finally:
            running.subscribers.discard(inbox)

    async def _watch_stored(self, analysis_id: str) -> AsyncIterator[AnalysisJob]:
        """The stored state of an analysis this process does not run, until it ends.

        Another replica runs it (or ran it): its row changes only at the end, when that replica
        stores the result or a live replica marks it interrupted, so it is read again every
        ``poll_seconds``.
        """
        state = await asyncio.to_thread(self._store.get_analysis, analysis_id)
        yield state
        while state.status == AnalysisStatus.RUNNING:
            await asyncio.sleep(self._poll_seconds)
            state = await asyncio.to_thread(self._store.get_analysis, analysis_id)
            if state.status != AnalysisStatus.RUNNING:
                yield state


def _error_dict(error: ServiceError) -> dict[str, Any]:
    return {
        "code": error.code,
        "message": error.message,
        "hint": error.hint,
        "retryable": error.retryable,
        "kind": type(error).__name__,
    }


def error_of(job: AnalysisJob) -> ServiceError:
    """The error a FAILED job ended with, as the exception a caller receives."""
    kind = _ERROR_KINDS.get(job.error.get("kind", ""), errors.Internal)
    return kind(
        job.error.get("message", "the analysis failed"),
        code=job.error.get("code"),
        hint=job.error.get("hint"),
        retryable=job.error.get("retryable"),
    )
