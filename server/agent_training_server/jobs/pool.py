"""A pool of long-lived training worker processes, bridged to the server's event loop.

Tasks go out on one shared queue (a free worker takes the next); messages come back on another
queue, read by a thread that hands them to the event loop. A second thread waits on the workers'
process sentinels, so a worker that dies is noticed at once (no polling) and replaced; the job it
ran is reported "worker_lost" (the job manager resumes it from its checkpoint, see
services/jobs.py).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from agent_training_server.jobs.worker import PREEMPT, JobTask, worker_main

log = logging.getLogger(__name__)

WORKER_ENVIRONMENT = {
    # glibc returns large freed blocks to the OS at once, so every job would page-fault its
    # feature arrays and optimizer state in again. A long-lived training worker keeps them.
    "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
    "MALLOC_TRIM_THRESHOLD_": str(1024 * 1024 * 1024),
    # Weights ship with the packages; nothing may be fetched from a model hub at run time.
    "HF_HUB_OFFLINE": "1",
    # Loading the pretrained encoder must not draw progress bars into the service's log.
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
}

Message = tuple[str, str, dict[str, Any]]
"""(kind, training_id, payload) as sent by workers; kind "worker_lost" comes from the pool."""

_WORKER_EXITED = "*worker-exited*"
"""Kind of the pool's own note, sent through the events queue, that a worker process died."""


class WorkerPool:
    """N worker processes running training tasks."""

    name = "local"

    def __init__(
        self, size: int, torch_threads: int, log_level: str = "INFO", log_format: str = "json"
    ) -> None:
        self._size = size
        self._torch_threads = torch_threads
        self._log_settings = (log_level, log_format)
        self._context = multiprocessing.get_context("spawn")
        self._tasks = self._context.Queue()
        self._events = self._context.Queue()
        self._workers: list[Any] = []
        self._controls: list[Any] = []
        self._running_on: dict[str, int] = {}
        """training_id -> index of the worker running it."""
        self._stopping = False
        self._on_message: Callable[[Message], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return self._size

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Start the workers; ``on_message`` is called on the current event loop per message."""
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        for index in range(self._size):
            self._controls.append(self._context.Queue())
            self._workers.append(self._spawn(index))
        threading.Thread(target=self._read_events, name="worker-events", daemon=True).start()
        threading.Thread(target=self._watch_workers, name="worker-watch", daemon=True).start()

    def _spawn(self, index: int) -> Any:
        process = self._context.Process(
            target=worker_main,
            args=(
                index,
                self._tasks,
                self._events,
                self._controls[index],
                self._torch_threads,
                self._log_settings,
            ),
            name=f"training-worker-{index}",
            daemon=True,
        )
        # A spawned child inherits os.environ as it is at start(); set the worker's on top.
        saved = {name: os.environ.get(name) for name in WORKER_ENVIRONMENT}
        os.environ.update({k: v for k, v in WORKER_ENVIRONMENT.items() if saved[k] is None})
        try:
            process.start()
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
        return process

    def submit(self, task: JobTask) -> None:
        """Hand a task to the next free worker (the caller keeps at most ``size`` in flight)."""
        self._tasks.put(task)

    def cancel(self, training_id: str) -> None:
        """Ask the worker running a job to stop it at its next step."""
        index = self._running_on.get(training_id)
        targets = [index] if index is not None else range(len(self._controls))
        for target in targets:
            self._controls[target].put(training_id)

    def preempt(self) -> bool:
        """Ask every worker to checkpoint its job where it is and stop it (shutdown).

        Each such job reports "preempted"; so does any task a worker takes after this.
        Returns True: running jobs will report.
        """
        for control in self._controls:
            control.put(PREEMPT)
        return True

    def _deliver(self, message: Message) -> None:
        kind, training_id, payload = message
        if kind == _WORKER_EXITED:
            self._report_lost(payload["worker"], payload["exit_code"])
            return
        if kind == "started":
            self._running_on[training_id] = payload["worker"]
        elif kind in ("succeeded", "failed", "cancelled", "preempted"):
            self._running_on.pop(training_id, None)
        assert self._on_message is not None
        self._on_message(message)

    def _read_events(self) -> None:
        while True:
            try:
                message = self._events.get()
            except (EOFError, OSError):
                return
            if message is None:
                return
            assert self._loop is not None
            self._loop.call_soon_threadsafe(self._deliver, message)

    def _watch_workers(self) -> None:
        while not self._stopping:
            sentinels = {process.sentinel: index for index, process in enumerate(self._workers)}
            ready = multiprocessing.connection.wait(list(sentinels), timeout=None)
            if self._stopping:
                return
            for sentinel in ready:
                index = sentinels[sentinel]
                self._workers[index].join(5)  # its sentinel closes just before it can be reaped
                exit_code = self._workers[index].exitcode
                log.error("training worker %d exited (code %s); restarting it", index, exit_code)
                self._workers[index] = self._spawn(index)
                # Through the events queue, behind whatever the dead worker sent before it died:
                # the job it ran is known once its "started" is delivered, and a late "progress"
                # of the dead worker cannot arrive after the job was handed to another worker.
                self._events.put(
                    (_WORKER_EXITED, str(index), {"worker": index, "exit_code": exit_code})
                )

    def _report_lost(self, index: int, exit_code: int | None) -> None:
        """Report the job that worker ``index`` ran when it died (on the event loop)."""
        lost = [tid for tid, worker in self._running_on.items() if worker == index]
        for training_id in lost:
            del self._running_on[training_id]
            assert self._on_message is not None
            self._on_message(
                ("worker_lost", training_id, {"worker": index, "exit_code": exit_code})
            )

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the workers; those still busy after ``timeout`` are terminated.

        A killed job loses the steps since its last checkpoint: it stays RUNNING in the store and
        resumes from that checkpoint at the next start.
        """
        self._stopping = True
        for _ in self._workers:
            self._tasks.put(None)
        for control in self._controls:
            control.put(None)
        deadline = time.monotonic() + timeout
        for process in self._workers:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in self._workers:
            if process.is_alive():
                process.kill()  # workers ignore SIGTERM (see worker_main)
                process.join()
        self._events.put(None)
