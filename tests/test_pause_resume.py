"""PauseTrainingJob and ResumeTrainingJob over a real channel, on Banking77 (50 per intent).

A paused job checkpoints where it is and frees its worker; resumed, it continues from that
checkpoint and ends with the metrics of an uninterrupted run with the same seed, with the pause
and the resumption in its one event log, also across a restart of the server while paused.
"""

from __future__ import annotations

import collections
import csv
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import BANKING77, ServerThread, assert_status, expect_error, make_config

TIMING = ("duration_seconds", "examples_per_second")
PAUSED = training_pb2.TRAINING_STATUS_PAUSED
QUEUED = training_pb2.TRAINING_STATUS_QUEUED
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
CONFIG = training_pb2.TrainingConfig(
    epochs=6, seed=3, early_stopping=training_pb2.EarlyStopping(patience=0)
)


PER_INTENT = 50
"""Banking77's first 50 training examples of each of its 77 intents (3,850): a job of seconds."""


def banking77_train() -> list[training_pb2.TrainingExample]:
    counts: collections.Counter[str] = collections.Counter()
    examples = []
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            counts[row["category"]] += 1
            if counts[row["category"]] <= PER_INTENT:
                examples.append(
                    training_pb2.TrainingExample(input=row["text"], expected_output=row["category"])
                )
    return examples


def comparable(metrics: training_pb2.TrainingMetrics) -> dict[str, float]:
    return {f.name: value for f, value in metrics.ListFields() if f.name not in TIMING}


def status_of(event: training_pb2.TrainingEvent) -> int:
    return getattr(event, event.WhichOneof("kind")).status


@pytest.fixture(scope="module")
def examples() -> list[training_pb2.TrainingExample]:
    return banking77_train()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("pause"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=60) as made:
        yield made


@pytest.fixture(scope="module")
def unbroken(client: AgentTrainingClient, examples) -> dict[str, float]:
    """The metrics of the job run without a pause."""
    client.create_agent(agent_id="unbroken")
    events = list(client.train_agent(agent_id="unbroken", training_data=examples, config=CONFIG))
    assert events[-1].finished.status == SUCCEEDED
    return comparable(events[-1].finished.metrics)


def start_and_pause_in_epoch_two(
    client: AgentTrainingClient, agent_id: str, examples
) -> tuple[Iterator[training_pb2.TrainingEvent], list[training_pb2.TrainingEvent]]:
    """Start a job and pause it once its second epoch is under way; (its stream, seen events)."""
    client.create_agent(agent_id=agent_id)
    stream = client.train_agent(agent_id=agent_id, training_data=examples, config=CONFIG)
    seen = []
    for event in stream:
        seen.append(event)
        if event.HasField("progress") and event.progress.epoch >= 2:
            break
    paused = client.pause_training_job(seen[0].training_id)
    assert paused.status == PAUSED, paused
    return stream, seen


def test_a_paused_and_resumed_job_ends_with_the_metrics_of_an_unbroken_one(
    client: AgentTrainingClient, server: ServerThread, examples, unbroken
) -> None:
    stream, seen = start_and_pause_in_epoch_two(client, "paused", examples)
    training_id = seen[0].training_id
    job = client.get_training_job(training_id)
    assert job.status == PAUSED
    assert job.timeline[-1].reason == "paused by request"
    # Its checkpoint is kept while it is paused: it holds no worker, its folder stays.
    folder = server.config.artifact_root / "jobs" / training_id / "checkpoints"
    assert (folder / "checkpoint.safetensors").is_file()

    resumed = client.resume_training_job(training_id)
    assert resumed.status == QUEUED
    assert resumed.timeline[-1].reason == "resumed by request"
    rest = list(stream)
    events = seen + rest
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))
    statuses = [status_of(e) for e in events]
    paused_at = statuses.index(PAUSED)
    assert statuses[paused_at + 1] == QUEUED  # the resumption, in the same log
    assert events[-1].finished.status == SUCCEEDED
    assert comparable(events[-1].finished.metrics) == unbroken
    # A watcher from the start sees the same log.
    watched = list(client.watch_training_job(training_id))
    assert [e.SerializeToString() for e in watched] == [e.SerializeToString() for e in events]


def test_a_restart_while_paused_keeps_the_job_paused_and_it_resumes_like_an_unbroken_run(
    tmp_path: Path, examples, unbroken
) -> None:
    config = make_config(tmp_path, workers=1)
    first = ServerThread(config)
    try:
        with AgentTrainingClient(first.address, timeout=60) as client:
            _stream, seen = start_and_pause_in_epoch_two(client, "restarted", examples)
    finally:
        first.stop()
    training_id = seen[0].training_id
    second = ServerThread(config)
    try:
        with AgentTrainingClient(second.address, timeout=60) as client:
            job = client.get_training_job(training_id)
            assert job.status == PAUSED  # a restart resumes unfinished jobs, not paused ones
            client.resume_training_job(training_id)
            events = list(client.watch_training_job(training_id))
    finally:
        second.stop()
    assert events[-1].finished.status == SUCCEEDED
    assert comparable(events[-1].finished.metrics) == unbroken
    assert [e.sequence for e in events] == list(range(1, len(events) + 1))


def test_a_queued_job_pauses_at_once_resumes_once_and_a_paused_job_can_be_cancelled(
    client: AgentTrainingClient, examples
) -> None:
    client.create_agent(agent_id="queue")
    small = examples[:400]
    running = next(client.train_agent(agent_id="queue", training_data=small, config=CONFIG))
    queued = next(client.train_agent(agent_id="queue", training_data=small, config=CONFIG))
    paused = client.pause_training_job(queued.training_id)
    assert paused.status == PAUSED
    assert client.pause_training_job(queued.training_id).status == PAUSED  # changes nothing

    assert client.resume_training_job(queued.training_id).status == QUEUED
    error = expect_error(client.resume_training_job, queued.training_id)
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "JOB_NOT_PAUSED"

    assert client.pause_training_job(queued.training_id).status in (PAUSED, SUCCEEDED)
    cancelled = client.cancel_training_job(queued.training_id)
    if cancelled.status != SUCCEEDED:  # it may have run and ended before the pause
        assert cancelled.status == training_pb2.TRAINING_STATUS_CANCELLED
        assert cancelled.timeline[-1].reason == "cancelled by request"
    list(client.watch_training_job(running.training_id))


def test_pausing_or_resuming_an_ended_job_and_bad_ids_are_refused(
    client: AgentTrainingClient, examples
) -> None:
    client.create_agent(agent_id="ended")
    events = list(client.train_agent(agent_id="ended", training_data=examples[:300]))
    training_id = events[0].training_id
    error = expect_error(client.pause_training_job, training_id)
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "JOB_ALREADY_ENDED"
    error = expect_error(client.resume_training_job, training_id)
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "JOB_NOT_PAUSED"
    for call in (client.pause_training_job, client.resume_training_job):
        error = expect_error(call, "train_00000000deadbeef")
        assert_status(error, grpc.StatusCode.NOT_FOUND)
        error = expect_error(call, "no spaces allowed")
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
        assert error.field_violations[0].field == "training_id", error.to_dict()
