"""A job's kept checkpoints: listing them, and making a version from one.

The files and their retention are job_checkpoints.py's; the job's engine writes them. A version
from a checkpoint is built in a worker (JobManager.run_work) by the job's own engine, on the
job's own data and settings, from that checkpoint's weights: it is measured as a job's version is
at its end, and its lineage names the job and the checkpoint.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path

from agent_training_server import job_checkpoints
from agent_training_server.artifacts import move_version_files
from agent_training_server.auth import current_tenant
from agent_training_server.config import ServerConfig
from agent_training_server.domain import AgentVersion, JobStatus, Page, TrainingJob
from agent_training_server.errors import FailedPrecondition, NotFound
from agent_training_server.job_checkpoints import KeptCheckpoint
from agent_training_server.jobs.worker import finish_from_checkpoint
from agent_training_server.services.agents import request_digest
from agent_training_server.services.jobs import JobManager, examples_from_bytes, version_of_job
from agent_training_server.store.base import IdempotencyKey, Store

WORK_FOLDER_PREFIX = "version-from-"
"""Inside the job's folder: where a version from one of its checkpoints is built."""


class CheckpointService:
    """ListTrainingCheckpoints and CreateVersionFromCheckpoint, for the caller's jobs."""

    def __init__(self, store: Store, jobs: JobManager, config: ServerConfig) -> None:
        self._store = store
        self._jobs = jobs
        self._config = config

    async def list(
        self, training_id: str, page_size: int, after_epoch: int
    ) -> tuple[Page[KeptCheckpoint], int]:
        """A page of the job's kept checkpoints after ``after_epoch``, and its best epoch.

        Raises:
            NotFound: TRAINING_JOB_NOT_FOUND, also for another tenant's job.
        """
        await self._jobs.get(training_id, current_tenant())
        kept = await asyncio.to_thread(
            job_checkpoints.job_checkpoints, self._jobs.workdir(training_id)
        )
        later = [checkpoint for checkpoint in kept if checkpoint.epoch > after_epoch]
        page = later[:page_size]
        next_token = str(page[-1].epoch) if len(later) > page_size else ""
        return Page(page, next_token), job_checkpoints.best_epoch(kept)

    async def create_version(
        self,
        training_id: str,
        checkpoint_id: str,
        activate: bool,
        request_id: str = "",
        request_bytes: bytes = b"",
    ) -> AgentVersion:
        """Make a version of the job's agent from one of its kept checkpoints.

        Raises:
            NotFound: the job (also another tenant's), or the checkpoint, is not there.
            FailedPrecondition: JOB_NOT_STOPPED (queued or running: its files are changing),
                CHECKPOINT_DAMAGED, or the engine's own failure.
        """
        job = await self._jobs.get(training_id, current_tenant())
        key = None
        if request_id:
            digest = request_digest(request_bytes)
            key = IdempotencyKey(
                "CreateVersionFromCheckpoint", request_id, digest, current_tenant()
            )
            replayed = await asyncio.to_thread(self._store.replayed_version, job.agent_id, key)
            if replayed is not None:
                return replayed
        if job.status in (JobStatus.QUEUED, JobStatus.RUNNING):
            raise FailedPrecondition(
                f"training job {training_id!r} is {job.status}: its checkpoints are changing",
                code="JOB_NOT_STOPPED",
                hint="Pause it with PauseTrainingJob (or wait for it to end), then try again.",
            )
        epoch = job_checkpoints.epoch_of(checkpoint_id)
        job_folder = self._jobs.workdir(training_id)
        work_folder = job_folder / f"{WORK_FOLDER_PREFIX}{secrets.token_hex(6)}"
        try:
            await asyncio.to_thread(
                job_checkpoints.prepare_finalize, job_folder, epoch or 0, work_folder
            )
        except FileNotFoundError:
            raise _checkpoint_not_found(training_id, checkpoint_id) from None
        try:
            version = await self._build(job, work_folder, checkpoint_id)
        finally:
            await asyncio.to_thread(shutil.rmtree, work_folder, ignore_errors=True)
        try:
            return await asyncio.to_thread(self._store.add_version, version, activate, key)
        except BaseException:
            target = self._config.artifact_root / version.artifact_dir
            await asyncio.to_thread(shutil.rmtree, target, ignore_errors=True)  # no row names it
            raise

    async def _build(self, job: TrainingJob, work_folder: Path, checkpoint_id: str) -> AgentVersion:
        """Run the job's engine from the checkpoint in a worker; move its files into place."""
        data = await asyncio.to_thread(self._store.load_dataset, job.dataset_sha256)
        task = await self._jobs.task_for(job, examples_from_bytes(data), workdir=work_folder)
        trained = await self._jobs.run_work(finish_from_checkpoint, task)
        files = await asyncio.to_thread(
            move_version_files, self._config.artifact_root, job.agent_id, work_folder / "artifact"
        )
        agent = await asyncio.to_thread(self._store.get_agent, job.agent_id)
        return version_of_job(job, trained, files, agent.default_behavior, checkpoint_id)


def _checkpoint_not_found(training_id: str, checkpoint_id: str) -> NotFound:
    return NotFound(
        f"training job {training_id!r} kept no checkpoint {checkpoint_id!r}",
        code="CHECKPOINT_NOT_FOUND",
        hint="ListTrainingCheckpoints lists the checkpoints a job kept (the best and the last"
        " config.keep_checkpoints epochs).",
    )
