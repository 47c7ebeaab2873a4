"""Training jobs as Ray work: the code that runs on the cluster (imported by Ray's workers).

A job talks to the service through its Mailbox actor: the work puts messages in, the service
takes them out (a long poll, so a message arrives as soon as it is put) and puts in a cancel
request. The work itself is the local workers' ``run_task`` with the same engines:

- one worker: a Ray task; Ray retries it on a lost worker, and the engine resumes from the
  checkpoint in the job's folder;
- ``num_workers`` > 1: a Ray Train TorchTrainer whose workers each train a share of every
  epoch; rank 0 speaks for the job, its checkpoints go to Ray Train's storage, and Ray Train
  restarts a failed worker group from the last of them (FailureConfig). A job whose device names
  CUDA gets one GPU per worker and trains on it, its GPU tensors reduced by NCCL; the rest
  (every tensor of a CPU job, and a GPU job's CPU ones) by gloo.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import ray
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from agent_training_server import devices
from agent_training_server.engines.base import TrainingTimedOut
from agent_training_server.engines.checkpoint import FILE_NAME
from agent_training_server.engines.parallel import DataParallel
from agent_training_server.jobs.messages import (
    Cancelled,
    Failed,
    Message,
    Raised,
    Returned,
    Started,
    Succeeded,
    WorkerLost,
)
from agent_training_server.jobs.worker import JobTask, Task, run_any, run_task
from agent_training_server.telemetry import create_tracer_provider

TERMINAL = (Succeeded, Returned, Raised, Failed, Cancelled)
"""Outcomes a task's work sends last (Ray jobs are never preempted: see RayExecutor.preempt)."""
CANCEL_POLL_SECONDS = 30.0
"""Longest wait of one cancel long poll (a new one starts at once)."""
NO_DEADLINE_SECONDS = 10 * 365 * 86400.0
"""Data-parallel engines get this as their own limit: the job's limit is checked collectively."""
GPU_BACKEND = "cpu:gloo,cuda:nccl"
"""torch.distributed backends of a data-parallel job on GPUs, chosen by each tensor's device: the
encoder's gradients and the supervised engine's (dense there: NCCL has no sparse all-reduce) are
on the GPU, the step flags (CollectiveSteps) and transfer's n-gram companion, which trains on the
CPU, are not."""


class Mailbox:
    """One job's messages on their way to the service, and its cancel request."""

    def __init__(self) -> None:
        self._messages: collections.deque[Message] = collections.deque()
        self._arrived = asyncio.Event()
        self._cancelled = asyncio.Event()

    async def put(self, message: Message) -> None:
        """Add a message (senders wait for this call, which keeps their messages in order)."""
        self._messages.append(message)
        self._arrived.set()

    async def take(self, timeout: float) -> list[Message]:
        """Every waiting message, after waiting up to ``timeout`` seconds for the first."""
        if not self._messages and timeout > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), timeout)
        batch = list(self._messages)
        self._messages.clear()
        self._arrived.clear()
        return batch

    async def cancel(self) -> None:
        """Ask the job to stop."""
        self._cancelled.set()

    async def wait_cancelled(self, timeout: float) -> bool:
        """Whether the job was cancelled, answered at once when it is or after ``timeout``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._cancelled.wait(), timeout)
        return self._cancelled.is_set()


MailboxActor = ray.remote(num_cpus=0)(Mailbox)
"""Mailbox as a Ray actor class (applied here, not as a decorator, so that type checkers see it)."""


class MailboxEvents:
    """The ``events`` queue of run_task, on a Mailbox."""

    def __init__(self, mailbox: Any) -> None:
        self._mailbox = mailbox

    def put(self, message: Message) -> None:
        """Deliver one message, waiting for the mailbox so messages keep their order."""
        ray.get(self._mailbox.put.remote(message))


class CancelWatch:
    """The ``cancelled`` container of run_task: true once the service asked to cancel the job.

    A thread long-polls the mailbox, so each step's check is a plain attribute read.
    """

    def __init__(self, mailbox: Any) -> None:
        self._mailbox = mailbox
        self._cancelled = False
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="cancel-watch", daemon=True).start()

    def _watch(self) -> None:
        while not self._done.is_set() and not self._cancelled:
            try:
                self._cancelled = ray.get(self._mailbox.wait_cancelled.remote(CANCEL_POLL_SECONDS))
            except ray.exceptions.RayError:
                return  # the mailbox is gone: the service no longer follows this job
        return

    def __contains__(self, _training_id: object) -> bool:
        return self._cancelled

    def close(self) -> None:
        """Stop watching (the thread ends after its current poll)."""
        self._done.set()


def _export_spans_like_the_service() -> None:
    """Once per Ray worker process: send the job's spans where the service sends its own.

    The OTEL_* variables come from the executor; the task carries the request's trace context.
    """
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        trace.set_tracer_provider(create_tracer_provider())


@ray.remote(max_retries=0)
def run_single_job(task: Task, mailbox: Any) -> None:
    """A one-worker job or a work task: what a local worker runs, in a Ray worker."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    _export_spans_like_the_service()
    events = MailboxEvents(mailbox)
    events.put(Started(task.task_id, 0))
    watch = CancelWatch(mailbox)
    try:
        run_any(task, events, watch)
    finally:
        watch.close()


@ray.remote(num_cpus=0, max_retries=0)
def run_parallel_job(task: JobTask, mailbox: Any, storage_path: str, max_failures: int) -> None:
    """A data-parallel job: a TorchTrainer of ``num_workers`` workers, driven from here.

    As for a one-worker job (RayExecutor), a device that names CUDA reserves a GPU per worker;
    ``auto`` and ``cpu`` train on the workers' CPUs.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    events = MailboxEvents(mailbox)
    events.put(Started(task.training_id, 0))
    use_gpu = devices.names_cuda(task.settings.device)
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={
            "task": task,
            "mailbox": mailbox,
            "deadline": time.time() + task.settings.max_duration_seconds,
            "use_gpu": use_gpu,
        },
        scaling_config=ScalingConfig(num_workers=task.settings.num_workers, use_gpu=use_gpu),
        torch_config=TorchConfig(backend=GPU_BACKEND if use_gpu else "gloo"),
        run_config=RunConfig(
            # The same name after a service restart: Ray Train resumes from its last checkpoint.
            name=task.training_id,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    try:
        trainer.fit()
    except ray.train.TrainingFailedError as error:
        events.put(
            WorkerLost(
                task.training_id,
                error={
                    "code": "WORKER_LOST",
                    "message": "a Ray Train worker of the job failed more often than"
                    f" ray_max_failures ({max_failures}) allows: {type(error).__name__}",
                    "hint": "Train again; the Ray logs of the job's workers say why they failed.",
                    "retryable": True,
                },
            )
        )


class HeldOutcome:
    """Rank 0's events: progress goes out at once, the outcome is held for the caller to judge."""

    def __init__(self, events: MailboxEvents | None) -> None:
        self._events = events
        self.outcome: Message | None = None

    def put(self, message: Message) -> None:
        """Forward progress (rank 0 only); keep the outcome."""
        if isinstance(message, TERMINAL):
            self.outcome = message
        elif self._events is not None:
            self._events.put(message)


def train_worker(config: dict[str, Any]) -> None:
    """One Ray Train worker of a data-parallel job."""
    import torch.distributed as dist
    from ray.train.torch import get_device

    task: JobTask = config["task"]
    context = ray.train.get_context()
    parallel = DataParallel(context.get_world_rank(), context.get_world_size())
    primary = parallel.rank == 0
    if primary:  # one job, one span tree
        _export_spans_like_the_service()
    # Rank 0 works in the job's folder (the artifact must land there); the others in their own.
    workdir = Path(task.workdir) if primary else Path(tempfile.mkdtemp(prefix="agent-training-"))
    shared_checkpoints = Path(task.workdir) / "checkpoints"
    if primary:
        _restore(ray.train.get_checkpoint(), shared_checkpoints)
    dist.barrier()  # every rank starts from the checkpoint rank 0 chose
    if not primary:
        _copy_checkpoint(shared_checkpoints, workdir / "checkpoints")
    dist.barrier()

    # Each worker trains on the GPU Ray gave it (whatever cuda:N the job named), else on the CPU:
    # a gloo-only group cannot reduce CUDA tensors, so ``auto`` must not find a GPU here.
    device = str(get_device()) if config["use_gpu"] else devices.CPU
    settings = dataclasses.replace(
        task.settings, max_duration_seconds=NO_DEADLINE_SECONDS, device=device
    )
    events = HeldOutcome(MailboxEvents(config["mailbox"]) if primary else None)
    steps = CollectiveSteps(config["mailbox"], config["deadline"], workdir, primary)
    try:
        job_task = dataclasses.replace(task, workdir=str(workdir), settings=settings)
        run_task(job_task, events, steps, parallel)
    finally:
        steps.close()
        if not primary:
            shutil.rmtree(workdir, ignore_errors=True)
    outcome = events.outcome
    if isinstance(outcome, Failed) and outcome.error["code"] == "TRAINING_ERROR":
        # Unexpected (a lost peer, for one): fail the worker so that Ray Train restarts the group.
        raise RuntimeError(f"training step failed: {outcome.error['message']}")
    if primary and outcome is not None:
        MailboxEvents(config["mailbox"]).put(outcome)


class CollectiveSteps(CancelWatch):
    """The ``cancelled`` check of a data-parallel worker, agreed by all workers at every step.

    All ranks must leave the loop at the same step (one left behind would wait forever for
    gradients), so each step they all-reduce three flags: cancelled, past the deadline, and (from
    rank 0) a new checkpoint to hand to Ray Train, which every rank then reports together.
    A checkpoint is the engine's newest file and those of its helper loops in subfolders
    (transfer's n-gram companion trains in ``ngrams/``).
    """

    def __init__(self, mailbox: Any, deadline: float, workdir: Path, primary: bool) -> None:
        super().__init__(mailbox)
        self._deadline = deadline
        self._checkpoints = workdir / "checkpoints"
        self._primary = primary
        self._reported_mtime = self._mtime()
        self._staging = Path(tempfile.mkdtemp(prefix="agent-training-checkpoint-"))

    def _mtime(self) -> int:
        try:
            return max(
                (path.stat().st_mtime_ns for path in _newest_files(self._checkpoints)), default=0
            )
        except FileNotFoundError:  # replaced while read: the next step sees the new one
            return 0

    def __contains__(self, _training_id: object) -> bool:
        import torch
        import torch.distributed as dist

        new_checkpoint = self._primary and self._mtime() != self._reported_mtime
        flags = torch.tensor(
            [self._cancelled, time.time() > self._deadline, new_checkpoint], dtype=torch.uint8
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        cancelled, timed_out, report = (bool(flag) for flag in flags)
        if report:
            self._report()
        if timed_out:
            raise TrainingTimedOut("stopped at the job's maximum run time")
        return cancelled

    def _report(self) -> None:
        checkpoint = None
        if self._primary:
            # The engine replaces the file atomically: a copy is always one whole checkpoint.
            self._reported_mtime = self._mtime()
            _copy_checkpoint(self._checkpoints, self._staging)
            checkpoint = ray.train.Checkpoint.from_directory(str(self._staging))
        ray.train.report({}, checkpoint=checkpoint)

    def close(self) -> None:
        """Stop watching for cancellation and remove the staging folder."""
        super().close()
        shutil.rmtree(self._staging, ignore_errors=True)


def _restore(checkpoint: Any, folder: Path) -> None:
    """Put Ray Train's last checkpoint (if any) in ``folder``, replacing an older local one."""
    if checkpoint is None:
        return
    with checkpoint.as_directory() as directory:
        _copy_checkpoint(Path(directory), folder)


def _newest_files(folder: Path) -> list[Path]:
    """The newest checkpoint file of ``folder`` and of each of its subfolders."""
    return sorted(folder.rglob(FILE_NAME)) if folder.is_dir() else []


def _copy_checkpoint(source: Path, folder: Path) -> None:
    """Copy the newest checkpoint files of ``source`` (see _newest_files) into ``folder``.

    Every rank must resume every loop from the same point, helper loops included: a rank that
    resumed transfer's companion while another started it afresh would wait forever for it.
    """
    for path in _newest_files(source):
        target = folder / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
