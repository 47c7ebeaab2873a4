"""Tenant-scoped store reads: another tenant's id takes the very path of an id that does not exist.

The store queries with the caller's tenant (``WHERE id = ? AND tenant = ?``; jobs, analyses and
answers through their agent's tenant), so both find no row and raise the same NotFound from the
same function; InvokeAgent's read cache keys on the tenant and keeps no errors, so both go to the
store on every call; a running job or a queued answer is read from the store too. Same path, hence
no time to tell "someone else's" from "nobody's" by (bench/tenant_timing.py measures that time;
this checks the path).
"""

from __future__ import annotations

import asyncio
import dataclasses
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent_training_server.auth.principal import Principal, set_principal
from agent_training_server.domain import (
    Agent,
    AgentVersion,
    AnalysisJob,
    Dataset,
    Invocation,
    JobEvent,
    TrainingJob,
)
from agent_training_server.errors import NotFound
from agent_training_server.jobs.pool import WorkerPool
from agent_training_server.services.agents import AgentService
from agent_training_server.services.analysis_jobs import AnalysisJobs, _Running
from agent_training_server.services.datasets import DatasetService
from agent_training_server.services.feedback import FeedbackService
from agent_training_server.services.inference import InferenceService
from agent_training_server.services.jobs import JobManager, _ActiveJob
from agent_training_server.store.sqlite import SqliteStore
from tests.conftest import make_config

AGENT = "agent_00000000000000a1"
MISSING_AGENT = "agent_00000000deadbeef"
DATASET = "ds_00000000000000a1"
MISSING_DATASET = "ds_00000000deadbeef"
JOB = "train_00000000000000a1"
MISSING_JOB = "train_00000000deadbeef"
ANALYSIS = "analysis_00000000000000a1"
MISSING_ANALYSIS = "analysis_00000000deadbeef"
INVOCATION = "inv_00000000000000a1"
MISSING_INVOCATION = "inv_00000000deadbeef"
IDS = (
    AGENT,
    MISSING_AGENT,
    DATASET,
    MISSING_DATASET,
    JOB,
    MISSING_JOB,
    ANALYSIS,
    MISSING_ANALYSIS,
    INVOCATION,
    MISSING_INVOCATION,
)


def _answer(invocation_id: str) -> Invocation:
    return Invocation(
        invocation_id=invocation_id,
        agent_id=AGENT,
        version_id="ver_1",
        input="hello",
        output="x",
        confidence=0.9,
        propensity=1.0,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    """A store holding tenant A's trained agent, dataset, job, analysis and answer."""
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
    job = TrainingJob(training_id=JOB, agent_id=AGENT, training_type="supervised")
    store.create_job(job, JobEvent(JOB, 1, 0.0, "progress", {}))
    store.create_analysis(AnalysisJob(analysis_id=ANALYSIS, agent_id=AGENT))
    store.record_invocations([_answer(INVOCATION)])
    yield store
    store.close()


def _failure(read: Callable[[], Any]) -> tuple[tuple[str, str, str, bool], str]:
    """The NotFound a read raises, with its ids masked, and the function that raised it."""
    with pytest.raises(NotFound) as caught:
        read()
    error = caught.value
    message = error.message
    for name in IDS:
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
        (lambda s, i: s.get_job(i, "b"), JOB, MISSING_JOB),
        (lambda s, i: s.get_analysis(i, "b"), ANALYSIS, MISSING_ANALYSIS),
        (lambda s, i: s.get_invocation(i, "b"), INVOCATION, MISSING_INVOCATION),
    ],
    ids=[
        "get_agent",
        "agent_with_version",
        "agent_with_named_version",
        "get_dataset",
        "get_job",
        "get_analysis",
        "get_invocation",
    ],
)
def test_another_tenants_id_raises_the_missing_ids_not_found_from_the_same_place(
    store: SqliteStore, read: Callable[[SqliteStore, str], Any], other: str, missing: str
) -> None:
    hidden = _failure(lambda: read(store, other))
    absent = _failure(lambda: read(store, missing))
    assert hidden == absent
    # Every single-row read of the SQLite store goes through one tenant-filtered query.
    assert hidden[1] == "tenant_row"


def test_the_owner_and_unscoped_reads_still_find_the_rows(store: SqliteStore) -> None:
    assert store.get_agent(AGENT, "a").agent_id == AGENT
    assert store.get_agent(AGENT).tenant == "a"  # None: any tenant, for work outside calls
    agent, version = store.agent_with_version(AGENT, "", "a")
    assert (agent.agent_id, version and version.version_id) == (AGENT, "ver_1")
    assert store.get_dataset(DATASET, "a").name == "a-data"
    assert store.get_dataset(DATASET).tenant == "a"
    assert store.get_job(JOB, "a").agent_id == store.get_job(JOB).agent_id == AGENT
    assert store.get_analysis(ANALYSIS, "a").agent_id == store.get_analysis(ANALYSIS).agent_id
    assert store.get_invocation(INVOCATION, "a").output == store.get_invocation(INVOCATION).output


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


def test_a_running_job_and_analysis_and_a_queued_answer_of_another_tenant_read_as_missing(
    store: SqliteStore, tmp_path: Path
) -> None:
    async def scenario() -> None:
        jobs = JobManager(store, make_config(tmp_path), WorkerPool(1, 1))  # never started
        analyses = AnalysisJobs(store, max_running=1)
        feedback = FeedbackService(store)
        # What the services hold in memory: a running analysis's progress, an answer not yet
        # flushed. None may be answered from memory to another tenant.
        live = TrainingJob(training_id=JOB, agent_id=AGENT, training_type="supervised")
        live = dataclasses.replace(live, status="TRAINING_STATUS_RUNNING", phase="training")
        jobs._active[JOB] = _ActiveJob(live)
        running = AnalysisJob(analysis_id=ANALYSIS, agent_id=AGENT, progress={"phase": "x"})
        analyses._running[ANALYSIS] = _Running(running)
        feedback.remember([_answer("inv_00000000000000b2")])
        reads = [
            (lambda i: jobs.get(i, "b"), JOB, MISSING_JOB),
            (lambda i: analyses.get(i, "b"), ANALYSIS, MISSING_ANALYSIS),
            (lambda i: feedback.invocation(i, "b"), "inv_00000000000000b2", MISSING_INVOCATION),
        ]
        for read, other, missing in reads:
            with pytest.raises(NotFound) as hidden:
                await read(other)
            with pytest.raises(NotFound) as absent:
                await read(missing)
            assert hidden.value.code == absent.value.code
            assert hidden.value.hint == absent.value.hint
        # The owner sees the live state and progress and the answer just given.
        assert (await jobs.get(JOB, "a")).phase == "training"
        assert (await analyses.get(ANALYSIS, "a")).progress == {"phase": "x"}
        assert (await feedback.invocation("inv_00000000000000b2", "a")).output == "x"

    asyncio.run(scenario())
