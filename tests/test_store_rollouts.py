"""The store contract for rollouts and the answers given under them, on every implementation.

The backends and builders are the store contract's (tests/test_store_contract.py): each test runs
against SQLite, SQLite behind the tracing wrapper and PostgreSQL. The last tests are the
backends' own: a database made before rollouts opens with them added, and the one-running-
rollout rule holds in the database itself.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from agent_training_server.domain import (
    Rollout,
    RolloutDecision,
    RolloutMode,
    RolloutPolicy,
    RolloutState,
)
from agent_training_server.errors import AlreadyExists, FailedPrecondition
from agent_training_server.store import sqlite_schema
from agent_training_server.store.base import RolloutRunning, Store
from agent_training_server.store.postgres import PostgresStore
from agent_training_server.store.postgres_migrations import MIGRATIONS
from agent_training_server.store.sqlite import SqliteStore
from tests.test_store_contract import (
    BACKENDS,
    Opener,
    _agent,
    _answer,
    _feedback,
    _key,
    _not_found,
    _version,
)


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one implementation of the contract suite's; all closed after the test."""
    opener = BACKENDS[request.param](request, tmp_path)
    opened: list[Store] = []

    def open_() -> Store:
        opened.append(opener())
        return opened[-1]

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Opener) -> Store:
    """A freshly opened, empty store."""
    return open_store()


def _rollout(rollout_id: str = "rollout-1", agent_id: str = "agent-a", **fields: Any) -> Rollout:
    rollout = Rollout(
        rollout_id=rollout_id,
        agent_id=agent_id,
        candidate_version_id="ver-2",
        active_version_id="ver-1",
        mode=RolloutMode.CANARY,
        traffic_share=0.25,
        policy=RolloutPolicy(confidence=0.9, abort_margin=0.05, min_feedback=10),
        create_time=100.0,
        update_time=100.0,
    )
    return dataclasses.replace(rollout, **fields)


def _decision(action: str, time: float = 200.0) -> RolloutDecision:
    return RolloutDecision(
        action=action,
        reason=f"{action} by the test",
        automatic=action == "abort",
        evidence={"candidate_success_rate": 0.8, "active_success_rate": 0.6},
        time=time,
    )


def _two_versions(store: Store, agent_id: str = "agent-a") -> None:
    """An agent serving ver-1 (ver-1 and ver-2 for agent-a; prefixed ids for another)."""
    store.create_agent(_agent(agent_id))
    prefix = "" if agent_id == "agent-a" else f"{agent_id}-"
    store.add_version(_version(f"{prefix}ver-1", agent_id), activate=True)
    store.add_version(_version(f"{prefix}ver-2", agent_id), activate=False)


def _ended(call: Any) -> FailedPrecondition:
    with pytest.raises(FailedPrecondition) as caught:
        call()
    assert caught.value.code == "ROLLOUT_ENDED"
    assert caught.value.hint
    return caught.value


# Rollouts --------------------------------------------------------------------------------


def test_a_rollout_is_stored_running_and_read_back(store: Store) -> None:
    _two_versions(store)
    rollout = _rollout()
    assert store.create_rollout(rollout) == rollout
    assert store.get_rollout("agent-a", "rollout-1") == rollout
    assert store.get_rollout("agent-a") == rollout
    assert store.running_rollout("agent-a") == rollout
    assert store.running_rollout("agent-b") is None
    shadow = _rollout("rollout-2", mode=RolloutMode.SHADOW, traffic_share=0.0, policy=None)
    store.end_rollout("agent-a", "rollout-1", _decision("abort"))
    assert store.create_rollout(shadow) == shadow
    assert store.running_rollout("agent-a") == shadow


def test_a_rollout_of_a_missing_agent_or_version_or_a_missing_rollout_is_not_found(
    store: Store,
) -> None:
    assert _not_found(lambda: store.create_rollout(_rollout()))[0] == "AGENT_NOT_FOUND"
    _two_versions(store)
    missing_candidate = _rollout(candidate_version_id="ver-9")
    assert _not_found(lambda: store.create_rollout(missing_candidate))[0] == "VERSION_NOT_FOUND"
    assert store.running_rollout("agent-a") is None
    code, message = _not_found(lambda: store.get_rollout("agent-a"))
    assert (code, message) == ("ROLLOUT_NOT_FOUND", "agent 'agent-a' has no rollout")
    code, message = _not_found(lambda: store.get_rollout("agent-a", "rollout-9"))
    assert (code, message) == ("ROLLOUT_NOT_FOUND", "agent 'agent-a' has no rollout 'rollout-9'")
    assert _not_found(lambda: store.get_rollout("nobody"))[0] == "AGENT_NOT_FOUND"
    store.create_rollout(_rollout())
    # A rollout is read through its agent: another agent's id finds nothing.
    _two_versions(store, "agent-b")
    assert _not_found(lambda: store.get_rollout("agent-b", "rollout-1"))[0] == "ROLLOUT_NOT_FOUND"
    for call in (
        lambda: store.update_rollout(_rollout("rollout-9")),
        lambda: store.end_rollout("agent-a", "rollout-9", _decision("abort")),
        lambda: store.end_rollout("agent-b", "rollout-1", _decision("abort")),
    ):
        assert _not_found(call)[0] == "ROLLOUT_NOT_FOUND"
    assert _not_found(lambda: store.end_rollout("nobody", "rollout-1", _decision("abort")))[0] == (
        "AGENT_NOT_FOUND"
    )
    assert store.running_rollout("agent-a") == _rollout()


def test_a_running_rollouts_mode_share_and_policy_are_updated(store: Store) -> None:
    _two_versions(store)
    store.create_rollout(_rollout())
    changed = _rollout(
        mode=RolloutMode.SHADOW,
        traffic_share=0.5,
        policy=RolloutPolicy(min_feedback=50),
        update_time=150.0,
    )
    assert store.update_rollout(changed) == changed
    assert store.get_rollout("agent-a") == changed
    without_policy = dataclasses.replace(changed, policy=None, update_time=160.0)
    assert store.update_rollout(without_policy) == without_policy
    # Only those: the arms, state and creation stay as stored.
    tampered = dataclasses.replace(without_policy, candidate_version_id="ver-1", create_time=1.0)
    assert store.update_rollout(tampered) == without_policy
    assert store.running_rollout("agent-a") == without_policy


def test_promoting_makes_the_candidate_the_active_version_in_one_write(store: Store) -> None:
    _two_versions(store)
    store.create_rollout(_rollout())
    before = store.commits
    decision = _decision("promote")
    promoted = store.end_rollout("agent-a", "rollout-1", decision)
    assert store.commits == before + 1  # one transaction, counted: cached reads go stale
    assert promoted == _rollout(state=RolloutState.PROMOTED, decisions=(decision,), update_time=200)
    assert store.get_rollout("agent-a") == promoted
    assert store.running_rollout("agent-a") is None
    agent, served = store.agent_with_version("agent-a")
    assert agent.active_version_id == "ver-2"
    assert served is not None and served.version_id == "ver-2"
    assert agent.update_time == 200.0


def test_aborting_leaves_the_active_version(store: Store) -> None:
    _two_versions(store)
    store.create_rollout(_rollout())
    decision = _decision("abort")
    aborted = store.end_rollout("agent-a", "rollout-1", decision)
    assert aborted.state == RolloutState.ABORTED
    assert aborted.decisions == (decision,)
    assert store.get_agent("agent-a").active_version_id == "ver-1"
    assert store.running_rollout("agent-a") is None


def test_a_decision_without_a_time_is_stored_with_the_current_one(store: Store) -> None:
    _two_versions(store)
    store.create_rollout(_rollout())
    ended = store.end_rollout("agent-a", "rollout-1", _decision("abort", time=0.0))
    assert ended.decisions[0].time > 1e9
    assert ended.update_time == ended.decisions[0].time
    with pytest.raises(ValueError):
        store.end_rollout("agent-a", "rollout-1", _decision("pause"))


def test_an_agent_has_one_running_rollout_at_a_time(store: Store) -> None:
    _two_versions(store)
    _two_versions(store, "agent-b")
    first = store.create_rollout(_rollout())
    with pytest.raises(RolloutRunning) as caught:
        store.create_rollout(_rollout("rollout-2", create_time=110.0))
    assert caught.value.rollout == first
    assert _not_found(lambda: store.get_rollout("agent-a", "rollout-2"))[0] == "ROLLOUT_NOT_FOUND"
    # Another agent's rollout is its own.
    other = _rollout(
        "rollout-b", "agent-b", candidate_version_id="agent-b-ver-2", active_version_id="b1"
    )
    assert store.create_rollout(other) == other
    # Once the first has ended, the agent may start another; the running one is read first,
    # then, with none running, the latest.
    store.end_rollout("agent-a", "rollout-1", _decision("abort"))
    second = store.create_rollout(_rollout("rollout-2", create_time=90.0))
    assert store.get_rollout("agent-a") == second  # running, though created "before"
    store.end_rollout("agent-a", "rollout-2", _decision("abort", time=300.0))
    store.create_rollout(_rollout("rollout-3", create_time=120.0))
    store.end_rollout("agent-a", "rollout-3", _decision("abort", time=400.0))
    assert store.get_rollout("agent-a").rollout_id == "rollout-3"
    assert store.get_rollout("agent-a", "rollout-1").state == RolloutState.ABORTED


def test_an_ended_rollout_refuses_updates_and_decisions(store: Store) -> None:
    _two_versions(store)
    store.create_rollout(_rollout())
    promoted = store.end_rollout("agent-a", "rollout-1", _decision("promote"))
    error = _ended(lambda: store.update_rollout(_rollout(traffic_share=0.5)))
    assert error.message == "rollout 'rollout-1' of agent 'agent-a' has ended (promoted)"
    _ended(lambda: store.end_rollout("agent-a", "rollout-1", _decision("abort")))
    _ended(lambda: store.end_rollout("agent-a", "rollout-1", _decision("promote")))
    assert store.get_rollout("agent-a", "rollout-1") == promoted


def test_an_idempotent_start_replays_the_rollout_it_made(store: Store) -> None:
    _two_versions(store)
    first = store.create_rollout(_rollout(), _key("r1"))
    # A retry: same key and digest, a new random rollout id; not refused as a second one.
    assert store.create_rollout(_rollout("rollout-2"), _key("r1")) == first
    assert store.get_rollout("agent-a") == first
    with pytest.raises(AlreadyExists) as caught:
        store.create_rollout(_rollout("rollout-3"), _key("r1", digest="sha-other"))
    assert caught.value.code == "REQUEST_ID_REUSED"
    # Replayed after it ended: the rollout as it now is.
    ended = store.end_rollout("agent-a", "rollout-1", _decision("abort"))
    assert store.create_rollout(_rollout("rollout-4"), _key("r1")) == ended
    assert store.running_rollout("agent-a") is None


def test_deleting_an_agent_deletes_its_rollouts(store: Store) -> None:
    _two_versions(store)
    _two_versions(store, "agent-b")
    store.create_rollout(_rollout())
    other = store.create_rollout(
        _rollout("rollout-b", "agent-b", candidate_version_id="agent-b-ver-2")
    )
    store.record_invocations([_answer("inv-1", rollout_id="rollout-1", arm="candidate")])
    store.delete_agent("agent-a")
    _two_versions(store)  # the same id again: nothing of the old agent's comes back
    assert store.running_rollout("agent-a") is None
    assert _not_found(lambda: store.get_rollout("agent-a"))[0] == "ROLLOUT_NOT_FOUND"
    assert store.rollout_invocations("rollout-1") == []
    assert store.create_rollout(_rollout()) == _rollout()
    assert store.get_rollout("agent-b") == other


def test_rollout_writes_count_commits_and_reads_do_not(store: Store) -> None:
    _two_versions(store)
    for write in [
        lambda: store.create_rollout(_rollout()),
        lambda: store.update_rollout(_rollout(traffic_share=0.5)),
        lambda: store.end_rollout("agent-a", "rollout-1", _decision("abort")),
    ]:
        before = store.commits
        write()
        assert store.commits == before + 1
    for read in [
        lambda: store.get_rollout("agent-a"),
        lambda: store.running_rollout("agent-a"),
        lambda: store.rollout_invocations("rollout-1"),
    ]:
        before = store.commits
        read()
        assert store.commits == before


# Answers under a rollout -----------------------------------------------------------------


def test_answers_keep_their_rollout_arm_and_latency(store: Store) -> None:
    _two_versions(store)
    answer = _answer("inv-1", rollout_id="rollout-1", arm="candidate", latency_ms=3.25)
    shadow = _answer(
        "inv-2", rollout_id="rollout-1", arm="shadow", shadow_of="inv-3", latency_ms=1.5
    )
    plain = _answer("inv-3")
    store.record_invocations([answer, shadow, plain])
    assert store.get_invocation("inv-1") == answer
    assert store.get_invocation("inv-2") == shadow
    stored = store.get_invocation("inv-3")
    assert stored == plain
    assert (stored.rollout_id, stored.arm, stored.shadow_of, stored.latency_ms) == ("", "", "", 0)
    store.record_feedback(_feedback("fb-1", "inv-1", 7.0))
    [(_, listed)] = store.list_feedback("agent-a")
    assert listed == answer


def test_a_rollouts_answers_are_read_with_their_feedback(store: Store) -> None:
    _two_versions(store)
    mine = [
        _answer("inv-c", rollout_id="rollout-1", arm="candidate", time=6.0, latency_ms=2.0),
        _answer("inv-a", rollout_id="rollout-1", arm="active", time=5.0, output="no"),
        _answer("inv-s", rollout_id="rollout-1", arm="shadow", shadow_of="inv-a", time=5.0),
    ]
    others = [_answer("inv-x", rollout_id="rollout-2", arm="active"), _answer("inv-none")]
    store.record_invocations([*mine, *others])
    feedback = _feedback("fb-1", "inv-c", 7.0, comment="good", feedback="correct", reward=1.0)
    store.record_feedback(feedback)
    store.record_feedback(_feedback("fb-2", "inv-x", 7.0))
    store.record_feedback(_feedback("fb-3", "inv-none", 7.0))

    read = store.rollout_invocations("rollout-1")
    # Oldest first, then by id.
    assert read == [(mine[1], None), (mine[2], None), (mine[0], feedback)]
    assert store.rollout_invocations("rollout-9") == []
    assert store.rollout_invocations("") == []  # answers of no rollout are no rollout's


def test_a_rollouts_feedback_is_counted_per_returned_arm(store: Store) -> None:
    _two_versions(store)
    answers = [
        _answer("inv-a1", rollout_id="rollout-1", arm="active"),
        _answer("inv-a2", rollout_id="rollout-1", arm="active"),
        _answer("inv-a3", rollout_id="rollout-1", arm="active"),
        _answer("inv-c1", rollout_id="rollout-1", arm="candidate"),
        _answer("inv-s1", rollout_id="rollout-1", arm="shadow", shadow_of="inv-a1"),
        _answer("inv-x1", rollout_id="rollout-2", arm="candidate"),
    ]
    store.record_invocations(answers)
    assert store.rollout_feedback_counts("rollout-1") == {}
    for feedback_id, invocation_id, reward in [
        ("fb-1", "inv-a1", 1.0),
        ("fb-2", "inv-a2", -1.0),
        ("fb-3", "inv-c1", 0.5),
        ("fb-4", "inv-s1", 1.0),  # a shadow answer's feedback is no arm's
        ("fb-5", "inv-x1", 1.0),  # another rollout's
    ]:
        store.record_feedback(_feedback(feedback_id, invocation_id, 7.0, reward=reward))
    assert store.rollout_feedback_counts("rollout-1") == {"active": (2, 1), "candidate": (1, 1)}
    assert store.rollout_feedback_counts("rollout-9") == {}


# The backends' own -----------------------------------------------------------------------


def test_a_sqlite_database_from_before_rollouts_gains_them_on_open(tmp_path: Path) -> None:
    path = tmp_path / "store.sqlite3"
    earlier = sqlite_schema.SCHEMA.replace(sqlite_schema.ROLLOUT_SCHEMA, "")
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executescript(earlier)
        columns = {row[1] for row in db.execute("PRAGMA table_info(invocations)")}
        assert "rollout_id" not in columns  # the test's premise: the columns came later
        db.execute(
            "INSERT INTO agents (agent_id, display_name, description, labels_json, behavior_json,"
            " active_version_id, create_time, update_time) VALUES"
            " ('agent-a', 'Old', '', '{}', '{}', '', 1.0, 1.0)"
        )
        db.execute(
            "INSERT INTO invocations VALUES"
            " ('inv-old', 'agent-a', 'ver-1', 'is it?', '[]', 'yes', 0.5, 1.0, 0, 0, 2.0)"
        )
        db.commit()

    store = SqliteStore(path)
    try:
        old = store.get_invocation("inv-old")
        assert (old.rollout_id, old.arm, old.shadow_of, old.latency_ms) == ("", "", "", 0.0)
        store.add_version(_version("ver-1"), activate=True)
        store.add_version(_version("ver-2"), activate=False)
        assert store.create_rollout(_rollout()) == _rollout()
        with pytest.raises(RolloutRunning):
            store.create_rollout(_rollout("rollout-2"))
        new = _answer("inv-new", rollout_id="rollout-1", arm="candidate", latency_ms=4.0)
        store.record_invocations([new])
        assert store.rollout_invocations("rollout-1") == [(new, None)]
    finally:
        store.close()
    # Opened again: nothing left to add, nothing lost.
    store = SqliteStore(path)
    try:
        assert store.get_invocation("inv-new") == new
        assert store.running_rollout("agent-a") == _rollout()
    finally:
        store.close()


def test_a_postgres_database_from_before_rollouts_is_migrated(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as connection:
        connection.execute(
            "CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY,"
            " description TEXT NOT NULL, applied_time DOUBLE PRECISION NOT NULL)"
        )
        for version, description, sql in MIGRATIONS[:2]:
            connection.execute(sql.encode())
            connection.execute(
                "INSERT INTO schema_migrations VALUES (%s, %s, 0)", (version, description)
            )
        connection.execute(
            "INSERT INTO agents (agent_id, display_name, description, labels_json, behavior_json,"
            " active_version_id, create_time, update_time) VALUES"
            " ('agent-a', 'Old', '', '{}', '{}', '', 1.0, 1.0)"
        )
        connection.execute(
            "INSERT INTO invocations VALUES"
            " ('inv-old', 'agent-a', 'ver-1', 'is it?', '[]', 'yes', 0.5, 1.0, 0, 0, 2.0)"
        )
    store = PostgresStore(postgres_url)
    try:
        old = store.get_invocation("inv-old")
        assert (old.rollout_id, old.arm, old.shadow_of, old.latency_ms) == ("", "", "", 0.0)
        store.add_version(_version("ver-1"), activate=True)
        store.add_version(_version("ver-2"), activate=False)
        assert store.create_rollout(_rollout()) == _rollout()
    finally:
        store.close()


def _second_running_row(rollout_id: str) -> tuple[Any, ...]:
    return (rollout_id, "agent-a", "ver-2", "ver-1", "canary", 0.5, "", "running", "[]", 1.0, 1.0)


def test_sqlite_itself_refuses_a_second_running_rollout(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "store.sqlite3")
    try:
        _two_versions(store)
        store.create_rollout(_rollout())
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "store.sqlite3")) as db:
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            db.execute(
                "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _second_running_row("rollout-2"),
            )
        db.execute(
            "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (*_second_running_row("rollout-3")[:7], "aborted", "[]", 1.0, 1.0),
        )


def test_postgres_itself_refuses_a_second_running_rollout(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        _two_versions(store)
        store.create_rollout(_rollout())
    finally:
        store.close()
    with (
        psycopg.connect(postgres_url, autocommit=True) as connection,
        pytest.raises(psycopg.errors.UniqueViolation),
    ):
        connection.execute(
            "INSERT INTO rollouts VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            _second_running_row("rollout-2"),
        )


def test_replicas_starting_rollouts_together_start_one(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url) for _ in range(4)]
    try:
        _two_versions(stores[0])
        start = threading.Barrier(len(stores))

        def create(index: int) -> str:
            start.wait()
            try:
                return stores[index].create_rollout(_rollout(f"rollout-{index}")).rollout_id
            except RolloutRunning as refused:
                return f"refused for {refused.rollout.rollout_id}"

        with concurrent.futures.ThreadPoolExecutor(len(stores)) as pool:
            results = list(pool.map(create, range(len(stores))))
        started = [r for r in results if not r.startswith("refused")]
        assert len(started) == 1
        assert sorted(results) == sorted([started[0], *[f"refused for {started[0]}"] * 3])
        assert stores[3].running_rollout("agent-a") == _rollout(started[0])
    finally:
        for store in stores:
            store.close()
