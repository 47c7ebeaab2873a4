"""Several replicas on one PostgreSQL database: any replica answers anything, none is needed.

Real servers over real gRPC on a real PostgreSQL server (tests/postgres_server.py), sharing an
artifact folder. The kill test runs three replicas as processes and ``kill -9``s the one running
a job at a random moment: another replica takes the job once its lease runs out and finishes it
with the metrics of an uninterrupted run, while a watcher on the third sees every event once, in
order, and so does the trainer's own stream, which re-attaches to a live replica by itself.
``REPLICA_KILL_RUNS=10`` repeats it (scripts/replica_kill_loop.sh does). A rolling restart of
three replicas runs under 50 clients. The other tests run two replicas in this process:
cancellation, limits, idempotent creates, watching, serving and analyses across them, and a
replica that lets go of a job taken from it.
"""

from __future__ import annotations

import os
import random
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from agent_training.v1 import analysis_pb2, service_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.domain import AnalysisJob
from agent_training_server.store.postgres import PostgresStore
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.postgres_server import free_port
from tests.server_process import ServerProcess
from tests.test_analysis import trained
from tests.test_crash_recovery import INTENTS, comparable
from tests.test_training import banking_examples

LEASE_SECONDS = 2.0
"""Short leases: a killed replica's job is taken over within seconds."""
RUNS = int(os.environ.get("REPLICA_KILL_RUNS", "1"))
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
KILL_JOB = training_pb2.TrainingConfig(
    epochs=16, batch_size=1, seed=11, early_stopping=training_pb2.EarlyStopping(patience=0)
)
"""Long enough that a kill in its first half lands before its end, however late the stream."""
KILL_EPOCHS = (1, 8)
LONG_JOB = training_pb2.TrainingConfig(
    epochs=60, batch_size=1, seed=5, early_stopping=training_pb2.EarlyStopping(patience=0)
)


def start_replica(tmp_path: Path, name: str, database_url: str, **settings) -> ServerProcess:
    """A server process on the shared database and artifact folder, with its own data folder."""
    return ServerProcess(
        tmp_path / name / "data",
        tmp_path / f"{name}.log",
        database_url=database_url,
        artifact_dir=str(tmp_path / "artifacts"),
        replica_lease_seconds=LEASE_SECONDS,
        checkpoint_every_steps=60,
        **settings,
    )


def until_progress_in_epoch(stream: Iterator, epoch: int) -> list:
    """Events of a training stream up to a progress report inside ``epoch`` (or later)."""
    seen = []
    for event in stream:
        seen.append(event)
        assert not event.HasField("finished"), "the job ended before the kill"
        if event.HasField("progress") and event.progress.epoch >= epoch:
            return seen
    raise AssertionError("the stream ended before the kill")


class Watcher:
    """WatchTrainingJob from the first event, in a thread, to the job's end."""

    def __init__(self, client: AgentTrainingClient, training_id: str) -> None:
        self.events: list = []
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._follow, args=(client, training_id))
        self._thread.start()

    def _follow(self, client: AgentTrainingClient, training_id: str) -> None:
        try:
            for event in client.watch_training_job(training_id, 0, timeout=600):
                self.events.append(event)
        except BaseException as error:  # reported by result()
            self.error = error

    def result(self) -> list:
        self._thread.join(600)
        assert self.error is None, self.error
        return self.events


def replica_running(
    database_url: str, training_id: str, replicas: list[ServerProcess]
) -> ServerProcess:
    """The replica that owns a job (by the replica id each logged when it registered)."""
    with psycopg.connect(database_url) as database:
        row = database.execute(
            "SELECT owner FROM jobs WHERE training_id = %s", (training_id,)
        ).fetchone()
    assert row is not None
    for replica in replicas:
        if f"replica {row[0]} registered" in replica.log_path.read_text():
            return replica
    raise AssertionError(f"no replica is {row[0]}")


def uninterrupted_metrics(client: AgentTrainingClient, examples: list) -> dict[str, float]:
    """The comparable metrics of KILL_JOB on ``examples`` trained without interruption."""
    client.create_agent(agent_id="unbroken")
    events = client.train_agent(
        agent_id="unbroken", training_data=examples, config=KILL_JOB, timeout=300
    )
    return comparable(list(events)[-1].finished.metrics)


def resumed_by(log: Path, training_id: str) -> bool:
    """Whether a replica's log says it resumed the job of a lost replica."""
    text = log.read_text(encoding="utf-8", errors="replace") if log.exists() else ""
    return re.search(rf"resuming job {re.escape(training_id)} .*replica lost", text) is not None


@pytest.mark.parametrize("run", range(RUNS))
def test_a_job_whose_replica_is_killed_finishes_on_another_and_a_third_sees_every_event(
    tmp_path: Path, postgres_url: str, run: int
) -> None:
    examples = banking_examples(INTENTS, per_intent=40)
    kill_in_epoch = random.randint(*KILL_EPOCHS)
    replicas = [start_replica(tmp_path, name, postgres_url) for name in ("a", "b", "c")]
    target = ",".join(replica.address for replica in replicas)
    try:
        # The trainer's client knows all three replicas, as a train --follow would.
        with AgentTrainingClient(target, timeout=60) as trainer:
            trainer.create_agent(agent_id="moved")
            stream = trainer.train_agent(
                agent_id="moved", training_data=examples, config=KILL_JOB, timeout=300
            )
            accepted = next(stream)
            training_id = accepted.training_id
            owner = replica_running(postgres_url, training_id, replicas)
            others = [replica for replica in replicas if replica is not owner]
            with AgentTrainingClient(others[1].address, timeout=60) as on_third:
                watcher = Watcher(on_third, training_id)
                seen = [accepted, *until_progress_in_epoch(stream, kill_in_epoch)]
                time.sleep(random.uniform(0.0, 0.5))  # vary where in the epoch the kill lands
                owner.kill()
                followed = seen + list(stream)  # the trainer's stream re-attaches elsewhere
                watched = watcher.result()
        print(f"\nrun {run}: killed in epoch {kill_in_epoch} after event {seen[-1].sequence}")
        second = others[0]
        assert [e.SerializeToString() for e in followed] == [e.SerializeToString() for e in watched]

        # The watcher on the third replica saw each event once, in order, to the end.
        assert [event.sequence for event in watched] == list(range(1, len(watched) + 1))
        assert all(event.training_id == training_id for event in watched)
        assert [e.SerializeToString() for e in watched[: len(seen)]] == [
            e.SerializeToString() for e in seen
        ]
        finished = watched[-1].finished
        assert finished.status == SUCCEEDED

        with AgentTrainingClient(second.address, timeout=60) as on_second:
            job = on_second.get_training_job(training_id)
            reasons = [transition.reason for transition in job.timeline]
            assert "replica lost" in reasons, f"the job ended before the kill: {reasons}"
            assert any(resumed_by(replica.log_path, training_id) for replica in others)
            assert on_second.get_agent("moved").active_version_id == finished.version_id
            stored = list(on_second.watch_training_job(training_id, 0, timeout=60))
            assert [e.SerializeToString() for e in stored] == [
                e.SerializeToString() for e in watched
            ]
            # The same request, uninterrupted: the same numbers.
            reference = uninterrupted_metrics(on_second, examples)
        assert comparable(finished.metrics) == reference
    finally:
        for replica in replicas:
            replica.kill()


@pytest.fixture
def two_replicas(tmp_path: Path, postgres_url: str) -> Iterator[tuple[ServerThread, ServerThread]]:
    def config(name: str):
        return make_config(
            tmp_path / name,
            database_url=postgres_url,
            artifact_dir=str(tmp_path / "artifacts"),
            replica_lease_seconds=LEASE_SECONDS,
            replica_read_seconds=0.5,
            max_jobs_per_tenant=2,
        )

    first = ServerThread(config("a"))
    second = ServerThread(config("b"))
    yield first, second
    first.stop()
    second.stop()


def running(client: AgentTrainingClient, **fields) -> tuple[str, Iterator]:
    """Start a long job and return its id and stream once it runs."""
    stream = client.train_agent(config=LONG_JOB, timeout=300, **fields)
    for event in stream:
        if event.HasField("progress") and event.progress.step > 0:
            return event.training_id, stream
    raise AssertionError("the job ended before it ran")


def test_a_job_running_on_one_replica_is_watched_and_cancelled_through_another(
    two_replicas: tuple[ServerThread, ServerThread],
) -> None:
    first, second = two_replicas
    with (
        AgentTrainingClient(first.address, timeout=60) as on_first,
        AgentTrainingClient(second.address, timeout=60) as on_second,
    ):
        on_first.create_agent(agent_id="long")
        examples = banking_examples(INTENTS[:3], per_intent=10)
        training_id, stream = running(on_first, agent_id="long", training_data=examples)
        watcher = Watcher(on_second, training_id)
        job = on_second.cancel_training_job(training_id)
        assert job.status == training_pb2.TRAINING_STATUS_CANCELLED
        rest = list(stream)
        assert rest[-1].finished.status == training_pb2.TRAINING_STATUS_CANCELLED
        watched = watcher.result()
        assert [event.sequence for event in watched] == list(range(1, len(watched) + 1))
        assert watched[-1].SerializeToString() == rest[-1].SerializeToString()
        error = expect_error(on_first.cancel_training_job, training_id)
        assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
        assert error.code == "JOB_ALREADY_ENDED"


def test_a_job_running_on_one_replica_is_paused_and_resumed_through_another(
    two_replicas: tuple[ServerThread, ServerThread],
) -> None:
    first, second = two_replicas
    with (
        AgentTrainingClient(first.address, timeout=60) as on_first,
        AgentTrainingClient(second.address, timeout=60) as on_second,
    ):
        on_first.create_agent(agent_id="paused-across")
        examples = banking_examples(INTENTS[:3], per_intent=10)
        training_id, stream = running(on_first, agent_id="paused-across", training_data=examples)
        # The owner finds the request at its next heartbeat; the second waits for the pause.
        job = on_second.pause_training_job(training_id)
        assert job.status == training_pb2.TRAINING_STATUS_PAUSED
        # The second takes the paused job in the store and runs it to its end.
        assert on_second.resume_training_job(training_id).status == (
            training_pb2.TRAINING_STATUS_QUEUED
        )
        rest = list(stream)
        assert rest[-1].finished.status == SUCCEEDED
        events = list(on_first.watch_training_job(training_id))
        assert [event.sequence for event in events] == list(range(1, len(events) + 1))
        reasons = [t.reason for t in on_second.get_training_job(training_id).timeline]
        assert reasons.index("paused by request") < reasons.index("resumed by request")


def test_limits_and_idempotent_creates_hold_across_replicas(
    two_replicas: tuple[ServerThread, ServerThread],
) -> None:
    first, second = two_replicas
    examples = banking_examples(INTENTS[:3], per_intent=10)
    with (
        AgentTrainingClient(first.address, timeout=60) as on_first,
        AgentTrainingClient(second.address, timeout=60) as on_second,
    ):
        made = on_first.create_agent(agent_id="limited", request_id="create-once")
        assert on_second.create_agent(agent_id="limited", request_id="create-once") == made
        started = next(
            on_first.train_agent(
                agent_id="limited",
                training_data=examples,
                config=LONG_JOB,
                request_id="train-once",
                timeout=60,
            )
        )
        again = next(
            on_second.train_agent(
                agent_id="limited",
                training_data=examples,
                config=LONG_JOB,
                request_id="train-once",
                timeout=60,
            )
        )
        assert again.training_id == started.training_id
        second_job = next(
            on_second.train_agent(
                agent_id="limited", training_data=examples, config=LONG_JOB, timeout=60
            )
        )
        # max_jobs_per_tenant=2: the third unfinished job is refused by either replica.
        for client in (on_first, on_second):
            error = expect_error(
                lambda c=client: next(
                    c.train_agent(
                        agent_id="limited", training_data=examples, config=LONG_JOB, timeout=60
                    )
                )
            )
            assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert error.code == "TENANT_JOB_LIMIT"
        for training_id in (started.training_id, second_job.training_id):
            on_second.cancel_training_job(training_id)


def test_a_version_activated_on_one_replica_is_served_by_another_within_the_read_bound(
    two_replicas: tuple[ServerThread, ServerThread],
) -> None:
    first, second = two_replicas
    examples = banking_examples(INTENTS[:3], per_intent=10)
    with (
        AgentTrainingClient(first.address, timeout=60) as on_first,
        AgentTrainingClient(second.address, timeout=60) as on_second,
    ):
        on_first.create_agent(agent_id="served")
        versions = []
        for seed in (1, 2):
            events = list(
                on_first.train_agent(
                    agent_id="served",
                    training_data=examples,
                    config=training_pb2.TrainingConfig(epochs=2, seed=seed),
                    timeout=120,
                )
            )
            versions.append(events[-1].finished.version_id)
            if seed == 1:  # the second replica caches its lookup of the first version
                answer = on_second.invoke_agent(agent_id="served", inputs=["top up failed"])
                assert answer.version_id == versions[0]
        time.sleep(second.config.replica_read_seconds)  # the documented bound
        answer = on_second.invoke_agent(agent_id="served", inputs=["top up failed"])
        assert answer.version_id == versions[1]
        on_first.activate_agent_version("served", versions[0])
        time.sleep(second.config.replica_read_seconds)
        assert on_second.invoke_agent(agent_id="served", inputs=["x"]).version_id == versions[0]


CLIENTS = 50
TRAINERS = 5
"""Of the clients, those that start one training job (and follow it to its end) first."""
RESTART_JOB = training_pb2.TrainingConfig(
    epochs=30, batch_size=1, seed=9, early_stopping=training_pb2.EarlyStopping(patience=0)
)


class LoadClient:
    """One client calling InvokeAgent and GetAgent (a trainer first trains) until told to stop."""

    def __init__(self, target: str, number: int, stop: threading.Event) -> None:
        self.number = number
        self.answers: list[str] = []
        self.training: list = []
        self.calls = 0
        self.failures: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(target, stop))
        self._thread.start()

    def _run(self, target: str, stop: threading.Event) -> None:
        with AgentTrainingClient(target, timeout=30) as client:
            try:
                if self.number < TRAINERS:
                    self.training = list(
                        client.train_agent(
                            agent_id=f"trained-{self.number}",
                            training_data=banking_examples(INTENTS[:3], per_intent=10),
                            config=RESTART_JOB,
                            timeout=600,
                        )
                    )
                while not stop.is_set():
                    answer = client.invoke_agent(agent_id="steady", inputs=[f"card {self.calls}"])
                    self.answers.append(answer.predictions[0].invocation_id)
                    assert client.get_agent("steady").active_version_id
                    self.calls += 2
            except BaseException as error:  # every failure the client did not retry away
                self.failures.append(error)

    def join(self) -> None:
        self._thread.join(600)


def test_a_rolling_restart_under_load_fails_no_call_and_loses_nothing_acknowledged(
    tmp_path: Path, postgres_url: str
) -> None:
    ports = [free_port() for _ in range(3)]
    settings = {"shutdown_grace_seconds": 3, "shutdown_checkpoint_seconds": 10}

    def start(index: int) -> ServerProcess:
        name = "abc"[index]
        address = f"127.0.0.1:{ports[index]}"
        return start_replica(tmp_path, name, postgres_url, address=address, **settings)

    replicas = [start(index) for index in range(3)]
    target = ",".join(f"127.0.0.1:{port}" for port in ports)
    try:
        with AgentTrainingClient(target, timeout=60) as client:
            client.create_agent(agent_id="steady")
            list(
                client.train_agent(
                    agent_id="steady",
                    training_data=banking_examples(INTENTS[:3], per_intent=10),
                    config=training_pb2.TrainingConfig(epochs=2),
                    timeout=120,
                )
            )
            for number in range(TRAINERS):
                client.create_agent(agent_id=f"trained-{number}")
        stop = threading.Event()
        clients = [LoadClient(target, number, stop) for number in range(CLIENTS)]
        time.sleep(3)
        for index in range(3):  # one after another, as a deployment does
            assert replicas[index].terminate() == 0
            replicas[index] = start(index)
            time.sleep(2)
        stop.set()
        for load in clients:
            load.join()
        failures = [error for load in clients for error in load.failures]
        assert failures == [], failures[:3]
        assert sum(load.calls for load in clients) > CLIENTS
        for load in clients[:TRAINERS]:
            assert load.training[-1].finished.status == SUCCEEDED
        answers = {answer for load in clients for answer in load.answers}
        calls = sum(load.calls for load in clients) + TRAINERS
        jobs = {load.training[0].training_id for load in clients[:TRAINERS]}
    finally:
        for replica in replicas:
            replica.terminate()
    # Counted against the database: every acknowledged answer and job is stored.
    with psycopg.connect(postgres_url) as connection:
        stored = {
            row[0]
            for row in connection.execute(
                "SELECT invocation_id FROM invocations WHERE agent_id = 'steady'"
            )
        }
        ended = dict(
            connection.execute(
                "SELECT training_id, status FROM jobs WHERE training_id = ANY(%s)", (list(jobs),)
            ).fetchall()
        )
    assert answers <= stored, len(answers - stored)
    assert ended == dict.fromkeys(jobs, "SUCCEEDED")
    print(
        f"\nrolling restart: {calls} calls by {CLIENTS} clients, none failed;"
        f" {len(answers)} answers acknowledged, all {len(answers)} stored;"
        f" {len(jobs)} training jobs, all SUCCEEDED"
    )


def test_a_replica_whose_job_was_taken_lets_it_go_and_its_watchers_follow_the_job(
    tmp_path: Path, postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    def config(name: str):
        return make_config(
            tmp_path / name,
            database_url=postgres_url,
            artifact_dir=str(tmp_path / "artifacts"),
            replica_lease_seconds=LEASE_SECONDS,
            checkpoint_every_steps=60,
            torch_threads=1,
        )

    first, second = ServerThread(config("a")), ServerThread(config("b"))
    examples = banking_examples(INTENTS, per_intent=40)
    try:
        with (
            AgentTrainingClient(first.address, timeout=60) as on_first,
            AgentTrainingClient(second.address, timeout=60) as on_second,
        ):
            on_first.create_agent(agent_id="taken")
            stream = on_first.train_agent(
                agent_id="taken", training_data=examples, config=KILL_JOB, timeout=300
            )
            seen = until_progress_in_epoch(stream, 2)
            training_id = seen[0].training_id
            watcher = Watcher(on_first, training_id)
            # As if the first replica had been taken for dead and its job claimed by a replica
            # that then dies too: the first lets the job go at its next event, and once the
            # taker's lease runs out a live replica resumes the job from its checkpoint.
            store = PostgresStore(postgres_url)
            try:
                now = time.time()
                store.register_replica("replica_taker", "", now, now + 1.5, sole=False)
            finally:
                store.close()
            with psycopg.connect(postgres_url, autocommit=True) as database:
                database.execute(
                    "UPDATE jobs SET owner = 'replica_taker' WHERE training_id = %s", (training_id,)
                )
            watched = watcher.result()
            rest = list(stream)
            assert [event.sequence for event in watched] == list(range(1, len(watched) + 1))
            assert [e.SerializeToString() for e in seen + rest] == [
                e.SerializeToString() for e in watched
            ]
            finished = watched[-1].finished
            assert finished.status == SUCCEEDED
            assert f"job {training_id}: another replica took it over" in caplog.text
            reasons = [t.reason for t in on_second.get_training_job(training_id).timeline]
            assert "replica lost" in reasons, reasons
            reference = uninterrupted_metrics(on_second, examples)
        assert comparable(finished.metrics) == reference
    finally:
        first.stop()
        second.stop()


def test_analyses_are_watched_on_any_replica_and_a_dead_replicas_are_failed_retryably(
    two_replicas: tuple[ServerThread, ServerThread], postgres_url: str
) -> None:
    first, second = two_replicas
    with (
        AgentTrainingClient(first.address, timeout=120) as on_first,
        AgentTrainingClient(second.address, timeout=120) as on_second,
    ):
        trained(on_first, "analysed")
        stream = on_first.analyze_and_optimize_stream(
            agent_id="analysed",
            optimization_goals=[analysis_pb2.OPTIMIZATION_GOAL_MAXIMIZE_ACCURACY],
        )
        analysis_id = next(stream).accepted.analysis_id  # retrains: runs for seconds
        watched = list(on_second.watch_analysis_job(analysis_id, timeout=300))
        assert watched[-1].WhichOneof("kind") == "result"
        assert list(stream)[-1].result == watched[-1].result

        # An analysis whose replica is gone is failed by a live replica's heartbeat.
        store = PostgresStore(postgres_url)
        try:
            orphan = AnalysisJob(analysis_id="analysis_00000000000000ab", agent_id="analysed")
            store.create_analysis(orphan, owner="replica_gone")
        finally:
            store.close()
        error = expect_error(lambda: list(on_second.watch_analysis_job(orphan.analysis_id)))
        assert_status(error, grpc.StatusCode.UNAVAILABLE)
        assert error.code == "ANALYSIS_INTERRUPTED" and error.retryable
        job = on_first.get_analysis_job(orphan.analysis_id)
        assert job.status == service_pb2.ANALYSIS_STATUS_FAILED
        assert job.error.code == "ANALYSIS_INTERRUPTED" and job.error.retryable
