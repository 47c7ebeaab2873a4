"""Training jobs: accept, queue, dispatch to workers, record every event, fan out to watchers.

Every state change of a job is one event appended to its durable log together with the job's new
state (one transaction), and only then published to live subscribers. A watcher subscribes before
it reads the stored log, so between the two it misses nothing and, skipping sequence numbers it
has sent, repeats nothing.

Replicas sharing a database (services/replicas.py): a job is run by the replica that owns it in
the store, first the one that accepted it. The owner alone appends its events (the store refuses
another's with LeaseLost); when the owner's lease runs out, another replica's heartbeat claims
the job and resumes it from its checkpoint, continuing its event log. A watcher on a replica
that does not own the job reads the stored log as it grows; a cancellation or pause sent to such
a replica is recorded in the store and carried out by the owner at its next heartbeat.

A paused job (PauseTrainingJob) stopped at its next step with a checkpoint and holds no worker;
no replica owns it in memory. ResumeTrainingJob on any replica takes it in the store and queues
it again; it resumes from that checkpoint. Once a job ends, its folder keeps only the epoch
checkpoints it kept (job_checkpoints.py), until its agent is deleted.
"""

from __future__ import annotations

import asyncio
import builtins
import collections
import contextlib
import dataclasses
import hashlib
import json
import logging
import shutil
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, assert_never

from opentelemetry import trace
from prometheus_client import Counter

from agent_training_server import __version__, devices, job_checkpoints, storage_errors
from agent_training_server.artifacts import VersionFiles, move_version_files
from agent_training_server.auth import current_tenant
from agent_training_server.config import ServerConfig
from agent_training_server.domain import (
    AgentVersion,
    BehaviorSettings,
    JobEvent,
    JobStatus,
    Page,
    RolloutRequest,
    TrainingJob,
)
from agent_training_server.engines.base import Example, TrainSettings, settings_of
from agent_training_server.errors import (
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    ServiceError,
    Unavailable,
)
from agent_training_server.jobs.executor import Executor
from agent_training_server.jobs.messages import (
    ENDED,
    Cancelled,
    Failed,
    Message,
    Preempted,
    Progressed,
    Raised,
    Ready,
    Returned,
    Started,
    Succeeded,
    Trained,
    WorkerLost,
    WorkProgressed,
)
from agent_training_server.jobs.progress import percent_and_eta
from agent_training_server.jobs.work import Progress, WorkFailed, WorkTask
from agent_training_server.jobs.worker import JobTask
from agent_training_server.metrics import Metrics
from agent_training_server.services.agents import new_id, request_digest
from agent_training_server.services.replicas import ReplicaLease
from agent_training_server.services.rollouts import new_rollout
from agent_training_server.storage_health import StorageMonitor
from agent_training_server.store.base import (
    IdempotencyKey,
    JobLimitReached,
    JobLimits,
    JobNotPaused,
    LeaseLost,
    RolloutRunning,
    Store,
)
from agent_training_server.telemetry import (
    INSTRUMENTATION_NAME,
    context_from,
    current_trace_context,
    trace_id_of,
)

log = logging.getLogger(__name__)

ROLLOUT_KEY = "rollout"
"""Key of a job's configuration: the rollout its version starts instead of becoming active."""

STARTS_FROM_VERSION = ("reinforcement", "few_shot")
"""Paradigms that continue from the agent's active version (engines are not imported here:
they bring torch, which the RPC server process does not need to accept jobs)."""
STARTS_FROM_BASE_AGENT = ("transfer",)
"""Paradigms that start from another agent's version when config.base_agent_id is set."""
MAX_WORKER_RESTARTS = 2
"""Times a job whose worker process died (killed, out of memory) is resumed from its checkpoint
in another worker; the next loss ends it FAILED with WORKER_LOST. A constant until it becomes a
server setting. Counted from the job's timeline, so a restart of the server does not reset it."""
WORKER_LOST_REASON = "worker lost"
"""Start of the timeline reason of a job queued again after its worker died."""
REMOTE_WATCH_SECONDS = 1.0
"""Longest pause of a watcher of a job another replica runs between two reads of the job's log:
it reads again as soon as the store announces an event of the job, and after this at most (an
announcement can be lost while the database is away)."""


class _Moved:
    """Put in a watcher's queue when this replica lets a job go: read the stored log instead."""


MOVED = _Moved()


def version_of_job(
    job: TrainingJob,
    result: Trained,
    files: VersionFiles,
    behavior: BehaviorSettings,
    checkpoint_id: str = "",
) -> AgentVersion:
    """The version a job's engine made (at its end, or from one of its kept checkpoints)."""
    manifest = {
        "seed": job.config.get("seed", 0),
        "data_sha256": job.dataset_sha256,
        "config": job.config,
        "package_version": __version__,
        "encoder": result.encoder,
        "device": result.device,
        "precision": result.precision,
    }
    return AgentVersion(
        version_id=files.version_id,
        agent_id=job.agent_id,
        version_number=0,
        source="checkpoint" if checkpoint_id else "training",
        training_type=job.training_type,
        training_id=job.training_id,
        parent_version_id=job.parent_version_id,
        outputs=tuple(result.outputs),
        encoder=result.encoder,
        behavior=behavior,
        metrics=result.metrics,
        size_bytes=files.size_bytes,
        parameter_count=result.parameter_count,
        artifact_dir=files.artifact_dir,
        create_time=time.time(),
        manifest={**manifest, "checkpoint_id": checkpoint_id} if checkpoint_id else manifest,
    )


def dataset_bytes(examples: Sequence[Example]) -> bytes:
    """Canonical serialisation of training data: its hash identifies the data set."""
    rows = [
        [e.input, e.expected_output, e.feedback, list(e.context), e.propensity] for e in examples
    ]
    return json.dumps(rows, ensure_ascii=False, separators=(",", ":")).encode()


def examples_from_bytes(data: bytes) -> list[Example]:
    """Inverse of dataset_bytes."""
    return [Example(row[0], row[1], row[2], tuple(row[3]), row[4]) for row in json.loads(data)]


@dataclasses.dataclass
class _ActiveJob:
    """In-memory state of a job that has not ended."""

    job: TrainingJob
    task: JobTask | None = None
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)
    subscribers: set[asyncio.Queue[JobEvent | _Moved | None]] = dataclasses.field(
        default_factory=set
    )
    """Live watchers; None in a queue ends that watch with UNAVAILABLE (shutdown), MOVED sends
    it to the stored log (another replica took the job)."""
    started_at: float = 0.0
    dispatched: bool = False
    """Handed to the pool: it holds a worker slot until it ends."""
    worker_done: bool = False
    """The worker reported the job's end (or lost it): it no longer runs the job."""


@dataclasses.dataclass
class _RunningWork:
    """A work task handed to the executor, until its worker reports its end."""

    result: asyncio.Future[Any]
    """Resolved with the function's value or exception (cancelled when its caller left)."""
    progress: Progress | None


def _retrieve_end(result: asyncio.Future[Any]) -> None:
    """Mark a finished future's exception as seen (its caller left before it ended)."""
    if not result.cancelled():
        result.exception()


class _EventNotRecorded(Exception):
    """An event of the job could not be stored; the job has been ended FAILED in memory."""


class JobManager:
    """Owns the queue, the workers and the event logs of training jobs."""

    def __init__(
        self,
        store: Store,
        config: ServerConfig,
        pool: Executor,
        metrics: Metrics | None = None,
        tracer: trace.Tracer | None = None,
        storage: StorageMonitor | None = None,
        replica: ReplicaLease | None = None,
    ) -> None:
        """Jobs in ``store``, run by ``pool``, owned by ``replica`` (started by its owner).

        Without a ``replica`` the manager makes, registers and renews its own.
        """
        self._store = store
        self._own_replica = replica is None
        self._replica = replica or ReplicaLease(
            store,
            new_id("replica"),
            config.replica_lease_seconds,
            sole=not config.database_url,
        )
        self._storage = storage or StorageMonitor(config.data_dir)
        self._tracer = tracer or trace.get_tracer(INSTRUMENTATION_NAME)
        self._config = config
        self._metrics = metrics
        if metrics is not None:
            metrics.jobs_running.set_function(
                lambda: sum(1 for a in self._active.values() if a.job.status == JobStatus.RUNNING)
            )
            metrics.jobs_queued.set_function(
                lambda: sum(1 for a in self._active.values() if a.job.status == JobStatus.QUEUED)
            )
        self._pool = pool
        self._active: dict[str, _ActiveJob] = {}
        self._waiting: collections.deque[str] = collections.deque()
        self._free_workers = asyncio.Semaphore(pool.size)
        self._work_available = asyncio.Event()
        self._dispatcher: asyncio.Task[None] | None = None
        self._messages: asyncio.Queue[Message] = asyncio.Queue()
        self._consumer: asyncio.Task[None] | None = None
        self._closing = False
        """Shutting down: no new jobs, no new or open watches."""
        self._draining: set[str] = set()
        """Jobs ended by the server while their worker still runs them: the worker slot is
        freed when the worker reports that it stopped."""
        self._pausing: set[str] = set()
        """Jobs asked to pause whose worker has not stopped yet: its "cancelled" is a pause."""
        self._let_go: set[str] = set()
        """Jobs another replica took while this one ran them: their folder is the new owner's."""
        self._claimed: dict[str, tuple[TrainingJob, str]] = {}
        """Jobs this replica claimed and has not yet taken in, with the reason, oldest first."""
        self._remote_watchers: dict[str, set[asyncio.Event]] = {}
        """Watchers of jobs another replica runs, set when the store announces a new event."""
        self._stop_listening: Callable[[], None] = lambda: None
        self._unrecorded: dict[str, tuple[TrainingJob, JobEvent]] = {}
        """Jobs failed because their events cannot be stored, with their final state and event,
        which the store may lack: what get and watch answer until the restart."""
        self._message_handled = asyncio.Event()
        self._work: dict[str, _RunningWork] = {}
        """Work tasks of other RPCs (run_work) running in workers, by task id."""
        self._worker_losses: Counter | None = None
        if metrics is not None:
            # metrics.py has no counter for this yet; registered beside the others.
            self._worker_losses = Counter(
                "agent_training_job_worker_losses",
                "Training jobs whose worker process died, by what followed: resumed from the"
                " job's checkpoint in another worker, or failed (WORKER_LOST).",
                ("outcome",),
                registry=metrics.registry,
            )

    # Lifecycle ----------------------------------------------------------------------------

    @property
    def owner(self) -> str:
        """The replica id this manager's jobs are owned by in the store."""
        return self._replica.replica_id

    async def start(self) -> None:
        """Start workers, resume orphaned unfinished jobs, and start dispatching.

        Orphaned: left by a previous run of the server, or by a replica whose lease ran out.
        """
        if self._own_replica:
            await self._replica.register("")
        self._pool.start(self._messages.put_nowait)
        self._consumer = asyncio.create_task(self._consume_messages())
        await self._adopt_orphans("server restarted")
        await self._remove_ended_workdirs()
        self._dispatcher = asyncio.create_task(self._dispatch())
        loop = asyncio.get_running_loop()

        def heard(training_id: str) -> None:  # on the store's thread
            loop.call_soon_threadsafe(self._wake_remote_watchers, training_id)

        self._stop_listening = self._store.listen_job_events(heard)
        self._replica.on_beat(self._on_beat)
        if self._own_replica:
            self._replica.start()

    async def stop(self) -> None:
        """Shut down: end open watches, stop dispatching, stop the workers.

        Running jobs first checkpoint where they are (within shutdown_checkpoint_seconds) and go
        back to QUEUED; unfinished jobs resume at the next start (or fail: interrupted_jobs).
        """
        self.end_streams()
        await asyncio.to_thread(self._stop_listening)
        await _cancel(self._dispatcher)
        await self._preempt_running()  # the consumer records what the workers report meanwhile
        await _cancel(self._consumer)
        await asyncio.to_thread(self._pool.stop)
        for task_id in list(self._work):  # what the workers did not finish before they stopped
            self._end_work(task_id, _work_shutting_down())
        if self._own_replica:
            await self._replica.stop()

    def end_streams(self) -> None:
        """Refuse new jobs and watches, and end every open watch with UNAVAILABLE (retryable)."""
        self._closing = True
        for active in self._active.values():
            for subscriber in active.subscribers:
                subscriber.put_nowait(None)

    async def _preempt_running(self) -> None:
        """Ask the workers to checkpoint their jobs now and wait for them to report back."""
        if not any(active.dispatched for active in self._active.values()):
            return
        if not self._pool.preempt():
            return
        log.info("shutting down: running jobs checkpoint and stop")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._config.shutdown_checkpoint_seconds):
                while any(active.dispatched for active in self._active.values()):
                    self._message_handled.clear()
                    await self._message_handled.wait()

    async def _on_beat(self, _renewed: bool) -> None:
        """Each heartbeat: take orphaned jobs, carry out cancellations other replicas recorded.

        A lease that had expired needs nothing here: a job another replica took meanwhile is
        let go at its next event, which the store refuses (LeaseLost).
        """
        if self._closing:
            return
        await self._adopt_orphans("replica lost")
        requested = await asyncio.to_thread(self._store.cancel_requests, self.owner)
        for training_id in requested:
            active = self._active.get(training_id)
            if active is not None:
                await self._cancel_owned(active)
        to_pause = await asyncio.to_thread(self._store.pause_requests, self.owner)
        for training_id in to_pause:
            active = self._active.get(training_id)
            if active is not None and training_id not in self._pausing:
                await self._pause_owned(active)

    async def _adopt_orphans(self, reason: str) -> None:
        """Claim the unfinished jobs no live replica owns, and queue them here.

        A claimed job this replica could not take in (the database away half-way) stays claimed
        by it, and is taken in at the next heartbeat.
        """
        claimed = await asyncio.to_thread(self._store.claim_orphaned_jobs, self.owner, time.time())
        for job in claimed:
            self._claimed.setdefault(job.training_id, (job, reason))
        for training_id, (job, why) in list(self._claimed.items()):  # oldest first: queue order
            if training_id not in self._active:
                await self._adopt(job, why)
            del self._claimed[training_id]
        if claimed:
            self._work_available.set()

    async def _adopt(self, job: TrainingJob, reason: str) -> None:
        """Queue a job claimed from a dead replica (or a previous run), or fail it as configured."""
        if self._config.interrupted_jobs == "fail":
            await self._fail_interrupted(job)
            return
        log.info("resuming job %s (was %s; %s)", job.training_id, job.status, reason)
        try:
            data = await asyncio.to_thread(self._store.load_dataset, job.dataset_sha256)
            task = await self.task_for(job, examples_from_bytes(data))
        except NotFound:
            log.info("job %s is gone with its agent: nothing to resume", job.training_id)
            return
        active = _ActiveJob(job, task)
        self._active[job.training_id] = active
        if job.status == JobStatus.RUNNING:
            try:
                await self._requeue(active, reason)
            except _EventNotRecorded:
                return  # failed, or taken by another replica: not queued here
        self._waiting.append(job.training_id)

    async def _requeue(self, active: _ActiveJob, reason: str) -> None:
        """Record a running job QUEUED again (to resume from its checkpoint), with the reason."""
        await self._record(
            active,
            "progress",
            {"status": "TRAINING_STATUS_QUEUED"},
            status=JobStatus.QUEUED,
            phase="",
            timeline=_timeline(active.job, JobStatus.QUEUED, reason),
        )

    async def _fail_interrupted(self, job: TrainingJob) -> None:
        log.warning("failing job %s (was %s): interrupted_jobs=fail", job.training_id, job.status)
        active = _ActiveJob(job)
        self._active[job.training_id] = active
        error = {
            "code": "JOB_INTERRUPTED",
            "message": f"the server restarted while the job was {job.status}",
            "hint": "Train again (the same config.seed gives the same result), or run the server"
            " with interrupted_jobs=resume to resume such jobs from their checkpoint.",
            "retryable": True,
        }
        with contextlib.suppress(_EventNotRecorded):
            await self._end(
                active, JobStatus.FAILED, error, "server restarted (interrupted_jobs=fail)"
            )

    async def _remove_ended_workdirs(self) -> None:
        """Clean the job folders a crash left behind.

        A crash between a job's end and the pruning of its folder leaves checkpoints nothing will
        read again: an ended job's folder keeps only its kept checkpoints. A folder of no job
        (a crash during an agent's deletion, or a version made from a checkpoint) goes whole.
        Unfinished and paused jobs keep theirs, whichever replica owns them (the artifact folder
        may be shared).
        """
        folder = self._config.artifact_root / "jobs"
        names = await asyncio.to_thread(
            lambda: [path.name for path in folder.iterdir()] if folder.is_dir() else []
        )
        # Listed after the folders: a job whose folder was listed is stored by then.
        rows = await asyncio.to_thread(
            self._store.list_jobs, agent_id="", statuses=(), limit=10_000_000, before_position=0
        )
        status = {job.training_id: job.status for _, job in rows}
        in_memory = set(self._active) | set(self._unrecorded)
        of_no_job = [name for name in names if name not in status and name not in in_memory]
        if of_no_job:
            log.info("removing %d job folders of no job", len(of_no_job))
        await self._remove_workdirs(of_no_job)
        ended = [name for name in names if status.get(name) in JobStatus.ENDED]
        await self._prune_workdirs([name for name in ended if name not in in_memory])

    # Submitting ---------------------------------------------------------------------------

    async def submit(
        self,
        *,
        agent_id: str,
        training_type: str,
        examples: list[Example],
        settings: TrainSettings,
        parent_version_id: str,
        request_id: str = "",
        request_bytes: bytes = b"",
        rollout: RolloutRequest | None = None,
    ) -> TrainingJob:
        """Store the data and the job, append its accepted event and queue it.

        ``rollout``: start one with the job's version instead of activating it (kept in the
        job's configuration, so a job resumed elsewhere does the same).
        """
        if self._closing:
            raise Unavailable(
                "the server is shutting down",
                code="SERVER_SHUTTING_DOWN",
                hint="Send the request again once the server is back (with the same request_id"
                " it is not started twice).",
                retry_after_seconds=5.0,
            )
        settings = await self._with_device(settings)
        data = dataset_bytes(examples)
        sha256 = hashlib.sha256(data).hexdigest()
        now = time.time()
        trace_context = current_trace_context()
        job = TrainingJob(
            training_id=new_id("train"),
            agent_id=agent_id,
            training_type=training_type,
            config={
                **dataclasses.asdict(settings),
                **({ROLLOUT_KEY: rollout.to_json()} if rollout is not None else {}),
            },
            example_count=len(examples),
            output_count=len({e.expected_output for e in examples}),
            dataset_sha256=sha256,
            last_sequence=1,
            parent_version_id=parent_version_id,
            executor=self._pool.name,
            create_time=now,
            timeline=[{"status": JobStatus.QUEUED, "time": now, "reason": "accepted"}],
            trace_id=trace_id_of(trace_context),
            trace_context=trace_context,
        )
        accepted = JobEvent(
            job.training_id,
            1,
            now,
            "accepted",
            {
                "status": "TRAINING_STATUS_QUEUED",
                "queue_position": len(self._waiting),
                "example_count": job.example_count,
                "output_count": job.output_count,
            },
        )
        key = None
        if request_id:
            key = IdempotencyKey(
                "TrainAgent", request_id, request_digest(request_bytes), current_tenant()
            )
        # Counted in the store's transaction: the limits hold across replicas.
        limits = JobLimits(
            self._config.max_queued_jobs, self._config.max_jobs_per_tenant, current_tenant()
        )
        try:
            # The training data goes in the job's transaction: a refused job stores nothing.
            stored, replayed = await asyncio.to_thread(
                self._store.create_job, job, accepted, key, self.owner, limits, data
            )
        except JobLimitReached as reached:
            raise _limit_error(reached, limits) from None
        except Exception as error:
            named = self._storage.named(error, needed_bytes=len(data))  # the size is known here
            if named is None:
                raise
            raise named from error
        if replayed:
            return stored
        self._active[job.training_id] = _ActiveJob(job, await self.task_for(job, examples))
        self._waiting.append(job.training_id)
        self._work_available.set()
        return job

    async def _with_device(self, settings: TrainSettings) -> TrainSettings:
        """The settings with the device the job asks for (the server's when it names none).

        Raises:
            FailedPrecondition: DEVICE_UNAVAILABLE, it names a CUDA GPU the workers lack (or
                asks for more data-parallel workers than there are GPUs, one each).
        """
        device = devices.parse(settings.device or self._config.device)
        if devices.names_cuda(device):
            # Off the event loop: the local pool's answer imports torch the first time.
            reason = devices.unavailable_reason(
                device, await asyncio.to_thread(self._pool.cuda_devices), settings.num_workers
            )
            if reason is not None:
                raise FailedPrecondition(
                    f"{reason} on the training workers",
                    code="DEVICE_UNAVAILABLE",
                    hint="Set config.device to auto or cpu (or leave it empty for the server's"
                    " setting), lower config.num_workers, or send the job to a server whose"
                    " workers have those GPUs.",
                )
        return dataclasses.replace(settings, device=device)

    async def task_for(
        self, job: TrainingJob, examples: list[Example], workdir: Path | None = None
    ) -> JobTask:
        """The task that trains ``job`` (in its own folder, or in ``workdir``)."""
        start_from_dir = ""
        if job.training_type in STARTS_FROM_VERSION and job.parent_version_id:
            parent = await asyncio.to_thread(
                self._store.get_version, job.agent_id, job.parent_version_id
            )
            start_from_dir = str(self._config.artifact_root / parent.artifact_dir)
        base_agent = job.config.get("base_agent_id", "")
        if job.training_type in STARTS_FROM_BASE_AGENT and base_agent:
            base = await asyncio.to_thread(
                self._store.get_version, base_agent, job.config["base_version_id"]
            )
            start_from_dir = str(self._config.artifact_root / base.artifact_dir)
        return JobTask(
            training_id=job.training_id,
            training_type=job.training_type,
            examples=examples,
            settings=settings_of(job.config),
            workdir=str(workdir or self.workdir(job.training_id)),
            start_from_dir=start_from_dir,
            cache_dir=str(self._config.data_dir / "cache"),
            agent_id=job.agent_id,
            trace_context=job.trace_context,
            checkpoint_every_steps=self._config.checkpoint_every_steps,
        )

    def workdir(self, training_id: str) -> Path:
        """A job's folder: its checkpoints, and its artifact until stored."""
        return self._config.artifact_root / "jobs" / training_id

    async def _dispatch(self) -> None:
        while True:
            # A job first, then a worker slot: holding a slot while no job waits would starve
            # the work tasks of other RPCs (run_work), which take slots from the same semaphore.
            while not self._waiting:
                self._work_available.clear()
                await self._work_available.wait()
            await self._free_workers.acquire()
            if not self._waiting:  # every waiting job was cancelled meanwhile
                self._free_workers.release()
                continue
            active = self._active.get(self._waiting.popleft())
            if active is None or active.job.status != JobStatus.QUEUED or active.task is None:
                self._free_workers.release()  # cancelled while waiting
                continue
            active.dispatched = True
            self._record_queue_span(active.job)
            self._pool.submit(active.task)

    def _record_queue_span(self, job: TrainingJob) -> None:
        """A span for the time the job waited for a worker, in the submitting request's trace."""
        self._tracer.start_span(
            "training.queue",
            context=context_from(job.trace_context),
            start_time=int(job.create_time * 1e9),
            attributes={
                "training.id": job.training_id,
                "training.type": job.training_type,
                "agent.id": job.agent_id,
            },
        ).end()

    # Work tasks of other RPCs --------------------------------------------------------------

    async def run_work(
        self, function: Callable[..., Any], *arguments: Any, progress: Progress | None = None
    ) -> Any:
        """Run ``function(*arguments, progress=...)`` in a worker; return its value.

        For heavy work of other RPCs (AnalyzeAndOptimize's retrainings, AdaptAgentBehavior's
        policy training), which would slow every call of this process through the GIL. The
        work waits for a free worker as jobs do (it counts against ``workers``); ``progress``
        is called on the event loop with the function's reports. Cancelling the caller (a
        client that cancels, a deadline) cancels the work, which stops at its next check.

        Raises:
            The exception the function raised, as it was (a ServiceError keeps its status).
            Unavailable: the server is shutting down, or the worker process died.
        """
        if self._closing:
            raise _work_shutting_down()
        await self._free_workers.acquire()
        task = WorkTask(new_id("work"), function, arguments)
        result: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._work[task.task_id] = _RunningWork(result, progress)
        self._pool.submit(task)
        try:
            # Shielded: the caller leaving must not cancel the future the worker's end resolves.
            return await asyncio.shield(result)
        except asyncio.CancelledError:
            # Nobody awaits the result now: retrieve its end so asyncio does not log it as lost.
            result.add_done_callback(_retrieve_end)
            if task.task_id in self._work:
                self._pool.cancel(task.task_id)  # its worker slot is freed when it stops
            raise

    def _handle_work(self, message: Message) -> None:
        """A message about a work task: progress for its caller, or its end."""
        task_id = "" if isinstance(message, Ready) else message.task_id
        match message:
            case WorkProgressed(phase=phase, done=done, total=total, percent=percent):
                progress = self._work[task_id].progress
                if progress is not None:
                    progress(phase, done, total, percent)
            case Returned(value=value):
                self._end_work(task_id, value=value)
            case Raised(error=error):
                self._end_work(task_id, error)
            case Cancelled():
                self._end_work(task_id, asyncio.CancelledError())
            case Preempted():
                self._end_work(task_id, _work_shutting_down())
            case WorkerLost(exit_code=exit_code, error=error):
                self._end_work(task_id, _work_lost(exit_code, error))
            case Succeeded() | Failed():
                self._end_work(task_id, WorkFailed(f"a work task ended as a job: {message!r}"))
            case Started() | Progressed() | Ready():
                pass
            case _:
                assert_never(message)

    def _end_work(
        self, task_id: str, error: BaseException | None = None, value: Any = None
    ) -> None:
        """Resolve a work task's caller (unless it left) and free its worker slot."""
        work = self._work.pop(task_id)
        self._free_workers.release()
        if work.result.done():
            return
        if isinstance(error, asyncio.CancelledError):
            work.result.cancel()
        elif error is not None:
            work.result.set_exception(error)
        else:
            work.result.set_result(value)

    # Worker messages ----------------------------------------------------------------------

    async def _consume_messages(self) -> None:
        while True:
            message = await self._messages.get()
            try:
                await self._handle(message)
            except _EventNotRecorded:
                pass  # the job was failed, and that was logged once
            except Exception:
                log.exception("failed to record a message from a training worker: %r", message)
            self._message_handled.set()

    async def _handle(self, message: Message) -> None:
        if isinstance(message, Ready):
            return  # a worker finished starting; the pool hands it work
        training_id = message.task_id
        if training_id in self._work:
            self._handle_work(message)
            return
        active = self._active.get(training_id)
        stopped = isinstance(message, ENDED)
        if active is None:
            # A job that already ended; if the server ended it while the worker ran it, the
            # worker is free once it says it stopped.
            if stopped and training_id in self._draining:
                self._draining.discard(training_id)
                self._free_workers.release()
                if training_id in self._let_go:
                    self._let_go.discard(training_id)  # its folder is another replica's now
                elif training_id not in self._unrecorded:  # ended in the store: none resumes it
                    await self._prune_workdirs([training_id])
            return
        active.worker_done = stopped
        if stopped and not isinstance(message, Cancelled):
            self._pausing.discard(training_id)  # it ended (or was lost) before it could pause
        match message:
            case Started():
                await self._started(active)
            case Progressed(update=update):
                payload = dataclasses.asdict(update)
                if self._metrics is not None:
                    self._metrics.job_progress(training_id, payload)
                await self._record_progress(active, payload)
            case Succeeded(result=result):
                await self._succeed(active, result)
            case Cancelled() if training_id in self._pausing:
                self._pausing.discard(training_id)
                await self._record_paused(active)
            case Cancelled():
                await self._end(
                    active, JobStatus.CANCELLED, _cancelled_error(), "cancelled by request"
                )
            case Preempted():
                active.dispatched = False
                await self._requeue(active, "server shutting down")
            case Failed(error=error):
                storage = storage_errors.KIND_OF_CODE.get(error.get("code", ""))
                if storage is not None:  # the worker could not write the job's files
                    self._storage.failed(storage, f"job {training_id}: {error.get('message')}")
                await self._end(active, JobStatus.FAILED, error, error.get("message", "failed"))
            case WorkerLost():
                await self._worker_lost(active, message)
            case WorkProgressed() | Returned() | Raised():
                log.warning("job %s: a work task's message %r ignored", training_id, message)
            case _:
                assert_never(message)

    async def _started(self, active: _ActiveJob) -> None:
        active.started_at = time.monotonic()
        now = time.time()
        await self._record(
            active,
            "progress",
            {
                "status": "TRAINING_STATUS_RUNNING",
                "phase": "TRAINING_PHASE_LOADING_DATA",
                "percent_complete": 0.0,
            },
            status=JobStatus.RUNNING,
            phase="loading_data",
            start_time=now,
            executor=self._pool.name,  # a resumed job may run on another executor than before
            timeline=_timeline(active.job, JobStatus.RUNNING, "worker started"),
        )

    async def _worker_lost(self, active: _ActiveJob, lost: WorkerLost) -> None:
        """Resume a job whose worker died from its checkpoint, or fail it past the bound.

        An executor that says what was lost (an ``error``: Ray, which has retried already) ends
        the job with that error.
        """
        job = active.job
        restarts = sum(
            1 for entry in job.timeline if entry.get("reason", "").startswith(WORKER_LOST_REASON)
        )
        exit_code = lost.exit_code
        if lost.error is None and restarts < MAX_WORKER_RESTARTS:
            log.warning(
                "job %s: its worker exited (code %s); resuming it from its last checkpoint"
                " (%d of %d)",
                job.training_id,
                exit_code,
                restarts + 1,
                MAX_WORKER_RESTARTS,
            )
            reason = (
                f"{WORKER_LOST_REASON} (exit code {exit_code}); resuming from the last"
                f" checkpoint ({restarts + 1} of {MAX_WORKER_RESTARTS})"
            )
            await self._requeue(active, reason)
            if self._worker_losses is not None:
                self._worker_losses.labels("resumed").inc()
            # Its worker slot is free (the pool replaced the process); it goes first.
            active.dispatched = False
            self._free_workers.release()
            self._waiting.appendleft(job.training_id)
            self._work_available.set()
            return
        error = lost.error or {
            "code": "WORKER_LOST",
            "message": f"the training worker process exited (code {exit_code})"
            + (f" after {restarts} resumptions from the job's checkpoint" if restarts else ""),
            "hint": "Train again; if it repeats, the data or settings may exhaust memory.",
            "retryable": True,
        }
        if self._worker_losses is not None:
            self._worker_losses.labels("failed").inc()
        await self._end(active, JobStatus.FAILED, error, error["message"])

    async def _record_progress(self, active: _ActiveJob, update: dict[str, Any]) -> None:
        percent, eta = percent_and_eta(update, time.monotonic() - active.started_at)
        payload = {
            "status": "TRAINING_STATUS_RUNNING",
            "phase": f"TRAINING_PHASE_{update['phase'].upper()}",
            "epoch": update["epoch"],
            "total_epochs": update["total_epochs"],
            "step": update["step"],
            "total_steps": update["total_steps"],
            "examples_per_second": update["examples_per_second"] or 0.0,
            "percent_complete": percent,
        }
        for name in (
            "loss",
            "train_accuracy",
            "validation_accuracy",
            "validation_loss",
            "policy_value",
        ):
            if update.get(name) is not None:
                payload[name] = update[name]
        if eta is not None:
            payload["eta_seconds"] = eta
        await self._record(
            active, "progress", payload, phase=update["phase"], percent_complete=percent
        )

    async def _succeed(self, active: _ActiveJob, result: Trained) -> None:
        job = active.job
        try:
            files = await asyncio.to_thread(
                move_version_files,
                self._config.artifact_root,
                job.agent_id,
                self.workdir(job.training_id) / "artifact",
            )
        except Exception as error:
            storage = self._storage.classify(error)
            if storage is None:
                raise
            self._storage.failed(storage, error)
            await self._end(
                active, JobStatus.FAILED, storage_errors.job_error(storage), "version not stored"
            )
            return
        agent = await asyncio.to_thread(self._store.get_agent, job.agent_id)
        target = self._config.artifact_root / files.artifact_dir
        version = version_of_job(job, result, files, agent.default_behavior)
        rollout = job.config.get(ROLLOUT_KEY)
        # Nothing to compare a first version with: it becomes active whatever was asked.
        starts_rollout = bool(rollout) and bool(agent.active_version_id)
        try:
            await self._end(
                active,
                JobStatus.SUCCEEDED,
                {},
                "trained",
                version=version,
                metrics=result.metrics,
                activate=not starts_rollout,
            )
        except _EventNotRecorded:
            await asyncio.to_thread(shutil.rmtree, target, ignore_errors=True)  # no row names it
            raise
        if rollout and starts_rollout:
            await self._start_rollout(version, agent.active_version_id, rollout)

    async def _start_rollout(
        self, version: AgentVersion, active_version_id: str, request: dict[str, Any]
    ) -> None:
        """Start the rollout a job's request asked for, with the version it made.

        Where one runs already (started since the job was accepted) the version stays, not
        active, for StartRollout; so does it if the server stops between the job's end and this.
        """
        rollout = new_rollout(
            version.agent_id, version.version_id, active_version_id,
            RolloutRequest.from_json(request),
        )  # fmt: skip
        try:
            await asyncio.to_thread(self._store.create_rollout, rollout)
        except (RolloutRunning, ServiceError) as error:
            log.warning(
                "job version %s of agent %s kept, not active: its rollout did not start (%s)",
                version.version_id, version.agent_id, error,
            )  # fmt: skip

    # Recording ----------------------------------------------------------------------------

    async def _record(
        self,
        active: _ActiveJob,
        kind: str,
        payload: dict[str, Any],
        version: AgentVersion | None = None,
        after_store: Callable[[], Awaitable[None]] | None = None,
        activate: bool = True,
        **changes: Any,
    ) -> JobEvent:
        """Append one event with the job's changes, durably, then publish it.

        ``after_store`` is awaited between the two: once the event is stored, before any
        subscriber sees it.

        Raises:
            _EventNotRecorded: the store refused the event; the job was ended FAILED
                (EVENT_LOG_UNAVAILABLE) and its worker freed, so the caller stops there.
        """
        failure: Exception | None = None
        async with active.lock:
            sequence = active.job.last_sequence + 1
            job = dataclasses.replace(active.job, last_sequence=sequence, **changes)
            event = JobEvent(job.training_id, sequence, time.time(), kind, payload)
            try:
                await asyncio.to_thread(
                    self._store.append_event, event, job, version, self.owner, activate
                )
            except LeaseLost:
                pass  # failure stays None: another replica owns the job
            except Exception as error:  # sqlite3.Error, OSError, a job row that is gone
                failure = error
            else:
                if after_store is not None:
                    await after_store()
                self._publish(active, job, event)
                return event
        if failure is None:
            self._let_go_of(active)
            raise _EventNotRecorded(job.training_id)
        await self._fail_unrecorded(active, failure)
        raise _EventNotRecorded(job.training_id) from failure

    def _let_go_of(self, active: _ActiveJob) -> None:
        """Stop running a job another replica has taken (this one's lease ran out meanwhile).

        Nothing is stored: the job, its folder and its log are the new owner's now.
        """
        training_id = active.job.training_id
        if self._active.get(training_id) is not active:
            return
        log.warning("job %s: another replica took it over; this replica lets it go", training_id)
        self._active.pop(training_id)
        self._let_go.add(training_id)
        if active.dispatched and not active.worker_done:
            self._pool.cancel(training_id)  # stops at its next step, then reports
            self._draining.add(training_id)
        elif active.dispatched:
            self._free_workers.release()
        for subscriber in active.subscribers:
            subscriber.put_nowait(MOVED)

    @staticmethod
    def _publish(active: _ActiveJob, job: TrainingJob, event: JobEvent) -> None:
        active.job = job
        # Published under the job's lock: subscribers must receive events in sequence order.
        for subscriber in list(active.subscribers):
            subscriber.put_nowait(event)

    async def _fail_unrecorded(self, active: _ActiveJob, failure: Exception) -> None:
        """End a job whose event could not be stored: FAILED, retryable, its worker freed.

        A job that cannot record its progress could never record its end either, and would hold
        its worker for good. Its training stops; the final event is stored if the store takes
        it now (a conflicting sequence number is skipped), and is kept in memory otherwise,
        for GetTrainingJob and watchers, until the restart resumes the job from its checkpoint.
        """
        job = active.job
        if self._active.get(job.training_id) is not active:
            return  # another event of the job failed first and ended it
        log.error(
            "job %s failed: its events cannot be stored (%s: %s)",
            job.training_id,
            type(failure).__name__,
            failure,
        )
        if self._metrics is not None:
            self._metrics.event_log_failures.inc()
        storage = self._storage.classify(failure)
        if storage is not None:  # named for what it is: a full or read-only data folder
            self._storage.failed(storage, failure)
            error = storage_errors.job_error(storage)
        else:
            error = {
                "code": "EVENT_LOG_UNAVAILABLE",
                "message": "the job's progress could not be stored, so the job was stopped",
                "hint": "Train again (the same config.seed gives the same result); if it"
                " repeats, the server's database needs attention (disk space, file permissions).",
                "retryable": True,
            }
        self._active.pop(job.training_id, None)
        if active.dispatched and not active.worker_done:
            self._pool.cancel(job.training_id)  # stops at its next step, then reports
            self._draining.add(job.training_id)
        elif active.dispatched:
            self._free_workers.release()
        async with active.lock:
            stored = await self._stored_sequences(job.training_id, job.last_sequence + 1)
            sequence = max([job.last_sequence, *stored]) + 1
            final = dataclasses.replace(
                job,
                last_sequence=sequence,
                status=JobStatus.FAILED,
                phase="",
                error=error,
                end_time=time.time(),
                timeline=_timeline(job, JobStatus.FAILED, "events could not be stored"),
            )
            payload = {"status": "TRAINING_STATUS_FAILED", "metrics": job.metrics, "error": error}
            event = JobEvent(job.training_id, sequence, time.time(), "finished", payload)
            try:
                await asyncio.to_thread(self._store.append_event, event, final, None, self.owner)
            except LeaseLost:  # another replica runs it: its end is not this replica's to tell
                self._let_go.add(job.training_id)
                for subscriber in active.subscribers:
                    subscriber.put_nowait(MOVED)
                return
            except Exception:  # the same failure again: kept in memory only
                self._unrecorded[job.training_id] = (final, event)  # resumes after a restart
            else:
                if job.training_id not in self._draining:  # else once its worker stopped
                    await self._prune_workdirs([job.training_id])
            self._publish(active, final, event)
        self._count_end(final)

    async def _stored_sequences(self, training_id: str, from_sequence: int) -> list[int]:
        """Sequence numbers stored from ``from_sequence`` on, by whatever wrote them."""
        try:
            events = await asyncio.to_thread(self._store.list_events, training_id, from_sequence)
        except Exception:
            return []
        return [event.sequence for event in events]

    async def _end(
        self,
        active: _ActiveJob,
        status: str,
        error: dict[str, Any],
        reason: str,
        version: AgentVersion | None = None,
        metrics: dict[str, float] | None = None,
        activate: bool = True,
    ) -> None:
        if active.job.status in JobStatus.ENDED:
            return
        metrics = metrics if metrics is not None else active.job.metrics
        payload: dict[str, Any] = {"status": f"TRAINING_STATUS_{status}", "metrics": metrics}
        if version is not None:
            payload["version_id"] = version.version_id
        if error:
            payload["error"] = error
        await self._record(
            active,
            "finished",
            payload,
            version=version,
            activate=activate,
            # Its worker is done with it (or never had it), and nothing resumes an ended job: its
            # resumable checkpoints go (the kept ones stay) once the final state (and version)
            # is stored, before the event is published, so a client that sees the end sees the
            # folder pruned. A crash in between leaves the folder to start-up's clean-up.
            after_store=lambda: self._prune_workdirs([active.job.training_id]),
            status=status,
            phase="",
            error=error,
            metrics=metrics,
            end_time=time.time(),
            version_id=version.version_id if version else "",
            percent_complete=(
                100.0 if status == JobStatus.SUCCEEDED else active.job.percent_complete
            ),
            timeline=_timeline(active.job, status, reason),
        )
        self._count_end(active.job)
        self._active.pop(active.job.training_id, None)
        if active.dispatched:
            self._free_workers.release()

    def _count_end(self, job: TrainingJob) -> None:
        if self._metrics is not None:
            started = job.start_time or job.create_time
            self._metrics.job_ended(
                job.training_id,
                job.training_type,
                job.status,
                max(0.0, (job.end_time or time.time()) - started),
                int(job.metrics.get("epochs_run", 0) or 0),
            )

    async def _remove_workdirs(self, training_ids: list[str]) -> None:
        for training_id in training_ids:
            await asyncio.to_thread(shutil.rmtree, self.workdir(training_id), ignore_errors=True)

    async def _prune_workdirs(self, training_ids: list[str]) -> None:
        """Remove what ended jobs no longer need: all but their kept checkpoints."""
        for training_id in training_ids:
            await asyncio.to_thread(job_checkpoints.prune_job_folder, self.workdir(training_id))

    async def delete_agent_jobs(self, agent_id: str, delete_agent: Any) -> None:
        """Delete an agent through ``delete_agent`` and then its jobs' folders on disk."""
        rows = await asyncio.to_thread(
            self._store.list_jobs,
            agent_id=agent_id,
            statuses=(),
            limit=1_000_000,
            before_position=0,
        )
        await delete_agent(agent_id)
        await self._remove_workdirs([job.training_id for _position, job in rows])

    # Reading, watching, cancelling ------------------------------------------------------------

    async def get(self, training_id: str, tenant: str | None = None) -> TrainingJob:
        """Return a job (of ``tenant``'s agents), in its live state when it is running.

        The store is read even for a running job: another tenant's running job is then a row
        not found on the same path, in the same time, as a missing id.
        """
        stored = await asyncio.to_thread(self._store.get_job, training_id, tenant)
        return self._live(stored)

    async def list(
        self,
        agent_id: str,
        statuses: tuple[str, ...],
        page_size: int,
        before_position: int,
        tenant: str | None = None,
    ) -> Page[TrainingJob]:
        """Return a page of jobs (of a tenant's agents), newest first."""
        rows = await asyncio.to_thread(
            self._store.list_jobs,
            agent_id=agent_id,
            statuses=statuses,
            limit=page_size + 1,
            before_position=before_position,
            tenant=tenant,
        )
        jobs = [self._live(job) for _position, job in rows[:page_size]]
        next_position = str(rows[page_size - 1][0]) if len(rows) > page_size else ""
        return Page(jobs, next_position)

    def _live(self, job: TrainingJob) -> TrainingJob:
        """The job as this server knows it, which may be newer than the stored row."""
        if job.training_id in self._active:
            return self._active[job.training_id].job
        if job.training_id in self._unrecorded:
            return self._unrecorded[job.training_id][0]
        return job

    async def unfinished_jobs_of(self, agent_id: str) -> builtins.list[TrainingJob]:
        """Jobs of an agent that have not ended, on any replica."""
        rows = await asyncio.to_thread(
            self._store.list_jobs,
            agent_id=agent_id,
            statuses=(JobStatus.QUEUED, JobStatus.RUNNING),
            limit=1_000_000,
            before_position=0,
        )
        return [self._live(job) for _position, job in rows]

    async def watch(self, training_id: str, from_sequence: int) -> AsyncIterator[JobEvent]:
        """Yield a job's events from ``from_sequence`` to its end: stored ones, then live ones.

        Live events come from this replica's queue while it runs the job, and from the stored
        log, read every REMOTE_WATCH_SECONDS, while another replica does.
        """
        await self.get(training_id)  # NotFound for unknown jobs
        last = max(from_sequence, 1) - 1
        while True:
            if self._closing:
                raise _shutting_down()
            inbox: asyncio.Queue[JobEvent | _Moved | None] = asyncio.Queue()
            announced = asyncio.Event()
            active = self._active.get(training_id)
            # Listening before the stored log is read: nothing is missed in between.
            if active is not None:
                active.subscribers.add(inbox)
            else:
                self._remote_watchers.setdefault(training_id, set()).add(announced)
            try:
                events = await asyncio.to_thread(self._store.list_events, training_id, last + 1)
                for event in events:
                    last = event.sequence
                    yield event
                    if event.kind == "finished":
                        return
                if active is None:
                    if training_id in self._unrecorded:  # its end is known here, not stored
                        yield self._unrecorded[training_id][1]
                        return
                    if not events:
                        await self._wait_for_remote_events(training_id, announced)
                    continue
                async for live in _live_events(inbox, last):
                    last = live.sequence
                    yield live
                    if live.kind == "finished":
                        return
            finally:
                if active is not None:
                    active.subscribers.discard(inbox)
                else:
                    self._forget_remote_watcher(training_id, announced)

    async def _wait_for_remote_events(self, training_id: str, announced: asyncio.Event) -> None:
        """Wait for the store to announce an event of a job another replica runs (or a while).

        Raises:
            NotFound: the job is gone meanwhile (its agent was deleted).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(REMOTE_WATCH_SECONDS):
                await announced.wait()
        if not announced.is_set():
            await asyncio.to_thread(self._store.get_job, training_id)

    def _wake_remote_watchers(self, training_id: str) -> None:
        for announced in self._remote_watchers.get(training_id, ()):
            announced.set()

    def _forget_remote_watcher(self, training_id: str, announced: asyncio.Event) -> None:
        watchers = self._remote_watchers.get(training_id)
        if watchers is not None:
            watchers.discard(announced)
            if not watchers:
                del self._remote_watchers[training_id]

    async def cancel(self, training_id: str, wait_seconds: float = 10.0) -> TrainingJob:
        """Cancel a job; a running one stops at its next step (waited for up to wait_seconds).

        A job another replica runs is cancelled by that replica, which finds the request in
        the store at its next heartbeat.
        """
        job = await self.get(training_id)
        if job.status in JobStatus.ENDED:
            raise _already_ended(job, "Only QUEUED, RUNNING or PAUSED jobs can be cancelled.")
        if job.status == JobStatus.PAUSED:
            await self._cancel_paused(training_id)
            return await self.get(training_id)
        self._pausing.discard(training_id)  # a cancel wins over a pause asked for before
        active = self._active.get(training_id)
        if active is None:
            await asyncio.to_thread(self._store.request_job_cancel, training_id)
        elif not active.dispatched:
            await self._cancel_owned(active)
            return await self.get(training_id)
        else:
            await self._cancel_owned(active)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                async for _event in self.watch(training_id, job.last_sequence + 1):
                    pass
        return await self.get(training_id)

    async def _cancel_paused(self, training_id: str) -> None:
        """End a paused job CANCELLED (it holds no worker: nothing to stop)."""
        job = await self._take_paused(training_id)
        active = _ActiveJob(job)
        self._active[training_id] = active
        with contextlib.suppress(_EventNotRecorded):
            await self._end(active, JobStatus.CANCELLED, _cancelled_error(), "cancelled by request")

    async def _take_paused(self, training_id: str, limits: JobLimits | None = None) -> TrainingJob:
        """Own a paused job in the store, to resume or cancel it.

        Raises:
            FailedPrecondition: JOB_NOT_PAUSED, resumed or cancelled meanwhile.
            ResourceExhausted: a limit of ``limits`` is reached.
        """
        try:
            return await asyncio.to_thread(
                self._store.take_paused_job, training_id, self.owner, limits
            )
        except JobNotPaused as error:
            raise _not_paused(training_id, error.status) from None
        except JobLimitReached as reached:
            assert limits is not None
            raise _limit_error(reached, limits) from None

    async def pause(self, training_id: str, wait_seconds: float = 10.0) -> TrainingJob:
        """Pause a queued or running job: it checkpoints at its next step and frees its worker.

        Waits up to ``wait_seconds`` for a running job to stop. A job another replica runs is
        paused by that replica, which finds the request in the store at its next heartbeat.
        Pausing a paused job changes nothing.

        Raises:
            FailedPrecondition: JOB_ALREADY_ENDED.
        """
        job = await self.get(training_id)
        if job.status in JobStatus.ENDED:
            raise _already_ended(
                job,
                "Only QUEUED or RUNNING jobs can be paused; a finished job's checkpoints are"
                " listed by ListTrainingCheckpoints.",
            )
        if job.status == JobStatus.PAUSED:
            return job
        active = self._active.get(training_id)
        if active is None:
            await asyncio.to_thread(self._store.request_job_pause, training_id)
        else:
            await self._pause_owned(active)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait_seconds):
                async for event in self.watch(training_id, job.last_sequence + 1):
                    if event.payload.get("status") == "TRAINING_STATUS_PAUSED":
                        break
        return await self.get(training_id)

    async def _pause_owned(self, active: _ActiveJob) -> None:
        """Pause a job this replica owns: at once while queued, else at its worker's next step."""
        if not active.dispatched:
            with contextlib.suppress(_EventNotRecorded):
                await self._record_paused(active)
            return
        self._pausing.add(active.job.training_id)
        self._pool.cancel(active.job.training_id)  # it checkpoints, then reports "cancelled"

    async def _record_paused(self, active: _ActiveJob) -> None:
        """Record the job PAUSED and let it go: no worker, no queue place, no live watchers.

        Its watchers read on from the stored log, where they see it resumed.
        """
        training_id = active.job.training_id
        await self._record(
            active,
            "progress",
            {"status": "TRAINING_STATUS_PAUSED"},
            status=JobStatus.PAUSED,
            phase="",
            timeline=_timeline(active.job, JobStatus.PAUSED, "paused by request"),
        )
        self._active.pop(training_id, None)
        if active.dispatched:
            self._free_workers.release()
        for subscriber in active.subscribers:
            subscriber.put_nowait(MOVED)

    async def resume(self, training_id: str) -> TrainingJob:
        """Queue a paused job again; it continues from the checkpoint it paused at.

        Counted against the queue and tenant limits as a new job.

        Raises:
            FailedPrecondition: JOB_NOT_PAUSED.
            ResourceExhausted: QUEUE_FULL or TENANT_JOB_LIMIT.
            Unavailable: the server is shutting down.
        """
        job = await self.get(training_id)
        if job.status != JobStatus.PAUSED:
            raise _not_paused(training_id, job.status)
        if self._closing:
            raise _work_shutting_down()
        limits = JobLimits(
            self._config.max_queued_jobs, self._config.max_jobs_per_tenant, current_tenant()
        )
        job = await self._take_paused(training_id, limits)
        data = await asyncio.to_thread(self._store.load_dataset, job.dataset_sha256)
        active = _ActiveJob(job, await self.task_for(job, examples_from_bytes(data)))
        self._active[training_id] = active
        try:
            await self._record(
                active,
                "progress",
                {"status": "TRAINING_STATUS_QUEUED"},
                status=JobStatus.QUEUED,
                phase="",
                timeline=_timeline(job, JobStatus.QUEUED, "resumed by request"),
            )
        except _EventNotRecorded:
            return await self.get(training_id)
        self._waiting.append(training_id)
        self._work_available.set()
        return active.job

    async def _cancel_owned(self, active: _ActiveJob) -> None:
        """Cancel a job this replica owns: at once while queued, else at its worker's next step."""
        if active.dispatched:
            self._pool.cancel(active.job.training_id)
            return
        with contextlib.suppress(_EventNotRecorded):  # then it is FAILED instead
            await self._end(active, JobStatus.CANCELLED, _cancelled_error(), "cancelled by request")


async def _live_events(
    inbox: asyncio.Queue[JobEvent | _Moved | None], last: int
) -> AsyncIterator[JobEvent]:
    """Events published to a watcher after sequence ``last``, until the job moves away.

    Raises:
        Unavailable: the server is shutting down.
    """
    while True:
        live = await inbox.get()
        if live is None:
            raise _shutting_down()
        if isinstance(live, _Moved):
            return
        if live.sequence <= last:
            continue  # already sent from the stored log
        last = live.sequence
        yield live


def _limit_error(reached: JobLimitReached, limits: JobLimits) -> ResourceExhausted:
    """The error of a job the store refused for a limit."""
    if reached.limit == "max_queued":
        return ResourceExhausted(
            f"the training queue is full ({reached.count} jobs waiting)",
            code="QUEUE_FULL",
            hint="Retry after the RetryInfo delay, or ask the operator to raise"
            " max_queued_jobs or add workers.",
            retryable=True,
            retry_after_seconds=10.0,
        )
    return ResourceExhausted(
        f"{reached.count} training jobs of this tenant are queued or running; the limit"
        f" is {limits.max_unfinished_per_tenant}",
        code="TENANT_JOB_LIMIT",
        hint="Retry after the RetryInfo delay (a job of yours must end first), cancel one"
        " with CancelTrainingJob, or ask the operator to raise max_jobs_per_tenant.",
        retryable=True,
        retry_after_seconds=10.0,
    )


async def _cancel(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _timeline(job: TrainingJob, status: str, reason: str) -> list[dict[str, Any]]:
    return [*job.timeline, {"status": status, "time": time.time(), "reason": reason}]


def _shutting_down() -> Unavailable:
    return Unavailable(
        "the server is shutting down; the job goes on after the restart",
        code="SERVER_SHUTTING_DOWN",
        hint="Re-attach with WatchTrainingJob(training_id, from_sequence = the last sequence"
        " received + 1) once the server is back: no event is lost or repeated.",
        retry_after_seconds=5.0,
    )


def _work_shutting_down() -> Unavailable:
    return Unavailable(
        "the server is shutting down",
        code="SERVER_SHUTTING_DOWN",
        hint="Retry once the server is back.",
        retry_after_seconds=5.0,
    )


def _work_lost(exit_code: int | None, error: dict[str, Any] | None) -> Unavailable:
    """The error of work whose worker process died (not resumed: retrying costs the same)."""
    if error is not None:  # Ray, which retried it already
        return Unavailable(error["message"], code=error["code"], hint=error["hint"])
    return Unavailable(
        f"the worker process doing this work exited (code {exit_code})",
        code="WORKER_LOST",
        hint="Retry; if it repeats, the data or settings may exhaust the worker's memory.",
    )


def _already_ended(job: TrainingJob, hint: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"training job {job.training_id!r} has already ended ({job.status})",
        code="JOB_ALREADY_ENDED",
        hint=hint,
    )


def _not_paused(training_id: str, status: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"training job {training_id!r} is {status}, not PAUSED",
        code="JOB_NOT_PAUSED",
        hint="Only a job paused by PauseTrainingJob can be resumed; GetTrainingJob shows its"
        " status.",
    )


def _cancelled_error() -> dict[str, Any]:
    return {
        "code": "TRAINING_CANCELLED",
        "message": "the job was cancelled",
        "hint": "The agent keeps its previous active version; train again when ready.",
        "retryable": False,
    }
