"""Tenant-scoped store reads: another tenant's id takes the very path of an id that does not exist.

The store queries with the caller's tenant (``WHERE id = ? AND tenant = ?``), so both find no row
and raise the same NotFound from the same function; InvokeAgent's read cache keys on the tenant and
keeps no errors, so both go to the store on every call. Same path, hence no time to tell "someone
else's" from "nobody's" by (bench/tenant_timing.py measures that time; this checks the path).
"""

from __future__ import annotations

import asyncio
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_training_server.auth.principal import Principal, set_principal
from agent_training_server.domain import Agent, AgentVersion, Dataset
from agent_training_server.errors import NotFound
from agent_training_server.services.agents import AgentService
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.inference import InferenceService
from agent_training_server.store.sqlite import SqliteStore

AGENT = "agent_00000000000000a1"
MISSING_AGENT = "agent_00000000deadbeef"
DATASET = "ds_00000000000000a1"
MISSING_DATASET = "ds_00000000deadbeef"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store holding tenant A's trained agent and dataset."""
    store = SqliteStore(tmp_path / "store.db")
    store.create_agent(Agent(agent_id=AGENT, create_time=0.0, update_time=0.0, tenant="a"))
    version = AgentVersion(
        version_id="ver_1",
        agent_id=AGENT,
        version_number=0,
        source="training",
        training_type="supervised",
        outputs=("x", "y"),
    )
    store.add_version(version, activate=True)
    store.begin_dataset(Dataset(dataset_id=DATASET, name="a-data", tenant="a"))
    store.finish_dataset(DATASET, 0, 0, "")
    yield store
    store.close()


def _failure(read: Callable[[], Any]) -> tuple[tuple[str, str, str, bool], str]:
    """The NotFound a read raises, with its ids masked, and the function that raised it."""
    with pytest.raises(NotFound) as caught:
        read()
    error = caught.value
    message = error.message
    for name in (AGENT, MISSING_AGENT, DATASET, MISSING_DATASET):
        message = message.replace(name, "<id>")
    raised_in = traceback.extract_tb(error.__traceback__)[-1].name
    return (error.code, message, error.hint, error.retryable), raised_in


@pytest.mark.parametrize(
    ("read", "other", "missing"),
    [
        (lambda s, i: s.get_agent(i, "b"), AGENT, MISSING_AGENT),
        (lambda s, i: s.agent_with_version(i, "", "b"), AGENT, MISSING_AGENT),
        (lambda s, i: s.agent_with_version(i, "ver_1", "b"), AGENT, MISSING_AGENT),
        (lambda s, i: s.get_dataset(i, "b"), DATASET, MISSING_DATASET),
    ],
    ids=["get_agent", "agent_with_version", "agent_with_named_version", "get_dataset"],
)
def test_another_tenants_id_raises_the_missing_ids_not_found_from_the_same_place(
    store: SqliteStore, read: Callable[[SqliteStore, str], Any], other: str, missing: str
) -> None:
    hidden = _failure(lambda: read(store, other))
    absent = _failure(lambda: read(store, missing))
    assert hidden == absent
    assert hidden[1] in ("_agent_in", "_dataset_in")


def test_the_owner_and_unscoped_reads_still_find_the_rows(store: SqliteStore) -> None:
    assert store.get_agent(AGENT, "a").agent_id == AGENT
    assert store.get_agent(AGENT).tenant == "a"  # None: any tenant, for work outside calls
    agent, version = store.agent_with_version(AGENT, "", "a")
    assert (agent.agent_id, version and version.version_id) == (AGENT, "ver_1")
    assert store.get_dataset(DATASET, "a").name == "a-data"
    assert store.get_dataset(DATASET).tenant == "a"


class CountingStore:
    """The store, counting its agent lookups by agent id."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.lookups: dict[str, int] = {}

    @property
    def commits(self) -> int:
        return self._store.commits

    def agent_with_version(self, agent_id: str, version_id: str, tenant: str | None) -> Any:
        self.lookups[agent_id] = self.lookups.get(agent_id, 0) + 1
        return self._store.agent_with_version(agent_id, version_id, tenant)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def _as_tenant(tenant: str, call: Callable[[], Any]) -> Any:
    """Run a coroutine function as a caller of `tenant` (the context travels into threads)."""

    async def run() -> Any:
        set_principal(Principal(tenant, "test", frozenset({"admin"})))
        return await call()

    return asyncio.run(run())


def test_invoke_reads_another_tenants_id_from_the_store_each_time_like_a_missing_one(
    store: SqliteStore, tmp_path: Path
) -> None:
    counting = CountingStore(store)
    inference = InferenceService(counting, tmp_path)  # type: ignore[arg-type]
    failures = []
    for agent_id in (AGENT, MISSING_AGENT) * 3:
        failures.append(
            _failure(lambda: _as_tenant("b", lambda: inference.invoke(agent_id, ["x"])))  # noqa: B023
        )
    assert len(set(failures)) == 1
    # Nothing of tenant A's agent was kept for tenant B: every call asked the store.
    assert counting.lookups == {AGENT: 3, MISSING_AGENT: 3}


def test_services_answer_another_tenants_id_as_a_missing_one(
    store: SqliteStore, tmp_path: Path
) -> None:
    agents = AgentService(store, tmp_path)
    datasets = DatasetService(store, max_examples=10)
    reads = [
        (lambda i: agents.get(i), AGENT, MISSING_AGENT),
        (lambda i: datasets.get(i), DATASET, MISSING_DATASET),
    ]
    for read, other, missing in reads:
        hidden = _failure(lambda: _as_tenant("b", lambda: read(other)))  # noqa: B023
        absent = _failure(lambda: _as_tenant("b", lambda: read(missing)))  # noqa: B023
        assert hidden == absent
    assert _as_tenant("a", lambda: agents.get(AGENT)).agent_id == AGENT
    assert _as_tenant("a", lambda: datasets.get(DATASET)).dataset_id == DATASET
