"""What the PostgreSQL store does beyond the store contract: migrations, and several stores on one
database, as several replicas of the service would open it.

A real PostgreSQL server on loopback (tests/postgres_server.py), a database of each test's own.
The contract itself (tests/test_store_contract.py) runs against this store too.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import time

import psycopg
import pytest

from agent_training_server.domain import Agent, AgentVersion, JobEvent, TrainingJob
from agent_training_server.errors import AlreadyExists
from agent_training_server.store.postgres import PostgresStore, SchemaTooNew, migrate
from agent_training_server.store.postgres_migrations import MIGRATIONS


def _version(version_id: str, agent_id: str = "shared") -> AgentVersion:
    return AgentVersion(
        version_id=version_id,
        agent_id=agent_id,
        version_number=0,
        source="training",
        training_type="supervised",
        outputs=("yes", "no"),
        create_time=1.0,
    )


def _applied(url: str) -> list[tuple[int, str]]:
    with psycopg.connect(url) as connection:
        rows = connection.execute(
            "SELECT version, description FROM schema_migrations ORDER BY version"
        ).fetchall()
    return [(int(version), str(description)) for version, description in rows]


def test_migrations_apply_once_and_in_order(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    expected = [(version, description) for version, description, _ in MIGRATIONS]
    assert _applied(postgres_url) == expected
    # Opened again (a restart, another replica): nothing left to apply, nothing applied twice.
    with psycopg.connect(postgres_url, autocommit=True) as connection:
        assert migrate(connection) == []
    PostgresStore(postgres_url).close()
    assert _applied(postgres_url) == expected


def test_replicas_starting_together_migrate_the_database_once(postgres_url: str) -> None:
    start = threading.Barrier(4)

    def open_store() -> PostgresStore:
        start.wait()
        return PostgresStore(postgres_url)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_store(), range(4)))
    for store in stores:
        store.close()
    assert _applied(postgres_url) == [(v, d) for v, d, _ in MIGRATIONS]


def test_a_database_migrated_by_a_newer_release_is_refused(postgres_url: str) -> None:
    PostgresStore(postgres_url).close()
    with psycopg.connect(postgres_url) as connection:
        connection.execute("INSERT INTO schema_migrations VALUES (999, 'from the future', 0)")
    with pytest.raises(SchemaTooNew, match="schema version 999, newer than this release's"):
        PostgresStore(postgres_url)


def test_an_unreachable_server_fails_the_open() -> None:
    with pytest.raises(psycopg.OperationalError):
        PostgresStore("postgresql://postgres@127.0.0.1:1/none?connect_timeout=2")


def test_two_stores_on_one_database_see_each_others_writes(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    try:
        first.create_agent(Agent(agent_id="shared", display_name="Shared"))
        assert second.get_agent("shared").display_name == "Shared"
        with pytest.raises(AlreadyExists):
            second.create_agent(Agent(agent_id="shared", display_name="Again"))
        second.add_version(_version("ver-from-second"), activate=True)
        assert first.get_agent("shared").active_version_id == "ver-from-second"
    finally:
        first.close()
        second.close()


def test_versions_written_at_once_through_two_stores_are_numbered_without_gaps(
    postgres_url: str,
) -> None:
    # The next version number is read, then written: writers of every store are serialised.
    stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
    try:
        stores[0].create_agent(Agent(agent_id="shared"))
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(
                pool.map(
                    lambda n: stores[n % 2].add_version(_version(f"ver-{n}"), activate=False),
                    range(40),
                )
            )
        numbers = [v.version_number for v in stores[1].list_versions("shared", limit=100)]
        assert sorted(numbers) == list(range(1, 41))
    finally:
        for store in stores:
            store.close()


def test_job_events_committed_through_one_store_are_heard_by_another(postgres_url: str) -> None:
    first, second = PostgresStore(postgres_url), PostgresStore(postgres_url)
    heard: list[str] = []
    two_heard = threading.Event()

    def hear(training_id: str) -> None:
        heard.append(training_id)
        if len(heard) == 2:
            two_heard.set()

    stop = second.listen_job_events(hear)
    try:
        first.create_agent(Agent(agent_id="shared"))
        job = TrainingJob(training_id="job-1", agent_id="shared", training_type="supervised")
        first.create_job(job, JobEvent("job-1", 1, 0.0, "accepted", {}))
        time.sleep(0.5)  # the listener's LISTEN is in place before the events below
        for sequence in (2, 3):
            event = JobEvent("job-1", sequence, 0.0, "progress", {})
            first.append_event(event, dataclasses.replace(job, last_sequence=sequence))
        assert two_heard.wait(10), heard
        assert heard == ["job-1", "job-1"]
        with pytest.raises(Exception):  # noqa: B017 (a taken sequence: nothing committed)
            first.append_event(JobEvent("job-1", 3, 0.0, "progress", {}), job)
        time.sleep(0.5)
        assert heard == ["job-1", "job-1"]
    finally:
        stop()
        first.close()
        second.close()
