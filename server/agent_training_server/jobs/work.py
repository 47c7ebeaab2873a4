"""Work tasks: heavy work of an RPC (retraining, policy fitting) run in a training worker.

The RPC process serves; CPU-bound work in it would slow every other call through the GIL. So
AnalyzeAndOptimize's retrainings and AdaptAgentBehavior's policy training are handed to the same
executor as training jobs, as a ``WorkTask``: a module-level function (pickled by reference) and
its picklable arguments. The worker runs it and sends back its value (``Returned``), the
exception it raised (``Raised``) or ``Cancelled``; ``WorkProgressed`` reports on the way.

Inside the worker the function sees the same cancellation as in a thread of the RPC process
(``cancellation.raise_if_cancelled`` and ``call_cancelled``): the call's end is relayed as a
cancel of the task, so the code that runs there needs no change to stop early.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import logging
import threading
import traceback
from collections.abc import Callable, Container
from typing import Any, Protocol

from agent_training_server.cancellation import CallCancelled, begin_call
from agent_training_server.engines.base import TrainingCancelled
from agent_training_server.errors import ServiceError
from agent_training_server.jobs.messages import (
    PREEMPT,
    Cancelled,
    Message,
    Preempted,
    Raised,
    Returned,
    WorkProgressed,
)

log = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.05
"""How often a running work task looks for its cancel (a set lookup)."""

Progress = Callable[[str, int, int, float], None]
"""progress(phase, done, total, percent): how a work function reports."""


class Events(Protocol):
    """Where a worker sends its messages (a pipe, or a Ray mailbox)."""

    def put(self, message: Message) -> None:
        """Send one message."""


class WorkRunner(Protocol):
    """Where services send heavy work: the job manager (workers), or InThread."""

    async def run_work(
        self, function: Callable[..., Any], *arguments: Any, progress: Progress | None = None
    ) -> Any:
        """Run ``function(*arguments, progress=progress)``; return its value or raise its error."""


class InThread:
    """A WorkRunner that runs the work in a thread of this process (no executor at hand).

    The call's cancellation reaches the thread through the copied context (cancellation.py).
    """

    async def run_work(
        self, function: Callable[..., Any], *arguments: Any, progress: Progress | None = None
    ) -> Any:
        """Run ``function(*arguments, progress=progress)`` in a thread."""
        return await asyncio.to_thread(function, *arguments, progress=progress)


@dataclasses.dataclass(frozen=True)
class WorkTask:
    """One piece of heavy work for a worker: ``function(*arguments, progress=...)``."""

    task_id: str
    function: Callable[..., Any]
    """A module-level function (pickled by reference, so the worker imports its module)."""
    arguments: tuple[Any, ...]
    """Plain picklable values: dataclasses, lists, paths; never a gRPC or store object."""


def run_work(task: WorkTask, events: Events, cancelled: Container[str]) -> None:
    """Run one work task in this worker and send its outcome (the last message for it)."""

    def progress(phase: str, done: int, total: int, percent: float) -> None:
        events.put(WorkProgressed(task.task_id, phase, done, total, percent))

    outcome = _run(task, progress, cancelled)
    if isinstance(cancelled, set):  # a worker's set outlives the task; forget its id
        cancelled.discard(task.task_id)
    events.put(outcome)


def _run(
    task: WorkTask, progress: Progress, cancelled: Container[str]
) -> Returned | Raised | Cancelled | Preempted:
    finished = threading.Event()

    def call() -> Any:
        ended = begin_call()  # in this task's own context: its code checks this event
        threading.Thread(
            target=_relay_cancel, args=(task.task_id, cancelled, ended, finished), daemon=True
        ).start()
        return task.function(*task.arguments, progress=progress)

    try:
        return Returned(task.task_id, contextvars.copy_context().run(call))
    except (CallCancelled, TrainingCancelled):
        if PREEMPT in cancelled and task.task_id not in cancelled:
            return Preempted(task.task_id)
        return Cancelled(task.task_id)
    except (ServiceError, OSError) as error:
        # Raised again as itself in the RPC process: the caller sees what a thread would give.
        return Raised(task.task_id, error)
    except Exception as error:
        log.error("work task %s failed:\n%s", task.task_id, traceback.format_exc())
        return Raised(task.task_id, WorkFailed(f"{type(error).__name__}: {error}"))
    finally:
        finished.set()


def _relay_cancel(
    task_id: str, cancelled: Container[str], ended: threading.Event, finished: threading.Event
) -> None:
    """Set the task's call event once the server cancels the task (or the worker is preempted)."""
    while not finished.wait(CANCEL_POLL_SECONDS):
        if task_id in cancelled or PREEMPT in cancelled:
            ended.set()
            return


class WorkFailed(Exception):
    """A work task failed unexpectedly in its worker (logged there, with its traceback).

    The error translator answers it INTERNAL, as any unexpected error of the RPC process.
    """
