"""Agent management: create, get, list, delete agents; list and activate versions."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import shutil
import time
from pathlib import Path

from agent_training_server.auth import current_tenant
from agent_training_server.domain import Agent, AgentVersion, BehaviorSettings, Page
from agent_training_server.store.base import IdempotencyKey, Store


def new_id(prefix: str) -> str:
    """Return a fresh random id such as ``agent_3f9a0c1e2b4d5a6f``."""
    return f"{prefix}_{secrets.token_hex(8)}"


def request_digest(payload: bytes) -> str:
    """Digest of a serialised request, to tell an identical retry from a different request."""
    return hashlib.sha256(payload).hexdigest()


class AgentService:
    """Agents and their versions. Store calls run in threads to keep the event loop free."""

    def __init__(self, store: Store, data_dir: Path) -> None:
        self._store = store
        self._data_dir = data_dir

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
        key = None
        if request_id:
            key = IdempotencyKey(
                "CreateAgent", request_id, request_digest(request_bytes), current_tenant()
            )
        created, _replayed = await asyncio.to_thread(self._store.create_agent, agent, key)
        return created

    async def get(self, agent_id: str) -> Agent:
        """Return the caller's agent; another tenant's raises the NotFound of a missing one."""
        return await asyncio.to_thread(self._store.get_agent, agent_id, current_tenant())

    async def list(self, page_size: int, after_agent_id: str, tenant: str) -> Page[Agent]:
        """Return a page of a tenant's agents ordered by id."""
        # One extra row tells whether there is a next page without a count query.
        agents = await asyncio.to_thread(
            self._store.list_agents, page_size + 1, after_agent_id, tenant
        )
        if len(agents) <= page_size:
            return Page(agents, "")
        return Page(agents[:page_size], agents[page_size - 1].agent_id)

    async def delete(self, agent_id: str) -> None:
        """Delete an agent, its versions and their weights on disk."""
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
        versions = await asyncio.to_thread(
            self._store.list_versions, agent_id, page_size + 1, before_number
        )
        agent = await self.get(agent_id)
        if len(versions) <= page_size:
            return Page(versions, ""), agent.active_version_id
        last = versions[page_size - 1]
        return Page(versions[:page_size], str(last.version_number)), agent.active_version_id

    async def get_version(self, agent_id: str, version_id: str) -> AgentVersion:
        """Return a version."""
        return await asyncio.to_thread(self._store.get_version, agent_id, version_id)

    async def activate(self, agent_id: str, version_id: str) -> Agent:
        """Make a version active (also how a rollback is done)."""
        return await asyncio.to_thread(self._store.activate_version, agent_id, version_id)
