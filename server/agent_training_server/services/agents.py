"""Agent management: create, get, list, delete agents; list and activate versions.

Every method reads the caller's tenant (`current_tenant()`): another tenant's agent answers
exactly as a missing one (the store's NotFound). The services layer is where tenancy is
enforced; the handlers pass ids.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from agent_training_server.auth import current_tenant
from agent_training_server.domain import Agent, AgentVersion, BehaviorSettings, Page, TrainingJob
from agent_training_server.errors import FailedPrecondition
from agent_training_server.store.base import IdempotencyKey, Store


def new_id(prefix: str) -> str:
    """Return a fresh random id such as ``agent_3f9a0c1e2b4d5a6f``."""
    return f"{prefix}_{secrets.token_hex(8)}"


def request_digest(payload: bytes) -> str:
    """Digest of a serialised request, to tell an identical retry from a different request."""
    return hashlib.sha256(payload).hexdigest()


def idempotency_key(method: str, request_id: str, request_bytes: bytes) -> IdempotencyKey | None:
    """The store's key for the caller's request_id (None without one)."""
    if not request_id:
        return None
    return IdempotencyKey(method, request_id, request_digest(request_bytes), current_tenant())


class AgentJobs(Protocol):
    """What deleting an agent needs of the job manager (services/jobs.py's JobManager)."""

    async def unfinished_jobs_of(self, agent_id: str) -> list[TrainingJob]:
        """Jobs of an agent that have not ended, on any replica."""
        ...

    async def cancel(self, training_id: str) -> TrainingJob:
        """Cancel a job and wait (a while) for it to stop."""
        ...

    async def delete_agent_jobs(
        self, agent_id: str, delete_agent: Callable[[str], Awaitable[None]]
    ) -> None:
        """Delete the agent through ``delete_agent``, then its jobs' folders."""
        ...


class AgentService:
    """Agents and their versions. Store calls run in threads to keep the event loop free."""

    def __init__(self, store: Store, data_dir: Path, jobs: AgentJobs | None = None) -> None:
        """Agents in ``store``, their weights under ``data_dir``.

        ``jobs`` are the training jobs, whose unfinished ones a forced deletion cancels (None
        where no jobs run, as in tests of the store).
        """
        self._store = store
        self._data_dir = data_dir
        self._jobs = jobs

    async def create(
        self,
        *,
        agent_id: str,
        display_name: str,
        description: str,
        labels: dict[str, str],
        default_behavior: BehaviorSettings,
        request_id: str = "",
        request_bytes: bytes = b"",
    ) -> Agent:
        """Create an agent; a retry with the same request_id returns the same agent."""
        now = time.time()
        agent = Agent(
            agent_id=agent_id or new_id("agent"),
            display_name=display_name,
            description=description,
            labels=labels,
            default_behavior=default_behavior,
            create_time=now,
            update_time=now,
            tenant=current_tenant(),
        )
        key = idempotency_key("CreateAgent", request_id, request_bytes)
        created, _replayed = await asyncio.to_thread(self._store.create_agent, agent, key)
        return created

    async def get(self, agent_id: str) -> Agent:
        """Return the caller's agent; another tenant's raises the NotFound of a missing one."""
        return await asyncio.to_thread(self._store.get_agent, agent_id, current_tenant())

    async def list(self, page_size: int, after_agent_id: str) -> Page[Agent]:
        """Return a page of the caller's agents ordered by id."""
        # One extra row tells whether there is a next page without a count query.
        agents = await asyncio.to_thread(
            self._store.list_agents, page_size + 1, after_agent_id, current_tenant()
        )
        if len(agents) <= page_size:
            return Page(agents, "")
        return Page(agents[:page_size], agents[page_size - 1].agent_id)

    async def delete(self, agent_id: str, *, force: bool = False) -> None:
        """Delete the caller's agent, its versions, their weights and its jobs' folders.

        Raises:
            FailedPrecondition: the agent has queued or running jobs and ``force`` is off; with
                it they are cancelled first.
        """
        await self.get(agent_id)
        if self._jobs is None:
            await self._delete_rows_and_weights(agent_id)
            return
        unfinished = await self._jobs.unfinished_jobs_of(agent_id)
        if unfinished and not force:
            raise FailedPrecondition(
                f"agent {agent_id!r} has {len(unfinished)} queued or running jobs",
                code="AGENT_HAS_RUNNING_JOBS",
                hint="Cancel them first, or pass force=true to cancel them and delete.",
            )
        for job in unfinished:
            await self._jobs.cancel(job.training_id)
        await self._jobs.delete_agent_jobs(agent_id, self._delete_rows_and_weights)

    async def _delete_rows_and_weights(self, agent_id: str) -> None:
        await asyncio.to_thread(self._store.delete_agent, agent_id)
        # Weights go after the rows: a crash in between leaves unreferenced files, never rows
        # that point at missing files.
        await asyncio.to_thread(
            shutil.rmtree, self._data_dir / "artifacts" / agent_id, ignore_errors=True
        )

    async def list_versions(
        self, agent_id: str, page_size: int, before_number: int
    ) -> tuple[Page[AgentVersion], str]:
        """Return a page of versions (newest first) and the agent's active version id."""
        agent = await self.get(agent_id)
        versions = await asyncio.to_thread(
            self._store.list_versions, agent_id, page_size + 1, before_number
        )
        if len(versions) <= page_size:
            return Page(versions, ""), agent.active_version_id
        last = versions[page_size - 1]
        return Page(versions[:page_size], str(last.version_number)), agent.active_version_id

    async def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Return a version of an agent the caller has already fetched with `get`."""
        return await asyncio.to_thread(self._store.get_version, agent_id, version_id)

    async def activate(self, agent_id: str, version_id: str) -> Agent:
        """Make a version of the caller's agent active (also how a rollback is done)."""
        await self.get(agent_id)
        return await asyncio.to_thread(self._store.activate_version, agent_id, version_id)
