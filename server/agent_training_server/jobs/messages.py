"""What executors report about the tasks they run: one frozen dataclass per kind of message.

Workers (jobs/worker.py), the local pool (jobs/pool.py) and Ray's mailboxes (jobs/ray_train.py)
produce them; the job manager (services/jobs.py) consumes them with a ``match`` that covers every
kind. They cross process boundaries, so every field is a plain picklable value.

``task_id`` is a training job's ``training_id``, or the id of a work task (jobs/work.py): heavy
work of other RPCs that runs in the same workers.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from agent_training_server.engines.base import Progress

PREEMPT = "*preempt*"
"""Control message to a worker (and mark in its cancelled set) meaning: the server is shutting
down; checkpoint the running job where it is and stop it, to be resumed at the next start."""


@dataclasses.dataclass(frozen=True)
class Ready:
    """A local worker process finished starting and takes tasks."""

    worker: int


@dataclasses.dataclass(frozen=True)
class Started:
    """A worker took the task and began it."""

    task_id: str
    worker: int


@dataclasses.dataclass(frozen=True)
class Progressed:
    """A training engine's progress report (sent at most every PROGRESS_INTERVAL_SECONDS)."""

    task_id: str
    update: Progress


@dataclasses.dataclass(frozen=True)
class WorkProgressed:
    """A work task's progress: its phase, items done of items in all, and percent complete."""

    task_id: str
    phase: str
    done: int
    total: int
    percent: float


@dataclasses.dataclass(frozen=True)
class Trained:
    """What a successful training job left in ``<workdir>/artifact``, described."""

    metrics: dict[str, float]
    outputs: list[str]
    encoder: dict[str, Any]
    size_bytes: int
    parameter_count: int
    device: str = "cpu"
    """Where the engine trained: ``cpu`` or ``cuda:N``."""
    precision: str = "float32"
    """The arithmetic it trained in: ``float32``, ``bfloat16`` or ``float16`` (mixed)."""


@dataclasses.dataclass(frozen=True)
class Succeeded:
    """A training job ended with its artifact written."""

    task_id: str
    result: Trained


@dataclasses.dataclass(frozen=True)
class Returned:
    """A work task's function returned ``value``."""

    task_id: str
    value: Any


@dataclasses.dataclass(frozen=True)
class Raised:
    """A work task's function raised ``error``, to be raised again in the RPC process.

    A ServiceError or OSError as it was (exceptions pickle with their attributes); anything
    else as a WorkFailed naming it, its traceback logged by the worker.
    """

    task_id: str
    error: Exception


@dataclasses.dataclass(frozen=True)
class Failed:
    """A training job ended with an error: a job error dict (code, message, hint, retryable)."""

    task_id: str
    error: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Cancelled:
    """The task stopped because it was cancelled."""

    task_id: str


@dataclasses.dataclass(frozen=True)
class Preempted:
    """The task checkpointed and stopped for a shutdown; a training job resumes at next start."""

    task_id: str


@dataclasses.dataclass(frozen=True)
class WorkerLost:
    """The process running the task died (sent by the pool or the Ray executor, not a worker).

    Without an ``error`` (the local pool) only the process died: the job manager resumes a job
    from its checkpoint elsewhere. With one (Ray, which has retried already) the task ends
    FAILED with it.
    """

    task_id: str
    worker: int | None = None
    exit_code: int | None = None
    error: dict[str, Any] | None = None


Outcome = Succeeded | Returned | Raised | Failed | Cancelled | Preempted
"""What a worker sends last for a task: the worker is free afterwards."""
Message = Ready | Started | Progressed | WorkProgressed | Outcome | WorkerLost
"""Everything an executor delivers."""
ENDED = (Succeeded, Returned, Raised, Failed, Cancelled, Preempted, WorkerLost)
"""Message classes after which nothing runs the task any more (for ``isinstance``)."""
