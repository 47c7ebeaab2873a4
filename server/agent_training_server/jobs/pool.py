"""A pool of long-lived training worker processes, bridged to the server's event loop.

Each worker has its own three pipes: tasks out, a control pipe (cancel, preempt) out, and messages
back. None is shared, because a process killed inside an operation on a shared
``multiprocessing.Queue`` leaves the queue's lock held forever: an idle worker killed while
blocked reading the task queue would stop every later job of every worker. A dead worker's pipes
go with it; its replacement gets new ones.

One thread waits on every worker's message pipe and process sentinel at once, so a worker that
dies is noticed at once (no polling): what it sent before it died is delivered first, then the
job it was handed is reported "worker_lost" (the job manager resumes it from its checkpoint, see
services/jobs.py) and the worker is replaced.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.connection
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from agent_training_server import devices
from agent_training_server.jobs.messages import (
    ENDED,
    PREEMPT,
    Cancelled,
    Message,
    Ready,
    WorkerLost,
)
from agent_training_server.jobs.worker import Task, worker_main

log = logging.getLogger(__name__)

WATCHER_EXIT_SECONDS = 10.0
"""How long stop() waits for the watcher thread, which ends within a second of the last worker."""

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


@dataclasses.dataclass(eq=False)
class _Worker:
    """One worker process and the server's ends of its pipes."""

    index: int
    process: Any
    tasks: multiprocessing.connection.Connection
    control: multiprocessing.connection.Connection
    messages: multiprocessing.connection.Connection
    task_id: str | None = None
    """The task handed to it, until it reports the task's end or dies (event-loop state)."""
    ready: bool = False
    """It has reported Ready: its imports are done and it reads its pipes."""

    def send(self, pipe: multiprocessing.connection.Connection, value: Any) -> bool:
        """Send on one of its pipes; False when it is dead (its end of the pipe closed)."""
        try:
            pipe.send(value)
        except OSError:
            return False
        return True


class WorkerPool:
    """N worker processes running training jobs and work tasks."""

    name = "local"

    def __init__(
        self,
        size: int,
        torch_threads: int,
        log_level: str = "INFO",
        log_format: str = "json",
        niceness: int = 0,
        device: str = "cpu",
    ) -> None:
        self._size = size
        self._device = device
        self._torch_threads = torch_threads
        self._niceness = niceness
        self._log_settings = (log_level, log_format)
        self._context = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._lock = threading.Lock()
        """Guards ``_workers`` against the watcher thread replacing one."""
        self._waiting: collections.deque[Task] = collections.deque()
        """Tasks submitted while no worker was free (a replacement not yet up)."""
        self._stopping = False
        self._preempting = False
        self._on_message: Callable[[Message], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: threading.Thread | None = None

    @property
    def size(self) -> int:
        """Number of worker processes."""
        return self._size

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Start the workers; ``on_message`` is called on the current event loop per message."""
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        self._workers = [self._spawn(index) for index in range(self._size)]
        self._watcher = threading.Thread(target=self._watch, name="worker-watch", daemon=True)
        self._watcher.start()

    def cuda_devices(self) -> int:
        """CUDA GPUs the workers see: those of this machine (imports torch; call off the loop).

        Workers inherit this process's environment (CUDA_VISIBLE_DEVICES included), so they see
        the GPUs it sees.
        """
        return devices.cuda_device_count()

    def _spawn(self, index: int) -> _Worker:
        task_reader, task_writer = self._context.Pipe(duplex=False)
        control_reader, control_writer = self._context.Pipe(duplex=False)
        message_reader, message_writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(
                index,
                task_reader,
                message_writer,
                control_reader,
                self._torch_threads,
                self._log_settings,
                self._niceness,
                self._device,
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
        # The child has its ends now. Closing ours makes its death read as the end of its pipes.
        for child_end in (task_reader, control_reader, message_writer):
            child_end.close()
        worker = _Worker(index, process, task_writer, control_writer, message_reader)
        if self._preempting:
            worker.send(worker.control, PREEMPT)
        return worker

    def submit(self, task: Task) -> None:
        """Hand a task to a free worker (the caller keeps at most ``size`` in flight)."""
        self._waiting.append(task)
        self._hand_out()

    def _hand_out(self) -> None:
        """Give waiting tasks to free workers (on the event loop)."""
        with self._lock:
            free = [worker for worker in self._workers if worker.task_id is None]
        while self._waiting and free:
            worker, task = free.pop(0), self._waiting.popleft()
            worker.task_id = task.task_id
            # In a thread: a large task must not hold the event loop while the worker reads it.
            # A worker that died a moment ago fails the send; its death, reported next, then
            # reports this job lost like any job of a dead worker.
            assert self._loop is not None
            self._loop.run_in_executor(None, worker.send, worker.tasks, task)

    def cancel(self, task_id: str) -> None:
        """Ask the worker running a task to stop it at its next step."""
        if any(task.task_id == task_id for task in self._waiting):
            # Not handed out yet: each worker forgets a cancelled id when its task ends.
            self._waiting = collections.deque(
                task for task in self._waiting if task.task_id != task_id
            )
            assert self._on_message is not None
            self._on_message(Cancelled(task_id))
            return
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if worker.task_id == task_id:
                worker.send(worker.control, task_id)

    def preempt(self) -> bool:
        """Ask every worker to checkpoint its job where it is and stop it (shutdown).

        Each such job reports "preempted"; so does any task a worker takes after this.
        Returns True: running jobs will report.
        """
        self._preempting = True
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            worker.send(worker.control, PREEMPT)
        return True

    # The watcher thread --------------------------------------------------------------------

    def _watch(self) -> None:
        """Deliver every worker's messages; notice and replace a worker that dies."""
        while True:
            with self._lock:
                workers = list(self._workers)
            if self._stopping and not any(worker.process.is_alive() for worker in workers):
                return
            by_handle: dict[Any, tuple[_Worker, bool]] = {}
            for worker in workers:
                if self._stopping and worker.messages.closed and not worker.process.is_alive():
                    continue  # stopped and drained: its sentinel would fire at every wait
                if not worker.messages.closed:
                    by_handle[worker.messages] = (worker, False)
                by_handle[worker.process.sentinel] = (worker, True)
            for handle in multiprocessing.connection.wait(list(by_handle), timeout=1.0):
                worker, died = by_handle[handle]
                if died:
                    self._drain(worker)
                    self._replace(worker)
                else:
                    self._receive(worker)

    def _receive(self, worker: _Worker) -> None:
        try:
            message = worker.messages.recv()
        except (EOFError, OSError):
            worker.messages.close()  # it exited, or is exiting: its sentinel follows
            return
        except Exception:  # a message cut short by the sender's death
            log.warning("training worker %d sent an unreadable message", worker.index)
            return
        if isinstance(message, Ready):
            worker.ready = True
        self._schedule(self._deliver, worker, message)

    def _drain(self, worker: _Worker) -> None:
        """Deliver what a dead worker sent before it died, in order."""
        while not worker.messages.closed and worker.messages.poll(0):
            self._receive(worker)
        if not worker.messages.closed:
            worker.messages.close()

    def _replace(self, worker: _Worker) -> None:
        worker.process.join(5)  # its sentinel closes just before it can be reaped
        exit_code = worker.process.exitcode
        for pipe in (worker.tasks, worker.control):
            pipe.close()
        if self._stopping:
            return
        log.error("training worker %d exited (code %s); restarting it", worker.index, exit_code)
        replacement = self._spawn(worker.index)
        with self._lock:
            self._workers[worker.index] = replacement
        self._schedule(self._report_lost, worker, exit_code)

    def _schedule(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: the server is gone
            self._loop.call_soon_threadsafe(callback, *args)

    # On the event loop ---------------------------------------------------------------------

    def _deliver(self, worker: _Worker, message: Message) -> None:
        if isinstance(message, ENDED) and worker.task_id == message.task_id:
            worker.task_id = None
        assert self._on_message is not None
        self._on_message(message)
        if worker.task_id is None:
            self._hand_out()

    def _report_lost(self, worker: _Worker, exit_code: int | None) -> None:
        """Report the task that ``worker`` was handed when it died, then hand out waiting work."""
        task_id, worker.task_id = worker.task_id, None
        if task_id is not None:
            assert self._on_message is not None
            self._on_message(WorkerLost(task_id, worker=worker.index, exit_code=exit_code))
        self._hand_out()

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the workers; those still busy after ``timeout`` are terminated.

        A killed job loses the steps since its last checkpoint: it stays RUNNING in the store and
        resumes from that checkpoint at the next start.
        """
        self._stopping = True
        with self._lock:
            workers = list(self._workers)
        for worker in workers:
            if not worker.ready and worker.task_id is None:
                # Still importing torch (seconds): it holds nothing, and would read the stop
                # only once its imports are done. A server stopped just after it started (a
                # failed start, a test) ends at once rather than wait for it.
                worker.process.kill()
            worker.send(worker.tasks, None)
            worker.send(worker.control, None)
        deadline = time.monotonic() + timeout
        for worker in workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in workers:
            if worker.process.is_alive():
                worker.process.kill()  # workers ignore SIGTERM (see worker_main)
                worker.process.join()
        # The watcher reaps each worker too (it joins those whose sentinel fires), and a
        # process object is not safe to join from two threads at once: where its join got the
        # exit status first, ours saw none. Once the watcher is done, every exit code is set.
        if self._watcher is not None:
            self._watcher.join(WATCHER_EXIT_SECONDS)
