"""Work tasks: heavy work of other RPCs run in the training workers (JobManager.run_work).

A real JobManager over a real pool of one worker process and a real SQLite store. The functions
below run in that worker (pickled by reference, imported there from this module): a value comes
back, a service error comes back as itself, an unexpected error as WorkFailed, a worker's death
as UNAVAILABLE, and a caller that leaves cancels the work and frees the worker for the next task.
One worker is the hard case: the slot a work task needs is the only one there is.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from agent_training_server.cancellation import raise_if_cancelled
from agent_training_server.errors import FailedPrecondition, Unavailable
from agent_training_server.jobs.executor import create_executor
from agent_training_server.jobs.work import WorkFailed
from agent_training_server.services.jobs import JobManager
from agent_training_server.store.sqlite import SqliteStore
from tests.conftest import make_config


def add(first: int, second: int, progress) -> tuple[int, int]:
    """The sum, and the process that computed it; reports its progress once."""
    progress("adding", 1, 1, 100.0)
    return first + second, os.getpid()


def niceness(progress) -> int:
    return os.nice(0)


def refuse(progress) -> None:
    raise FailedPrecondition("not now", code="NOT_NOW", hint="Later.")


def crash(progress) -> None:
    raise ValueError("a bug")


def die(progress) -> None:
    os._exit(3)


def until_cancelled(started: Path, progress) -> None:
    """Work that only stops when its caller goes away (a minute at most)."""
    started.write_text("started")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        raise_if_cancelled()
        time.sleep(0.01)
    raise AssertionError("the cancel never reached the work")


@pytest_asyncio.fixture
async def jobs(tmp_path: Path) -> AsyncIterator[JobManager]:
    config = make_config(tmp_path, workers=1, torch_threads=1)
    config.data_dir.mkdir(parents=True)
    store = SqliteStore(config.database_path)
    manager = JobManager(store, config, create_executor(config))
    await manager.start()
    try:
        yield manager
    finally:
        await manager.stop()
        store.close()


async def test_a_work_task_returns_its_value_from_a_worker_process_with_its_progress(
    jobs: JobManager,
) -> None:
    reports = []
    total, pid = await jobs.run_work(add, 2, 3, progress=lambda *report: reports.append(report))
    assert total == 5
    assert pid != os.getpid()
    assert reports == [("adding", 1, 1, 100.0)]
    # The worker slot came back: the next task runs too.
    assert (await jobs.run_work(add, 1, 1))[0] == 2


async def test_workers_run_at_the_configured_niceness_above_the_server(
    jobs: JobManager,
) -> None:
    # make_config leaves worker_niceness at its default, 10 (capped at the system's 19).
    assert await jobs.run_work(niceness) == min(19, os.nice(0) + 10)


async def test_a_service_error_comes_back_as_itself_and_a_bug_as_work_failed(
    jobs: JobManager,
) -> None:
    with pytest.raises(FailedPrecondition) as refused:
        await jobs.run_work(refuse)
    assert (refused.value.code, refused.value.hint) == ("NOT_NOW", "Later.")
    with pytest.raises(WorkFailed, match="ValueError: a bug"):
        await jobs.run_work(crash)
    assert (await jobs.run_work(add, 1, 2))[0] == 3


async def test_a_caller_that_leaves_cancels_the_work_and_frees_the_worker(
    jobs: JobManager, tmp_path: Path
) -> None:
    unhandled: list[dict] = []
    asyncio.get_running_loop().set_exception_handler(lambda _, context: unhandled.append(context))
    started = tmp_path / "started"
    call = asyncio.create_task(jobs.run_work(until_cancelled, started))
    async with asyncio.timeout(60):
        while not started.exists():
            await asyncio.sleep(0.05)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    # One worker: this waits for the cancelled work to stop, then runs.
    async with asyncio.timeout(60):
        assert (await jobs.run_work(add, 4, 4))[0] == 8
    # The cancelled work's end, which nobody awaits, is not reported as a lost exception.
    gc.collect()
    assert [context["message"] for context in unhandled] == []


async def test_a_worker_that_dies_answers_unavailable_and_is_replaced(jobs: JobManager) -> None:
    with pytest.raises(Unavailable) as lost:
        await jobs.run_work(die)
    assert lost.value.code == "WORKER_LOST" and "code 3" in lost.value.message
    async with asyncio.timeout(120):
        assert (await jobs.run_work(add, 5, 5))[0] == 10


async def test_work_after_shutdown_is_refused_as_unavailable(tmp_path: Path) -> None:
    config = make_config(tmp_path, workers=1, torch_threads=1)
    config.data_dir.mkdir(parents=True)
    store = SqliteStore(config.database_path)
    manager = JobManager(store, config, create_executor(config))
    await manager.start()
    await manager.stop()
    store.close()
    with pytest.raises(Unavailable) as refused:
        await manager.run_work(add, 1, 1)
    assert refused.value.code == "SERVER_SHUTTING_DOWN" and refused.value.retryable
