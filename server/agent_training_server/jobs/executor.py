"""What runs training jobs: the interface the job manager sees, and the factory that picks one.

Two implementations: the local pool of worker processes (jobs/pool.py, the default) and Ray
(jobs/ray_executor.py, with the ``ray`` extra installed). Both run training jobs (``JobTask``) and
work tasks of other RPCs (``WorkTask``, jobs/work.py), and report the same messages
(jobs/messages.py: ``Started``, ``Progressed``, ``Succeeded``, ``Failed``, ``WorkerLost``...),
delivered on the event loop that called ``start``.

A ``WorkerLost`` without an ``error`` (the local pool) means only that the process running the
task died: the job manager resumes a job from its checkpoint in another worker, a bounded number
of times. One with an ``error`` (Ray, which retries lost work itself) ends the job FAILED with
that error.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Protocol

from agent_training_server.config import ServerConfig
from agent_training_server.jobs.messages import Message
from agent_training_server.jobs.pool import WorkerPool
from agent_training_server.jobs.worker import Task


class Executor(Protocol):
    """Runs training jobs and work tasks and reports their messages back to the event loop."""

    name: str
    """Recorded on every job it runs ("local" or "ray")."""

    @property
    def size(self) -> int:
        """Jobs it runs at once; the manager keeps at most this many in flight."""

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Start; ``on_message`` is called on the current event loop per message."""

    def submit(self, task: Task) -> None:
        """Start a task (the caller keeps at most ``size`` in flight)."""

    def cancel(self, task_id: str) -> None:
        """Ask a running task to stop at its next step; it then reports ``Cancelled``."""

    def preempt(self) -> bool:
        """Ask running jobs to checkpoint where they are and report ``Preempted`` (shutdown).

        Returns whether they will report; False when the executor cannot preempt (its jobs then
        resume from their last routine checkpoint).
        """

    def stop(self, timeout: float = 1.0) -> None:
        """Stop running jobs within ``timeout``; they resume from checkpoints at the next start."""

    def cuda_devices(self) -> int:
        """CUDA GPUs a job can be given (blocking: may import torch or ask the cluster)."""


def create_executor(config: ServerConfig) -> Executor:
    """The executor ``config.executor`` names."""
    if config.executor == "ray":
        try:
            from agent_training_server.jobs.ray_executor import RayExecutor
        except ImportError as error:
            raise ValueError(
                f"executor ray needs Ray ({error}): pip install 'agent-training[ray]'"
            ) from error
        return RayExecutor(config)
    return WorkerPool(
        config.workers,
        torch_threads(config),
        config.log_level,
        config.log_format,
        niceness=config.worker_niceness,
        device=config.device,
    )


def torch_threads(config: ServerConfig) -> int:
    """Threads per local worker: the configured number, or the cores shared among workers."""
    if config.torch_threads:
        return config.torch_threads
    return max(1, (os.cpu_count() or 1) // config.workers)
