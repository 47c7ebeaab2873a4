"""The training worker process: runs engines, reports progress back over a pipe.

Workers are started once (spawn) and reused, so torch is imported once per worker rather than per
job. Everything crossing the process boundary is a plain picklable value, never a gRPC object.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Container
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import StatusCode

from agent_training_server import devices, logs, storage_errors
from agent_training_server.engines.base import (
    Example,
    Progress,
    TrainingCancelled,
    TrainingDataError,
    TrainingTimedOut,
    TrainSettings,
)
from agent_training_server.errors import FailedPrecondition
from agent_training_server.jobs.messages import (
    PREEMPT,
    Cancelled,
    Failed,
    Message,
    Outcome,
    Preempted,
    Progressed,
    Ready,
    Started,
    Succeeded,
    Trained,
)
from agent_training_server.jobs.spans import PhaseSpans
from agent_training_server.jobs.work import Events, WorkTask, run_work
from agent_training_server.telemetry import (
    INSTRUMENTATION_NAME,
    context_from,
    create_tracer_provider,
)

if TYPE_CHECKING:
    from agent_training_server.engines.parallel import DataParallel

log = logging.getLogger(__name__)

PROGRESS_INTERVAL_SECONDS = 0.5
"""Least time between two forwarded progress reports of the same phase and epoch."""
SPAN_FLUSH_MILLISECONDS = 5_000
"""Longest wait for a job's spans to be exported before its outcome is reported."""


@dataclasses.dataclass(frozen=True)
class JobTask:
    """One job handed to a worker."""

    training_id: str
    training_type: str
    examples: list[Example]
    settings: TrainSettings
    workdir: str
    """Private folder of the job: checkpoints, and the artifact once trained."""
    agent_id: str = ""
    start_from_dir: str = ""
    """Artifact folder of the version to start from, for engines that start from one."""
    cache_dir: str = ""
    """Folder shared by jobs for reusable intermediate results."""
    trace_context: dict[str, str] = dataclasses.field(default_factory=dict)
    """W3C trace context of the request that submitted the job: the worker's spans join it."""
    checkpoint_every_steps: int = 0
    """Also checkpoint inside an epoch every this many optimizer steps (0: epoch ends only)."""

    @property
    def task_id(self) -> str:
        """The id executors know the task by: the job's training_id."""
        return self.training_id


Task = JobTask | WorkTask
"""What a worker runs: a training job, or a work task of another RPC (jobs/work.py)."""


class QueueReporter:
    """Forwards an engine's progress to the server and answers whether the job was cancelled."""

    def __init__(
        self,
        training_id: str,
        events: Events,
        cancelled: Container[str],
        spans: PhaseSpans | None = None,
    ) -> None:
        self._training_id = training_id
        self._events = events
        self._cancelled = cancelled
        self._spans = spans
        self._last_sent = 0.0
        self._last_key: tuple[str, int] | None = None

    def progress(self, update: Progress) -> None:
        """Forward a report, skipping reports that come too soon within the same epoch.

        The report that ends an epoch (it carries the epoch's validation figures) always goes:
        without it a fast epoch would show no accuracy at all.
        """
        if self._spans is not None:
            self._spans.observe(update)  # every report: spans must not miss an epoch's end
        now = time.monotonic()
        key = (update.phase, update.epoch)
        if (
            key == self._last_key
            and now - self._last_sent < PROGRESS_INTERVAL_SECONDS
            and update.validation_loss is None
        ):
            return
        self._last_key, self._last_sent = key, now
        self._events.put(Progressed(self._training_id, update))

    def cancelled(self) -> bool:
        """Whether the job must stop: cancelled, or preempted by a shutdown (set lookups)."""
        return self._training_id in self._cancelled or PREEMPT in self._cancelled

    def preempted(self) -> bool:
        """Whether the job is stopping for a shutdown (to resume later), not for a cancel."""
        return PREEMPT in self._cancelled and self._training_id not in self._cancelled


def _listen_for_cancellations(control: Connection, cancelled: set[str]) -> None:
    while True:
        try:
            training_id = control.recv()
        except (EOFError, OSError):
            return  # the server closed its end: it is gone or replacing this worker
        if training_id is None:
            return
        cancelled.add(training_id)


class PipeSender:
    """The ``put`` of a queue over a worker's message pipe, safe to call from any thread."""

    def __init__(self, pipe: Connection) -> None:
        self._pipe = pipe
        self._lock = threading.Lock()

    def put(self, message: Message) -> None:
        """Send one message; the server reads them as they come."""
        with self._lock:
            self._pipe.send(message)


def _failed(
    training_id: str, code: str, message: str, hint: str, retryable: bool = False
) -> Failed:
    error = {"code": code, "message": message, "hint": hint, "retryable": retryable}
    return Failed(training_id, error)


def run_any(task: Task, events: Events, cancelled: Container[str]) -> None:
    """Run a training job or a work task; its outcome is the last message sent for it."""
    if isinstance(task, WorkTask):
        run_work(task, events, cancelled)
    else:
        run_task(task, events, cancelled)


def run_task(
    task: JobTask, events: Events, cancelled: Container[str], parallel: DataParallel | None = None
) -> None:
    """Train one job, inside a span joined to the submitting request's trace; report the outcome.

    The worker's spans are exported before the outcome is sent, so a client that saw the job
    end finds its whole trace at the collector. ``parallel`` is this process's share of a
    data-parallel job (engines/parallel.py); ``cancelled`` answers ``training_id in cancelled``.
    """
    tracer = trace.get_tracer(INSTRUMENTATION_NAME)
    attributes = {
        "training.id": task.training_id,
        "training.type": task.training_type,
        "agent.id": task.agent_id,
    }
    with tracer.start_as_current_span(
        "training.job", context=context_from(task.trace_context), attributes=attributes
    ) as job_span:
        log.info("job %s started (%s)", task.training_id, task.training_type)
        spans = PhaseSpans(tracer, attributes)
        try:
            reporter = QueueReporter(task.training_id, events, cancelled, spans)
            outcome = _train(task, reporter, parallel)
        finally:
            spans.close()
            if isinstance(cancelled, set):  # a worker's set outlives the job; forget its id
                cancelled.discard(task.training_id)
        kind = type(outcome).__name__.lower()
        if isinstance(outcome, Failed):
            job_span.set_status(StatusCode.ERROR, outcome.error["code"])
        job_span.set_attribute("training.outcome", kind)
        log.info("job %s %s", task.training_id, kind)
    _flush_spans()
    events.put(outcome)


def _flush_spans() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush(SPAN_FLUSH_MILLISECONDS)


def _train(task: JobTask, reporter: QueueReporter, parallel: DataParallel | None) -> Outcome:
    """Run the job's engine; return the outcome message to send."""
    training_id = task.training_id
    from agent_training_server.engines import registry
    from agent_training_server.engines.integrity import DamagedFile, KeptCheckpointDamaged

    workdir = Path(task.workdir)
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        engine = registry.get_engine(task.training_type)
        if task.cache_dir:
            engine.cache_dir = Path(task.cache_dir)
        if parallel is not None:  # this process's share of a data-parallel job
            engine.parallel = parallel
        engine.checkpoint_every_steps = task.checkpoint_every_steps
        # Resolved here, where the job runs: this process's GPUs are the ones that count.
        settings = dataclasses.replace(task.settings, device=devices.resolve(task.settings.device))
        extra = {}
        if engine.starts_from_version and task.start_from_dir:
            try:
                spec, tensors, _outputs = registry.load_artifact_files(Path(task.start_from_dir))
            except DamagedFile as error:
                log.warning("job %s: its start version is damaged: %s", task.training_id, error)
                return _failed(
                    training_id,
                    "VERSION_DAMAGED",
                    f"the version this job starts from is damaged: {error}",
                    "Start from another version: activate a good one with ActivateAgentVersion"
                    " (or name config.base_version_id for transfer), then train again.",
                )
            extra["start_from"] = (spec, tensors)
        artifact = engine.train(task.examples, settings, reporter, workdir / "checkpoints", **extra)
        reporter.progress(Progress(phase="saving"))
        artifact_dir = workdir / "artifact"
        registry.save_artifact(artifact, artifact_dir)
        size = sum(path.stat().st_size for path in artifact_dir.iterdir())
        parameters = sum(int(tensor.numel()) for tensor in artifact.tensors.values())
        trained = Trained(
            artifact.metrics,
            artifact.outputs,
            artifact.encoder,
            size,
            parameters,
            device=artifact.device,
            precision=artifact.precision,
        )
        return Succeeded(training_id, trained)
    except devices.DeviceUnavailable as error:
        # Checked when the job was accepted; this is a resumed job on a replica without it.
        return _failed(
            training_id,
            "DEVICE_UNAVAILABLE",
            str(error),
            "Train again with config.device auto or cpu, or on a server whose workers have"
            " that GPU.",
        )
    except TrainingCancelled:
        # A cancel wins over a shutdown: a cancelled job must not come back after a restart.
        return Preempted(training_id) if reporter.preempted() else Cancelled(training_id)
    except TrainingTimedOut as error:
        return _failed(
            training_id,
            "TRAINING_TIMEOUT",
            str(error) or "the job ran past its maximum run time",
            "Raise config.max_duration_seconds, train fewer epochs, or send less data.",
        )
    except TrainingDataError as error:
        return _failed(
            training_id,
            error.error_code,
            str(error),
            "Fix the training data (or the server set-up the message names) and train again.",
        )
    except KeptCheckpointDamaged as error:  # CreateVersionFromCheckpoint's weights
        return _failed(
            training_id,
            "CHECKPOINT_DAMAGED",
            f"the checkpoint cannot be used: {error}",
            "Make the version from another of the job's checkpoints (ListTrainingCheckpoints),"
            " or train again with the same config.seed.",
        )
    except Exception as error:
        # Classified here, where the exception still is: the server only sees the payload.
        storage = storage_errors.classify(error, workdir, any_error=True)
        if storage is not None:
            log.warning(
                "job %s stopped: the data folder is %s (%s: %s)",
                task.training_id,
                storage,
                type(error).__name__,
                error,
            )
            return Failed(training_id, storage_errors.job_error(storage))
        log.error("job %s failed:\n%s", task.training_id, traceback.format_exc())
        return _failed(
            training_id,
            "TRAINING_ERROR",
            f"training failed: {type(error).__name__}",
            "Check the training data format; if it persists, report the trace_id.",
            retryable=True,
        )


class _Dropped:
    """Where a work task's engine reports go: nowhere (its caller waits for the result only)."""

    def put(self, message: Message) -> None:
        """Dropped."""


def finish_from_checkpoint(task: JobTask, progress: Any = None) -> Trained:
    """CreateVersionFromCheckpoint's work, in a worker: a version from a job's kept weights.

    ``task.workdir`` names the kept checkpoints to finish from (job_checkpoints.prepare_finalize):
    the job's engine prepares its data as the job did, loads those weights as its best and last,
    measures them and writes the artifact to ``<workdir>/artifact``, as at a job's end.

    Raises:
        FailedPrecondition: the engine's failure, with its code and hint: CHECKPOINT_DAMAGED
            when a kept file fails its checksum or does not fit the job's model.
    """
    reporter = QueueReporter(task.training_id, _Dropped(), set())
    outcome = _train(task, reporter, None)
    if isinstance(outcome, Succeeded):
        return outcome.result
    assert isinstance(outcome, Failed), outcome  # nothing cancels or preempts this run
    failure = outcome.error
    raise FailedPrecondition(failure["message"], code=failure["code"], hint=failure["hint"])


def _die_with_the_server() -> None:
    """Have the kernel kill this worker when the server dies (Linux; elsewhere a no-op).

    An orphaned worker would go on training and writing checkpoints of a job that the restarted
    server resumes in another worker.
    """
    if not sys.platform.startswith("linux"):
        return
    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the server died before the request took effect


def worker_main(
    index: int,
    tasks: Connection,
    messages: Connection,
    control: Connection,
    torch_threads: int,
    log_settings: tuple[str, str] = ("INFO", "json"),
    niceness: int = 0,
    device: str = "cpu",
) -> None:
    """Entry point of a worker process: take tasks until told to stop (a None task).

    ``tasks`` and ``control`` are read ends of pipes from the server, ``messages`` the write end
    of the pipe back; all three belong to this worker alone. ``niceness`` is added to the
    process's scheduling niceness; ``device`` is the server's device setting, what a task
    without a device of its own (a work task's retraining) trains on.
    """
    logs.configure(*log_settings)  # the server's level and format, trace ids included
    devices.use_setting(device)
    # Training is background work: where it and the RPC process want the same core, the
    # scheduler gives it to the RPC process first, so serving latency holds during training.
    if niceness:
        os.nice(niceness)
    # Ctrl-C in a terminal, or a service manager's SIGTERM, may reach the whole process group:
    # the server shuts down its workers itself (checkpointing their jobs first), so a worker
    # must not die of it mid-epoch (and be "restarted" during shutdown).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _die_with_the_server()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch  # imported here, once, so jobs start without paying for it

    torch.set_num_threads(max(1, torch_threads))
    # Spans go out through the exporters the OTEL_* variables name, as the server's do.
    trace.set_tracer_provider(create_tracer_provider())
    from agent_training_server.engines import registry  # noqa: F401 - warm the import

    # The first optimizer built in a process imports torch's compiler stack (about a second);
    # pay for it now rather than in the first job.
    torch.optim.Adam([torch.zeros(1, requires_grad=True)], fused=True)

    events = PipeSender(messages)
    cancelled: set[str] = set()
    threading.Thread(
        target=_listen_for_cancellations, args=(control, cancelled), daemon=True
    ).start()
    events.put(Ready(index))
    while True:
        try:
            task = tasks.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        events.put(Started(task.task_id, index))
        run_any(task, events, cancelled)
