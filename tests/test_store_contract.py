"""The store contract: what every `Store` implementation does, checked through the interface only.

Each test takes ``open_store``, which opens a store of one implementation on data of its own (a
second call opens the same data again, as a restarted server would). A new backend is one more
entry in BACKENDS: every test here then runs against it unchanged. No test reads SQL or a
store's internals, so the tests say what callers may rely on and nothing more.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider

from agent_training_server.domain import (
    Agent,
    AgentVersion,
    AnalysisJob,
    AnalysisStatus,
    Dataset,
    Feedback,
    Invocation,
    JobEvent,
    JobStatus,
    TrainingJob,
)
from agent_training_server.errors import AlreadyExists, NotFound
from agent_training_server.store.base import (
    IdempotencyKey,
    JobLimitReached,
    JobLimits,
    LeaseLost,
    Store,
)
from agent_training_server.store.postgres import PostgresStore
from agent_training_server.store.sqlite import SqliteStore
from agent_training_server.store.traced import TracedStore

Opener = Callable[[], Store]
"""Opens a store on the test's data; each call opens it again."""


def _sqlite(request: pytest.FixtureRequest, folder: Path) -> Opener:
    return lambda: SqliteStore(folder / "store.sqlite3")


def _traced_sqlite(request: pytest.FixtureRequest, folder: Path) -> Opener:
    # The wrapper the server runs: every method must reach the inner store unchanged.
    tracer = TracerProvider().get_tracer("store-contract")
    return lambda: TracedStore(SqliteStore(folder / "store.sqlite3"), tracer)


def _postgres(request: pytest.FixtureRequest, folder: Path) -> Opener:
    # A database of its own on a real server (tests/postgres_server.py).
    url: str = request.getfixturevalue("postgres_url")
    return lambda: PostgresStore(url)


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Opener]] = {
    "sqlite": _sqlite,
    "traced-sqlite": _traced_sqlite,
    "postgres": _postgres,
}
"""Each implementation under test, by name: how to open a store on data of the test's own."""


@pytest.fixture(params=sorted(BACKENDS))
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """Opens stores of one implementation on one test's data; all are closed after the test."""
    opener = BACKENDS[request.param](request, tmp_path)
    opened: list[Store] = []

    def open_() -> Store:
        store = opener()
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()  # a second close is part of the contract: it does nothing


@pytest.fixture
def store(open_store: Opener) -> Store:
    """A freshly opened, empty store."""
    return open_store()


# Builders --------------------------------------------------------------------------------


def _agent(agent_id: str = "agent-a", tenant: str = "default", **fields: Any) -> Agent:
    return dataclasses.replace(
        Agent(agent_id=agent_id, display_name=f"{agent_id} name", tenant=tenant), **fields
    )


def _version(version_id: str, agent_id: str = "agent-a", **fields: Any) -> AgentVersion:
    version = AgentVersion(
        version_id=version_id,
        agent_id=agent_id,
        version_number=99,  # ignored: the store numbers versions
        source="training",
        training_type="supervised",
        outputs=("yes", "no"),
        metrics={"accuracy": 0.5},
        create_time=10.0,
    )
    return dataclasses.replace(version, **fields)


def _job(training_id: str, agent_id: str = "agent-a", **fields: Any) -> TrainingJob:
    job = TrainingJob(training_id=training_id, agent_id=agent_id, training_type="supervised")
    return dataclasses.replace(job, **fields)


def _event(training_id: str, sequence: int, kind: str = "progress") -> JobEvent:
    return JobEvent(training_id, sequence, float(sequence), kind, {"step": sequence})


def _answer(invocation_id: str, agent_id: str = "agent-a", **fields: Any) -> Invocation:
    answer = Invocation(
        invocation_id=invocation_id,
        agent_id=agent_id,
        version_id="ver-1",
        input="is it?",
        context=("before",),
        output="yes",
        confidence=0.75,
        propensity=0.5,
        explored=True,
        time=5.0,
    )
    return dataclasses.replace(answer, **fields)


def _feedback(feedback_id: str, invocation_id: str, time: float, **fields: Any) -> Feedback:
    feedback = Feedback(
        feedback_id=feedback_id,
        invocation_id=invocation_id,
        agent_id="agent-a",
        feedback="incorrect",
        reward=-1.0,
        corrected_output="no",
        time=time,
    )
    return dataclasses.replace(feedback, **fields)


def _key(request_id: str, digest: str = "sha-1", tenant: str = "default") -> IdempotencyKey:
    return IdempotencyKey("Create", request_id, digest, tenant)


def _dataset(dataset_id: str, name: str, tenant: str = "default") -> Dataset:
    return Dataset(dataset_id=dataset_id, name=name, description="d", recipe=b"r", tenant=tenant)


def _written_dataset(store: Store, dataset_id: str, name: str, tenant: str = "default") -> None:
    assert store.begin_dataset(_dataset(dataset_id, name, tenant)) is None
    store.append_dataset_examples(dataset_id, 0, [b"e0", b"e1"])
    store.finish_dataset(dataset_id, 2, 1, "sha-" + dataset_id)


def _not_found(call: Callable[[], object]) -> tuple[str, str]:
    """The code and message of the NotFound ``call`` raises."""
    with pytest.raises(NotFound) as caught:
        call()
    return caught.value.code, caught.value.message


# Agents ----------------------------------------------------------------------------------


def test_an_agent_is_stored_as_given_and_read_back(store: Store) -> None:
    agent = _agent(labels={"team": "x"}, description="helps", create_time=1.0, update_time=2.0)
    created, replayed = store.create_agent(agent)
    assert not replayed
    assert created == agent
    assert store.get_agent("agent-a") == agent
    assert store.get_agent("agent-a", "default") == agent


def test_a_taken_agent_id_is_already_exists(store: Store) -> None:
    store.create_agent(_agent())
    with pytest.raises(AlreadyExists):
        store.create_agent(_agent(display_name="another"))
    assert store.get_agent("agent-a").display_name == "agent-a name"


def test_a_missing_agent_is_not_found(store: Store) -> None:
    code, _ = _not_found(lambda: store.get_agent("nobody"))
    assert code == "AGENT_NOT_FOUND"
    assert _not_found(lambda: store.delete_agent("nobody"))[0] == "AGENT_NOT_FOUND"


def test_agents_are_listed_by_id_a_page_at_a_time(store: Store) -> None:
    for agent_id in ("c", "a", "e", "b", "d"):
        store.create_agent(_agent(agent_id))
    first = store.list_agents(2)
    assert [a.agent_id for a in first] == ["a", "b"]
    second = store.list_agents(2, after_agent_id=first[-1].agent_id)
    assert [a.agent_id for a in second] == ["c", "d"]
    assert [a.agent_id for a in store.list_agents(2, after_agent_id="d")] == ["e"]
    assert store.list_agents(2, after_agent_id="e") == []


def test_an_idempotent_create_replays_and_a_reused_key_with_another_request_is_refused(
    store: Store,
) -> None:
    first, replayed = store.create_agent(_agent("agent-a"), _key("r1"))
    assert not replayed
    # A retry: same key, same request digest (its agent id would be a new random one).
    again, replayed = store.create_agent(_agent("agent-b"), _key("r1"))
    assert replayed
    assert again == first
    assert [a.agent_id for a in store.list_agents(10)] == ["agent-a"]
    with pytest.raises(AlreadyExists) as caught:
        store.create_agent(_agent("agent-c"), _key("r1", digest="sha-other"))
    assert caught.value.code == "REQUEST_ID_REUSED"


def test_deleting_an_agent_deletes_its_versions_jobs_analyses_and_answers(store: Store) -> None:
    store.create_agent(_agent())
    store.create_agent(_agent("agent-b"))
    store.add_version(_version("ver-1"), activate=True)
    store.create_job(_job("job-1"), _event("job-1", 1))
    store.create_job(_job("job-b", "agent-b"), _event("job-b", 1))
    store.create_analysis(AnalysisJob(analysis_id="an-1", agent_id="agent-a"))
    store.record_invocations([_answer("inv-1")])
    store.record_feedback(_feedback("fb-1", "inv-1", 6.0))
    store.record_performance("agent-a", "ver-1", {"accuracy": 0.9})

    store.delete_agent("agent-a")

    assert _not_found(lambda: store.get_agent("agent-a"))[0] == "AGENT_NOT_FOUND"
    _not_found(lambda: store.get_version("agent-a", "ver-1"))
    assert _not_found(lambda: store.get_job("job-1"))[0] == "TRAINING_JOB_NOT_FOUND"
    assert store.list_events("job-1", 0) == []
    assert _not_found(lambda: store.get_analysis("an-1"))[0] == "ANALYSIS_NOT_FOUND"
    assert _not_found(lambda: store.get_invocation("inv-1"))[0] == "INVOCATION_NOT_FOUND"
    assert store.list_feedback("agent-a") == []
    assert store.performance_history("agent-a") == {}
    # Another agent keeps what is its own.
    assert store.get_job("job-b").agent_id == "agent-b"
    assert [j.training_id for _, j in _all_jobs(store)] == ["job-b"]


# Versions --------------------------------------------------------------------------------


def test_versions_are_numbered_in_order_and_listed_newest_first(store: Store) -> None:
    store.create_agent(_agent())
    made = [store.add_version(_version(f"ver-{n}"), activate=False) for n in (1, 2, 3)]
    assert [v.version_number for v in made] == [1, 2, 3]
    assert made[0] == dataclasses.replace(_version("ver-1"), version_number=1)
    assert store.get_version("agent-a", "ver-2") == made[1]
    assert [v.version_id for v in store.list_versions("agent-a", 10)] == ["ver-3", "ver-2", "ver-1"]
    assert [v.version_id for v in store.list_versions("agent-a", 1)] == ["ver-3"]
    older = store.list_versions("agent-a", 10, before_number=3)
    assert [v.version_id for v in older] == ["ver-2", "ver-1"]
    assert store.get_agent("agent-a").version_count == 3
    assert store.get_agent("agent-a").active_version_id == ""


def test_a_version_of_a_missing_agent_or_a_missing_version_is_not_found(store: Store) -> None:
    assert _not_found(lambda: store.add_version(_version("ver-1"), True))[0] == "AGENT_NOT_FOUND"
    assert _not_found(lambda: store.list_versions("agent-a", 10))[0] == "AGENT_NOT_FOUND"
    store.create_agent(_agent())
    code, message = _not_found(lambda: store.get_version("agent-a", "ver-9"))
    assert code == "VERSION_NOT_FOUND"
    assert "ver-9" in message
    assert _not_found(lambda: store.activate_version("agent-a", "ver-9"))[0] == "VERSION_NOT_FOUND"


def test_activation_makes_a_version_the_one_served(store: Store) -> None:
    store.create_agent(_agent(update_time=1.0))
    store.add_version(_version("ver-1", create_time=20.0), activate=True)
    agent = store.get_agent("agent-a")
    assert agent.active_version_id == "ver-1"
    assert agent.update_time == 20.0
    store.add_version(_version("ver-2", create_time=30.0), activate=False)
    agent = store.get_agent("agent-a")
    assert agent.active_version_id == "ver-1"
    assert agent.update_time == 30.0
    activated = store.activate_version("agent-a", "ver-2")
    assert activated.active_version_id == "ver-2"
    assert store.get_agent("agent-a") == activated


def test_agent_with_version_reads_the_active_or_the_named_version(store: Store) -> None:
    store.create_agent(_agent())
    agent, version = store.agent_with_version("agent-a")
    assert (agent.agent_id, version) == ("agent-a", None)  # no active version yet
    v1 = store.add_version(_version("ver-1"), activate=True)
    v2 = store.add_version(_version("ver-2"), activate=False)
    agent, version = store.agent_with_version("agent-a")
    assert agent == store.get_agent("agent-a")
    assert version == v1
    assert store.agent_with_version("agent-a", "ver-2")[1] == v2
    assert store.agent_with_version("agent-a", "ver-9")[1] is None
    assert store.agent_with_version("agent-a", "ver-2", "default")[1] == v2
    assert _not_found(lambda: store.agent_with_version("nobody"))[0] == "AGENT_NOT_FOUND"


def test_an_idempotent_version_add_replays_the_version_it_made(store: Store) -> None:
    store.create_agent(_agent())
    assert store.replayed_version("agent-a", _key("r1")) is None
    first = store.add_version(_version("ver-1"), activate=True, key=_key("r1"))
    again = store.add_version(_version("ver-other"), activate=True, key=_key("r1"))
    assert again == first
    assert store.replayed_version("agent-a", _key("r1")) == first
    assert [v.version_id for v in store.list_versions("agent-a", 10)] == ["ver-1"]
    with pytest.raises(AlreadyExists):
        store.add_version(_version("ver-2"), activate=True, key=_key("r1", digest="sha-other"))
    with pytest.raises(AlreadyExists):
        store.replayed_version("agent-a", _key("r1", digest="sha-other"))


# Tenancy ---------------------------------------------------------------------------------


@pytest.fixture
def tenant_a(store: Store) -> Store:
    """A store holding tenant "a"'s agent with its version, job, analysis, answer and dataset."""
    store.create_agent(_agent("agent-a", tenant="a"))
    store.add_version(_version("ver-1"), activate=True)
    store.create_job(_job("job-1"), _event("job-1", 1))
    store.create_analysis(AnalysisJob(analysis_id="an-1", agent_id="agent-a"))
    store.record_invocations([_answer("inv-1")])
    _written_dataset(store, "ds-1", "a-data", tenant="a")
    return store


def test_another_tenants_resource_is_the_same_not_found_as_a_missing_one(tenant_a: Store) -> None:
    store = tenant_a
    reads: list[tuple[Callable[[str, str | None], object], str, str]] = [
        (lambda i, t: store.get_agent(i, t), "agent-a", "agent-z"),
        (lambda i, t: store.agent_with_version(i, "", t), "agent-a", "agent-z"),
        (lambda i, t: store.agent_with_version(i, "ver-1", t), "agent-a", "agent-z"),
        (lambda i, t: store.get_job(i, t), "job-1", "job-z"),
        (lambda i, t: store.get_analysis(i, t), "an-1", "an-z"),
        (lambda i, t: store.get_invocation(i, t), "inv-1", "inv-z"),
        (lambda i, t: store.get_dataset(i, t), "ds-1", "ds-z"),
    ]
    for read, owned, missing in reads:
        hidden_code, hidden_message = _not_found(lambda: read(owned, "b"))  # noqa: B023
        absent_code, absent_message = _not_found(lambda: read(missing, "b"))  # noqa: B023
        assert hidden_code == absent_code
        assert hidden_message.replace(owned, "<id>") == absent_message.replace(missing, "<id>")
        # The owner, and an unscoped read (tenant None), find it.
        read(owned, "a")
        read(owned, None)


def test_lists_keep_to_the_callers_tenant(tenant_a: Store) -> None:
    store = tenant_a
    store.create_agent(_agent("agent-b", tenant="b"))
    store.create_job(_job("job-b", "agent-b"), _event("job-b", 1))
    _written_dataset(store, "ds-b", "b-data", tenant="b")
    assert [a.agent_id for a in store.list_agents(10, tenant="a")] == ["agent-a"]
    assert [a.agent_id for a in store.list_agents(10, tenant="b")] == ["agent-b"]
    assert [a.agent_id for a in store.list_agents(10, tenant="c")] == []
    assert [a.agent_id for a in store.list_agents(10)] == ["agent-a", "agent-b"]
    assert [d.name for d in store.list_datasets(10, tenant="b")] == ["b-data"]
    assert [d.name for d in store.list_datasets(10)] == ["a-data", "b-data"]
    assert [j.training_id for _, j in _all_jobs(store, tenant="a")] == ["job-1"]
    assert [j.training_id for _, j in _all_jobs(store, tenant="b")] == ["job-b"]
    assert [j.training_id for _, j in _all_jobs(store)] == ["job-b", "job-1"]


def test_one_request_id_under_two_tenants_names_two_calls(store: Store) -> None:
    mine, replayed = store.create_agent(_agent("agent-a", tenant="a"), _key("r1", tenant="a"))
    assert not replayed
    theirs, replayed = store.create_agent(_agent("agent-b", tenant="b"), _key("r1", tenant="b"))
    assert not replayed
    assert theirs.agent_id == "agent-b"
    # Another digest under tenant b's key is no misuse of tenant a's.
    other, replayed = store.create_agent(
        _agent("agent-c", tenant="c"), _key("r1", digest="sha-2", tenant="c")
    )
    assert (other.agent_id, replayed) == ("agent-c", False)
    assert store.create_agent(_agent("agent-x", tenant="a"), _key("r1", tenant="a")) == (
        mine,
        True,
    )


# Invocations, feedback and performance ----------------------------------------------------


def test_answers_are_stored_and_read_back_and_a_deleted_agents_are_dropped(store: Store) -> None:
    store.create_agent(_agent())
    answer = _answer("inv-1")
    store.record_invocations([answer, _answer("inv-gone", agent_id="agent-deleted")])
    assert store.get_invocation("inv-1") == answer
    assert _not_found(lambda: store.get_invocation("inv-gone"))[0] == "INVOCATION_NOT_FOUND"
    # The first answer stored under an id stands.
    store.record_invocations([_answer("inv-1", output="no")])
    assert store.get_invocation("inv-1").output == "yes"


def test_feedback_is_kept_once_per_answer_and_listed_oldest_first(store: Store) -> None:
    store.create_agent(_agent())
    store.record_invocations([_answer("inv-1"), _answer("inv-2", output="no")])
    second = _feedback("fb-2", "inv-2", 8.0, feedback="correct", reward=1.0)
    first = _feedback("fb-1", "inv-1", 7.0)
    assert store.record_feedback(second) == (second, False)
    assert store.record_feedback(first) == (first, False)
    duplicate = _feedback("fb-3", "inv-1", 9.0, feedback="correct", reward=1.0)
    assert store.record_feedback(duplicate) == (first, True)

    listed = store.list_feedback("agent-a")
    assert [(f, i.invocation_id) for f, i in listed] == [(first, "inv-1"), (second, "inv-2")]
    assert listed[0][1] == store.get_invocation("inv-1")
    assert [f.feedback_id for f, _ in store.list_feedback("agent-a", since=7.0)] == ["fb-2"]
    assert store.list_feedback("agent-a", since=8.0) == []
    assert store.list_feedback("agent-other") == []


def test_performance_history_keeps_each_versions_latest_metrics(store: Store) -> None:
    store.create_agent(_agent())
    assert store.performance_history("agent-a") == {}
    store.record_performance("agent-a", "ver-1", {"accuracy": 0.5, "latency": 3.0})
    store.record_performance("agent-a", "ver-2", {"accuracy": 0.7})
    store.record_performance("agent-a", "ver-1", {"accuracy": 0.6})
    assert store.performance_history("agent-a") == {
        "ver-1": {"accuracy": 0.6, "latency": 3.0},
        "ver-2": {"accuracy": 0.7},
    }


# Named datasets --------------------------------------------------------------------------


def test_a_dataset_is_visible_only_once_finished(store: Store) -> None:
    assert store.begin_dataset(_dataset("ds-1", "set")) is None
    assert _not_found(lambda: store.get_dataset("ds-1"))[0] == "DATASET_NOT_FOUND"
    assert store.list_datasets(10) == []
    store.append_dataset_examples("ds-1", 0, [b"e0", b"e1"])
    store.append_dataset_examples("ds-1", 2, [b"e2"])
    assert _not_found(lambda: store.read_dataset_examples("ds-1", 0, 10))[0] == "DATASET_NOT_FOUND"
    finished = store.finish_dataset("ds-1", 3, 2, "sha-x")
    expected = dataclasses.replace(
        _dataset("ds-1", "set"), example_count=3, output_count=2, content_sha256="sha-x"
    )
    assert finished == expected
    assert store.get_dataset("ds-1") == expected
    assert store.list_datasets(10) == [expected]
    assert store.read_dataset_examples("ds-1", 0, 10) == [b"e0", b"e1", b"e2"]
    assert store.read_dataset_examples("ds-1", 1, 1) == [b"e1"]
    assert store.read_dataset_examples("ds-1", 3, 10) == []


def test_a_dataset_name_is_taken_while_written_and_once_finished(store: Store) -> None:
    store.begin_dataset(_dataset("ds-1", "set"))
    with pytest.raises(AlreadyExists):
        store.begin_dataset(_dataset("ds-2", "set"))
    store.finish_dataset("ds-1", 0, 0, "")
    with pytest.raises(AlreadyExists):
        store.begin_dataset(_dataset("ds-3", "set"))
    assert [d.dataset_id for d in store.list_datasets(10)] == ["ds-1"]


def test_datasets_are_listed_by_name_a_page_at_a_time(store: Store) -> None:
    for n, name in enumerate(("c", "a", "b")):
        _written_dataset(store, f"ds-{n}", name)
    page = store.list_datasets(2)
    assert [d.name for d in page] == ["a", "b"]
    assert [d.name for d in store.list_datasets(2, after_name="b")] == ["c"]


def test_a_finished_datasets_key_replays_it(store: Store) -> None:
    store.begin_dataset(_dataset("ds-1", "set"), _key("r1"))
    store.append_dataset_examples("ds-1", 0, [b"e0"])
    finished = store.finish_dataset("ds-1", 1, 1, "sha-x", _key("r1"))
    assert store.begin_dataset(_dataset("ds-2", "other"), _key("r1")) == finished
    assert [d.dataset_id for d in store.list_datasets(10)] == ["ds-1"]
    with pytest.raises(AlreadyExists):
        store.begin_dataset(_dataset("ds-3", "third"), _key("r1", digest="sha-other"))


def test_discarding_and_deleting_datasets(open_store: Opener) -> None:
    store = open_store()
    store.begin_dataset(_dataset("ds-failed", "failed"))
    store.append_dataset_examples("ds-failed", 0, [b"e0"])
    store.discard_dataset("ds-failed")
    store.begin_dataset(_dataset("ds-failed-2", "failed"))  # the name is free again
    store.begin_dataset(_dataset("ds-open", "open"))
    _written_dataset(store, "ds-done", "done")

    assert _not_found(lambda: store.delete_dataset("ds-open"))[0] == "DATASET_NOT_FOUND"
    # A restarted server drops what the stopped one left half-written, and only that.
    store.close()
    store = open_store()
    assert store.discard_unfinished_datasets(NOW) == 2
    assert store.discard_unfinished_datasets(NOW) == 0
    assert [d.dataset_id for d in store.list_datasets(10)] == ["ds-done"]
    store.begin_dataset(_dataset("ds-open-2", "open"))

    store.delete_dataset("ds-done")
    assert _not_found(lambda: store.get_dataset("ds-done"))[0] == "DATASET_NOT_FOUND"
    assert _not_found(lambda: store.read_dataset_examples("ds-done", 0, 1))[0] == (
        "DATASET_NOT_FOUND"
    )
    assert _not_found(lambda: store.delete_dataset("ds-done"))[0] == "DATASET_NOT_FOUND"
    store.begin_dataset(_dataset("ds-done-2", "done"))  # and so is a deleted one's


# Training data ---------------------------------------------------------------------------


def test_training_data_is_stored_once_under_its_hash(store: Store) -> None:
    store.save_dataset("sha-1", 2, b"first")
    store.save_dataset("sha-1", 2, b"second")  # already stored: a no-op
    store.save_dataset("sha-2", 1, b"other")
    assert store.load_dataset("sha-1") == b"first"
    assert store.load_dataset("sha-2") == b"other"
    assert _not_found(lambda: store.load_dataset("sha-none"))[0] == "DATASET_NOT_FOUND"


# Analyses --------------------------------------------------------------------------------


def test_an_analysis_is_stored_when_it_starts_and_when_it_ends(store: Store) -> None:
    store.create_agent(_agent())
    job = AnalysisJob(analysis_id="an-1", agent_id="agent-a", create_time=1.0, trace_id="t")
    assert store.create_analysis(job) == (job, False)
    assert store.get_analysis("an-1") == job
    done = dataclasses.replace(
        job,
        status=AnalysisStatus.SUCCEEDED,
        progress={"percent_complete": 100.0},
        result=b"\x00result",
        end_time=2.0,
    )
    store.finish_analysis(done)
    assert store.get_analysis("an-1") == done
    assert _not_found(lambda: store.get_analysis("an-z"))[0] == "ANALYSIS_NOT_FOUND"


def test_an_idempotent_analysis_replays_the_job_it_started(store: Store) -> None:
    store.create_agent(_agent())
    job = AnalysisJob(analysis_id="an-1", agent_id="agent-a")
    store.create_analysis(job, _key("r1"))
    assert store.create_analysis(AnalysisJob("an-2", "agent-a"), _key("r1")) == (job, True)
    assert _not_found(lambda: store.get_analysis("an-2"))[0] == "ANALYSIS_NOT_FOUND"


def test_analyses_left_running_by_a_stopped_server_are_failed(open_store: Opener) -> None:
    store = open_store()
    store.create_agent(_agent())
    for analysis_id in ("an-1", "an-2", "an-done"):
        store.create_analysis(AnalysisJob(analysis_id=analysis_id, agent_id="agent-a"))
    done = dataclasses.replace(store.get_analysis("an-done"), status=AnalysisStatus.SUCCEEDED)
    store.finish_analysis(done)
    store.close()

    store = open_store()
    error = {"code": "INTERRUPTED", "retryable": True}
    assert store.fail_orphaned_analyses(error, 50.0) == 2
    for analysis_id in ("an-1", "an-2"):
        failed = store.get_analysis(analysis_id)
        assert (failed.status, failed.error, failed.end_time) == (
            AnalysisStatus.FAILED,
            error,
            50.0,
        )
    assert store.get_analysis("an-done") == done
    assert store.fail_orphaned_analyses(error, 60.0) == 0


# Jobs and their event logs ---------------------------------------------------------------


def _all_jobs(store: Store, tenant: str | None = None) -> list[tuple[int, TrainingJob]]:
    return store.list_jobs(agent_id="", statuses=(), limit=100, before_position=0, tenant=tenant)


def test_a_job_is_stored_with_its_first_event(store: Store) -> None:
    store.create_agent(_agent())
    job = _job("job-1", config={"epochs": 2}, create_time=3.0, trace_context={"a": "b"})
    first = _event("job-1", 1, "accepted")
    assert store.create_job(job, first) == (job, False)
    assert store.get_job("job-1") == job
    assert store.list_events("job-1", 0) == [first]
    assert _not_found(lambda: store.get_job("job-z"))[0] == "TRAINING_JOB_NOT_FOUND"


def test_an_idempotent_job_replays_the_job_it_made(store: Store) -> None:
    store.create_agent(_agent())
    job = _job("job-1")
    store.create_job(job, _event("job-1", 1), _key("r1"))
    assert store.create_job(_job("job-2"), _event("job-2", 1), _key("r1")) == (job, True)
    assert [j.training_id for _, j in _all_jobs(store)] == ["job-1"]
    with pytest.raises(AlreadyExists):
        store.create_job(_job("job-3"), _event("job-3", 1), _key("r1", digest="sha-other"))


def test_jobs_are_listed_newest_first_with_filters_and_positions(store: Store) -> None:
    store.create_agent(_agent())
    store.create_agent(_agent("agent-b"))
    store.create_job(_job("job-1"), _event("job-1", 1))
    store.create_job(_job("job-2", status=JobStatus.RUNNING), _event("job-2", 1))
    store.create_job(_job("job-b", "agent-b"), _event("job-b", 1))
    store.create_job(_job("job-3", status=JobStatus.SUCCEEDED), _event("job-3", 1))

    listed = _all_jobs(store)
    assert [j.training_id for _, j in listed] == ["job-3", "job-b", "job-2", "job-1"]
    positions = [position for position, _ in listed]
    assert positions == sorted(positions, reverse=True)
    assert len(set(positions)) == 4

    def ids(
        agent_id: str = "", statuses: tuple[str, ...] = (), limit: int = 100, before: int = 0
    ) -> list[str]:
        page = store.list_jobs(
            agent_id=agent_id, statuses=statuses, limit=limit, before_position=before
        )
        return [job.training_id for _, job in page]

    assert ids(agent_id="agent-a") == ["job-3", "job-2", "job-1"]
    assert ids(statuses=(JobStatus.RUNNING, JobStatus.SUCCEEDED)) == ["job-3", "job-2"]
    assert ids(agent_id="agent-a", statuses=(JobStatus.QUEUED,)) == ["job-1"]
    assert ids(limit=2) == ["job-3", "job-b"]
    # A page goes on before the last position of the page before.
    assert ids(limit=2, before=positions[1]) == ["job-2", "job-1"]
    assert ids(agent_id="agent-nobody") == []


def test_events_append_in_sequence_and_save_the_jobs_state(store: Store) -> None:
    store.create_agent(_agent())
    store.create_job(_job("job-1"), _event("job-1", 1, "accepted"))
    running = _job("job-1", status=JobStatus.RUNNING, last_sequence=2, percent_complete=50.0)
    store.append_event(_event("job-1", 2), running)
    assert store.get_job("job-1") == running
    store.append_event(_event("job-1", 3), dataclasses.replace(running, last_sequence=3))
    assert [e.sequence for e in store.list_events("job-1", 0)] == [1, 2, 3]
    assert store.list_events("job-1", 2) == [_event("job-1", 2), _event("job-1", 3)]
    assert store.list_events("job-1", 4) == []
    assert store.list_events("job-z", 0) == []


def test_an_event_with_a_taken_sequence_stores_nothing(store: Store) -> None:
    store.create_agent(_agent())
    store.create_job(_job("job-1"), _event("job-1", 1, "accepted"))
    before = store.get_job("job-1")
    finished = _job("job-1", status=JobStatus.SUCCEEDED, version_id="ver-1")
    with pytest.raises(Exception):  # noqa: B017 (each backend names its own constraint error)
        store.append_event(_event("job-1", 1, "finished"), finished, _version("ver-1"))
    assert store.get_job("job-1") == before
    assert store.list_events("job-1", 0) == [_event("job-1", 1, "accepted")]
    assert store.list_versions("agent-a", 10) == []
    assert store.get_agent("agent-a").active_version_id == ""


def test_the_last_event_and_the_version_it_made_are_stored_together(store: Store) -> None:
    store.create_agent(_agent())
    store.create_job(_job("job-1"), _event("job-1", 1, "accepted"))
    finished = _job("job-1", status=JobStatus.SUCCEEDED, version_id="ver-1", last_sequence=2)
    store.append_event(_event("job-1", 2, "finished"), finished, _version("ver-1"))
    assert store.get_job("job-1") == finished
    assert store.get_agent("agent-a").active_version_id == "ver-1"
    assert store.get_version("agent-a", "ver-1").version_number == 1


# Replicas and what they own -------------------------------------------------------------

NOW = 1_000.0


def test_a_replica_is_alive_while_it_renews_its_lease(store: Store) -> None:
    store.register_replica("r-a", "10.0.0.1:50051", NOW, NOW + 10, sole=False)
    assert store.renew_replica("r-a", NOW + 5, NOW + 15)
    assert not store.renew_replica("r-a", NOW + 20, NOW + 30)  # expired at NOW + 15
    assert store.renew_replica("r-a", NOW + 21, NOW + 31)  # alive again since the last call
    store.remove_replica("r-a")
    assert not store.renew_replica("r-a", NOW + 22, NOW + 32)


def test_only_the_jobs_of_dead_replicas_are_claimed_and_each_by_one_replica(store: Store) -> None:
    store.create_agent(_agent())
    store.register_replica("r-a", "", NOW, NOW + 10, sole=False)
    store.register_replica("r-b", "", NOW, NOW + 30, sole=False)
    store.register_replica("r-c", "", NOW, NOW + 30, sole=False)
    store.create_job(_job("job-a1"), _event("job-a1", 1), owner="r-a")
    store.create_job(_job("job-a2", status=JobStatus.RUNNING), _event("job-a2", 1), owner="r-a")
    done = _job("job-a3", status=JobStatus.SUCCEEDED)
    store.create_job(done, _event("job-a3", 1), owner="r-a")
    store.create_job(_job("job-b"), _event("job-b", 1), owner="r-b")

    assert store.claim_orphaned_jobs("r-c", NOW + 5) == []  # r-a is alive until NOW + 10
    claimed = store.claim_orphaned_jobs("r-c", NOW + 11)
    assert [job.training_id for job in claimed] == ["job-a1", "job-a2"]  # oldest first
    assert store.claim_orphaned_jobs("r-b", NOW + 11) == []  # r-c holds them now
    # The old owner's writes are refused; the new owner's are stored.
    with pytest.raises(LeaseLost):
        store.append_event(_event("job-a1", 2), _job("job-a1", last_sequence=2), owner="r-a")
    store.append_event(_event("job-a1", 2), _job("job-a1", last_sequence=2), owner="r-c")
    assert [e.sequence for e in store.list_events("job-a1", 0)] == [1, 2]


def test_a_sole_replica_orphans_every_other_at_once(store: Store) -> None:
    store.create_agent(_agent())
    store.register_replica("r-old", "", NOW, NOW + 600, sole=False)
    store.create_job(_job("job-1"), _event("job-1", 1), owner="r-old")
    store.begin_dataset(_dataset("ds-open", "open"), owner="r-old")
    store.create_analysis(AnalysisJob("an-1", "agent-a"), owner="r-old")
    assert store.discard_unfinished_datasets(NOW + 1) == 0
    assert store.fail_orphaned_analyses({"code": "X"}, NOW + 1) == 0

    store.register_replica("r-new", "", NOW + 1, NOW + 11, sole=True)
    assert [job.training_id for job in store.claim_orphaned_jobs("r-new", NOW + 1)] == ["job-1"]
    assert store.discard_unfinished_datasets(NOW + 1) == 1
    assert store.fail_orphaned_analyses({"code": "X"}, NOW + 1) == 1


def test_a_cancellation_is_asked_of_the_owner_of_an_unfinished_job(store: Store) -> None:
    store.create_agent(_agent())
    store.create_job(_job("job-1"), _event("job-1", 1), owner="r-a")
    store.create_job(_job("job-2"), _event("job-2", 1), owner="r-a")
    done = _job("job-3", status=JobStatus.SUCCEEDED)
    store.create_job(done, _event("job-3", 1), owner="r-a")
    assert store.cancel_requests("r-a") == []
    store.request_job_cancel("job-1")
    store.request_job_cancel("job-3")  # ended: nothing to ask
    assert store.cancel_requests("r-a") == ["job-1"]
    assert store.cancel_requests("r-b") == []


def test_job_limits_are_counted_in_the_creating_transaction(store: Store) -> None:
    store.create_agent(_agent())
    store.create_agent(_agent("agent-t", tenant="t"))
    limits = JobLimits(max_queued=2, max_unfinished_per_tenant=1, tenant="t")
    store.create_job(_job("job-t1", "agent-t"), _event("job-t1", 1), limits=limits)
    with pytest.raises(JobLimitReached) as reached:
        store.create_job(_job("job-t2", "agent-t"), _event("job-t2", 1), limits=limits)
    assert (reached.value.limit, reached.value.count) == ("max_unfinished_per_tenant", 1)
    other = JobLimits(max_queued=2, max_unfinished_per_tenant=5, tenant="default")
    store.create_job(_job("job-a1"), _event("job-a1", 1), limits=other)
    with pytest.raises(JobLimitReached) as reached:
        refused = _job("job-a2", dataset_sha256="sha-refused")
        store.create_job(refused, _event("job-a2", 1), limits=other, training_data=b"data")
    assert (reached.value.limit, reached.value.count) == ("max_queued", 2)
    assert _not_found(lambda: store.get_job("job-a2"))[0] == "TRAINING_JOB_NOT_FOUND"
    assert _not_found(lambda: store.load_dataset("sha-refused"))[0] == "DATASET_NOT_FOUND"
    # A job created stores its training data in the same transaction.
    accepted = _job("job-b1", dataset_sha256="sha-accepted", example_count=1)
    store.create_job(accepted, _event("job-b1", 1), training_data=b"data")
    assert store.load_dataset("sha-accepted") == b"data"
    # A replay of a key is answered whatever the counts.
    store.create_job(_job("job-k"), _event("job-k", 1), _key("r1"))
    assert store.create_job(_job("job-x"), _event("job-x", 1), _key("r1"), limits=other)[1]


# Commits and closing ---------------------------------------------------------------------


def test_every_write_of_agents_or_jobs_counts_a_commit_and_reads_do_not(store: Store) -> None:
    writes: list[Callable[[], object]] = [
        lambda: store.create_agent(_agent()),
        lambda: store.add_version(_version("ver-1"), activate=False),
        lambda: store.activate_version("agent-a", "ver-1"),
        lambda: store.create_job(_job("job-1"), _event("job-1", 1)),
        lambda: store.append_event(_event("job-1", 2), _job("job-1")),
        lambda: store.record_performance("agent-a", "ver-1", {"accuracy": 1.0}),
        lambda: store.save_dataset("sha-1", 1, b"x"),
        lambda: store.create_analysis(AnalysisJob("an-1", "agent-a")),
        lambda: store.finish_analysis(AnalysisJob("an-1", "agent-a", AnalysisStatus.SUCCEEDED)),
        lambda: store.begin_dataset(_dataset("ds-1", "set")),
        lambda: store.append_dataset_examples("ds-1", 0, [b"e"]),
        lambda: store.finish_dataset("ds-1", 1, 1, "sha"),
        lambda: store.delete_dataset("ds-1"),
        lambda: store.delete_agent("agent-a"),
    ]
    for write in writes:
        before = store.commits
        write()
        assert store.commits > before
    # Answers and feedback change no agent or version: they leave cached reads valid.
    store.create_agent(_agent())
    for write in [
        lambda: store.record_invocations([_answer("inv-1")]),
        lambda: store.record_feedback(_feedback("fb-1", "inv-1", 1.0)),
    ]:
        before = store.commits
        write()
        assert store.commits == before
    store.add_version(_version("ver-1"), activate=True)
    reads: list[Callable[[], object]] = [
        lambda: store.get_agent("agent-a"),
        lambda: store.agent_with_version("agent-a"),
        lambda: store.list_agents(10),
        lambda: store.get_version("agent-a", "ver-1"),
        lambda: store.list_versions("agent-a", 10),
        lambda: store.list_datasets(10),
        lambda: _all_jobs(store),
        lambda: store.performance_history("agent-a"),
    ]
    for read in reads:
        before = store.commits
        read()
        assert store.commits == before


def test_what_was_written_is_read_after_closing_and_opening_again(open_store: Opener) -> None:
    store = open_store()
    store.create_agent(_agent())
    version = store.add_version(_version("ver-1"), activate=True)
    store.close()
    store.close()  # again: nothing happens
    store = open_store()
    agent, served = store.agent_with_version("agent-a")
    assert agent.active_version_id == "ver-1"
    assert served == version


def test_an_open_store_answers_a_ping_and_a_reopened_one_too(open_store: Opener) -> None:
    first = open_store()
    first.ping()
    first.close()
    open_store().ping()
