"""The Ray executor: training jobs as Ray work, behind the same interface as the local pool.

Each job gets a Mailbox actor and a Ray task (jobs/ray_train.py). A thread per running job
long-polls the mailbox and hands the messages to the event loop, so the job manager sees exactly
what local workers send. When the mailbox cannot be reached, the cluster (or the connection to
it) is gone: the job is reported lost, retryable, and the service goes on serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
from collections.abc import Callable
from typing import Any

import ray

from agent_training_server import devices
from agent_training_server.config import ServerConfig
from agent_training_server.jobs.messages import Message, WorkerLost
from agent_training_server.jobs.pool import WORKER_ENVIRONMENT
from agent_training_server.jobs.ray_train import (
    TERMINAL,
    MailboxActor,
    run_parallel_job,
    run_single_job,
)
from agent_training_server.jobs.worker import JobTask, Task

log = logging.getLogger(__name__)

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
FOLLOW_POLL_SECONDS = 10.0
"""Longest wait of one mailbox long poll; between polls the follower checks the job's task."""
CONTACT_GRACE_SECONDS = 60.0
"""How much longer than asked a mailbox may take to answer before the cluster counts as lost
(a new mailbox may wait for a worker process to start on a busy node)."""
PROBE_SECONDS = CONTACT_GRACE_SECONDS
"""How long a new actor may take to answer when checking whether the cluster is still there: as
long as a new mailbox, since it too may wait for a worker process to start. A shorter wait took a
busy node for a lost cluster and refused every later job."""


def unavailable_error(error: BaseException) -> dict[str, Any]:
    """The error of a job whose Ray cluster could not be reached."""
    return {
        "code": "EXECUTOR_UNAVAILABLE",
        "message": f"lost the connection to the Ray cluster ({type(error).__name__})",
        "hint": "Train again once the Ray cluster is reachable; the server's ray_address names it.",
        "retryable": True,
    }


@dataclasses.dataclass
class _RayJob:
    task_id: str
    mailbox: Any
    work: Any
    """ObjectRef of the job's Ray task."""


class RayExecutor:
    """Runs training jobs and work tasks on a Ray cluster (or a Ray started in this process)."""

    name = "ray"

    def __init__(self, config: ServerConfig) -> None:
        self._config = config
        self._jobs: dict[str, _RayJob] = {}
        self._started_ray = False
        self._connected = threading.Event()
        self._stopping = False
        self._on_message: Callable[[Message], None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def size(self) -> int:
        """Jobs in flight at once (``workers``); Ray queues their work by the cluster's room."""
        return self._config.workers

    @property
    def storage_path(self) -> str:
        """Where Ray Train keeps checkpoints of data-parallel jobs (a shared path or URI)."""
        return self._config.ray_storage_path or str((self._config.data_dir / "ray").resolve())

    def start(self, on_message: Callable[[Message], None]) -> None:
        """Connect to Ray (or start it); ``on_message`` is called on the current event loop."""
        self._loop = asyncio.get_running_loop()
        self._on_message = on_message
        if ray.is_initialized():
            # This process is connected already (an application embedding the service, or a
            # test): that connection is theirs to keep, and to restore if it is lost.
            self._connected.set()
            return
        self._connect()

    def _connect(self) -> None:
        # Ray's workers see these: the local workers' settings, and the trace export settings.
        otel = {name: value for name, value in os.environ.items() if name.startswith("OTEL_")}
        runtime_env = {"env_vars": {**WORKER_ENVIRONMENT, **otel}}
        address = self._config.ray_address
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        if address:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(include_dashboard=False, runtime_env=runtime_env, log_to_driver=False)
        self._started_ray = True
        if threading.current_thread() is threading.main_thread():
            # Ray's driver installs its own SIGTERM and SIGINT handlers, which end the process
            # at once; the service's own handlers shut it down gracefully instead.
            for signum, handler in handlers.items():
                signal.signal(signum, handler)
        self._connected.set()
        log.info("ray executor connected: %s", ray.cluster_resources())

    def submit(self, task: Task) -> None:
        """Start the task's Ray work and a thread that follows its mailbox."""
        try:
            # Checked first: a Ray call without a connection would quietly start a new instance.
            if not self._connected.is_set() or not ray.is_initialized():
                raise ConnectionError("not connected to Ray")
            mailbox = MailboxActor.options(name=f"mailbox-{task.task_id}").remote()
            if isinstance(task, JobTask) and task.settings.num_workers > 1:
                work = run_parallel_job.remote(
                    task, mailbox, self.storage_path, self._config.ray_max_failures
                )
            else:
                # Ray retries the task on a lost worker; the engine resumes from its checkpoint.
                work = run_single_job.options(
                    num_cpus=1, num_gpus=_gpus_for(task), max_retries=self._config.ray_max_failures
                ).remote(task, mailbox)
        except Exception as error:  # ray raises many kinds when the cluster is unreachable
            log.error("cannot start task %s on Ray: %r", task.task_id, error)
            self._post(WorkerLost(task.task_id, error=unavailable_error(error)))
            return
        job = _RayJob(task.task_id, mailbox, work)
        self._jobs[task.task_id] = job
        threading.Thread(
            target=self._follow, args=(job,), name=f"ray-{task.task_id}", daemon=True
        ).start()

    def cuda_devices(self) -> int:
        """GPUs of the Ray cluster (its ``GPU`` resource): the most a job can be given."""
        if not self._connected.is_set() or not ray.is_initialized():
            return 0
        return int(ray.cluster_resources().get("GPU", 0))

    def cancel(self, task_id: str) -> None:
        """Ask the task's workers to stop at their next step."""
        job = self._jobs.get(task_id)
        if job is not None:
            try:
                job.mailbox.cancel.remote()
            except Exception as error:  # the follower reports the lost cluster
                log.warning("cannot cancel task %s on Ray: %r", task_id, error)

    def _follow(self, job: _RayJob) -> None:
        try:
            self._relay(job)
        finally:
            self._jobs.pop(job.task_id, None)
            if self._connected.is_set():  # a Ray call when disconnected would start a new Ray
                with contextlib.suppress(Exception):  # gone with the cluster already
                    ray.kill(job.mailbox)

    def _relay(self, job: _RayJob) -> None:
        while not self._stopping:
            try:
                messages = ray.get(
                    job.mailbox.take.remote(FOLLOW_POLL_SECONDS),
                    timeout=FOLLOW_POLL_SECONDS + CONTACT_GRACE_SECONDS,
                )
            except Exception as error:
                self._lost(job, unavailable_error(error), error)
                self._check_connection()
                if self._connected.is_set():  # the work may still run: nobody follows it now
                    with contextlib.suppress(Exception):
                        ray.cancel(job.work, force=True)
                return
            for message in messages:
                self._post(message)
                if isinstance(message, (*TERMINAL, WorkerLost)):
                    return
            if not messages and self._work_ended(job):
                # The work ended without an outcome: its worker died past Ray's retries. Its last
                # messages reached the mailbox before it ended (senders wait), so take them first.
                for message in ray.get(job.mailbox.take.remote(0)):
                    self._post(message)
                    if isinstance(message, TERMINAL):
                        return
                self._lost(job, None, None)
                return

    def _check_connection(self) -> None:
        """After a job lost its mailbox: is the cluster still there?"""
        if self._stopping or not self._connected.is_set():
            return
        try:
            # Ray's stubs type an actor's methods as plain methods, without .remote.
            probe: Any = MailboxActor.remote()
            ray.get(probe.wait_cancelled.remote(0), timeout=PROBE_SECONDS)
            ray.kill(probe)
            return  # only that job's part of the cluster was lost
        except Exception as error:
            log.error("lost the connection to Ray: %r", error)
        # Jobs submitted from now on fail at once rather than wait on a cluster that is gone.
        # No reconnection in-process: Ray's driver state cannot be reset reliably after its
        # node is lost (docs/ray.md); restarting the service reconnects, and jobs resume.
        self._connected.clear()

    def _work_ended(self, job: _RayJob) -> bool:
        ready, _ = ray.wait([job.work], timeout=0)
        return bool(ready)

    def _lost(self, job: _RayJob, error: dict[str, Any] | None, cause: Exception | None) -> None:
        if self._stopping:
            return  # shutting down: the job resumes at the next start
        if error is None:
            try:
                ray.get(job.work)
            except Exception as failure:
                cause = failure
            error = {
                "code": "WORKER_LOST",
                "message": "the Ray worker running the job exited"
                f" ({type(cause).__name__ if cause else 'no outcome'})",
                "hint": "Train again; if it repeats, the data or settings may exhaust the"
                " worker's memory.",
                "retryable": True,
            }
        log.error("task %s lost on Ray: %r", job.task_id, cause)
        self._post(WorkerLost(job.task_id, error=error))

    def _post(self, message: Message) -> None:
        assert self._loop is not None and self._on_message is not None
        with contextlib.suppress(RuntimeError):  # the loop closed: the service stopped
            self._loop.call_soon_threadsafe(self._on_message, message)

    def preempt(self) -> bool:
        """Not supported on Ray (returns False).

        At shutdown Ray jobs stop and resume from their last routine checkpoint (every epoch, or
        every checkpoint_every_steps) at the next start.
        """
        return False

    def stop(self, timeout: float = 1.0) -> None:
        """Stop the jobs' Ray work; they stay RUNNING and resume from checkpoints at next start."""
        self._stopping = True
        for job in list(self._jobs.values()):
            try:
                # force: the work's process ends, and with it the Ray Train run it owns.
                ray.cancel(job.work, force=True)
            except Exception as error:
                log.warning("cannot stop task %s on Ray: %r", job.task_id, error)
        if self._started_ray and self._connected.is_set():
            ray.shutdown()


def _gpus_for(task: Task) -> int:
    """GPUs to reserve for a task: one for a job whose device names CUDA, else none.

    Ray hides the GPUs from a task that reserved none, so a job on ``auto`` trains on the CPU
    there; ``cuda:N`` is the N-th of the GPUs Ray gives the task (it gives one: cuda:0).
    """
    if isinstance(task, JobTask) and devices.names_cuda(task.settings.device):
        return 1
    return 0
