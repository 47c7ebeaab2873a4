"""ListTrainingCheckpoints and CreateVersionFromCheckpoint over a real channel.

A job keeps its best epoch's weights and its last ``keep_checkpoints`` epochs'; a version made from
the best one is the job's own version again, and one from another epoch has that epoch's figures.
"""

from __future__ import annotations

import collections
import csv
import json
from collections.abc import Iterator

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import BANKING77, ServerThread, assert_status, expect_error, make_config
from tests.test_cli_user_errors import error_object, run

TIMING = ("duration_seconds", "examples_per_second")
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED


def banking77(per_intent: int, intents: int = 77) -> list[training_pb2.TrainingExample]:
    counts: collections.Counter[str] = collections.Counter()
    examples = []
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if counts[label] < per_intent and (label in counts or len(counts) < intents):
                counts[label] += 1
                examples.append(
                    training_pb2.TrainingExample(input=row["text"], expected_output=label)
                )
    return examples


def comparable(metrics: training_pb2.TrainingMetrics) -> dict[str, float]:
    return {f.name: value for f, value in metrics.ListFields() if f.name not in TIMING}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("checkpoints"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


@pytest.fixture(scope="module")
def finished(client: AgentTrainingClient) -> training_pb2.TrainingJob:
    """A supervised job of 6 epochs keeping the best and the last 2."""
    client.create_agent(agent_id="kept")
    config = training_pb2.TrainingConfig(
        epochs=6,
        seed=5,
        learning_rate=0.05,
        keep_checkpoints=2,
        early_stopping=training_pb2.EarlyStopping(patience=0),
    )
    events = list(client.train_agent(agent_id="kept", training_data=banking77(20), config=config))
    assert events[-1].finished.status == SUCCEEDED
    return client.get_training_job(events[0].training_id)


def all_checkpoints(client: AgentTrainingClient, training_id: str, page_size: int = 0) -> list:
    checkpoints, token = [], ""
    while True:
        page = client.list_training_checkpoints(training_id, page_size=page_size, page_token=token)
        checkpoints.extend(page.checkpoints)
        token = page.next_page_token
        if not token:
            return checkpoints


def test_a_job_keeps_its_best_and_last_epochs_with_their_figures(
    client: AgentTrainingClient, server: ServerThread, finished
) -> None:
    checkpoints = all_checkpoints(client, finished.training_id)
    epochs = [c.epoch for c in checkpoints]
    best = [c for c in checkpoints if c.best]
    assert len(best) == 1
    assert epochs == sorted({best[0].epoch, 5, 6}), epochs
    assert epochs[-1] == finished.metrics.epochs_run
    steps_per_epoch = checkpoints[-1].step // checkpoints[-1].epoch
    for checkpoint in checkpoints:
        assert checkpoint.checkpoint_id == f"epoch-{checkpoint.epoch}"
        assert checkpoint.training_id == finished.training_id
        assert checkpoint.step == checkpoint.epoch * steps_per_epoch > 0
        assert checkpoint.size_bytes > 0 and checkpoint.create_time.seconds > 0
        for figure in ("loss", "train_accuracy", "validation_loss", "validation_accuracy"):
            assert checkpoint.HasField(figure), (checkpoint, figure)
    assert best[0].validation_loss == min(c.validation_loss for c in checkpoints)
    # One at a time, the same list.
    assert all_checkpoints(client, finished.training_id, page_size=1) == checkpoints
    # The job has ended: its folder holds only what it kept.
    folder = server.config.artifact_root / "jobs" / finished.training_id
    left = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())
    assert left == [f"checkpoints/kept/epoch-{e:04d}.safetensors" for e in epochs], left


def test_a_version_from_the_best_checkpoint_is_the_jobs_version_again(
    client: AgentTrainingClient, finished
) -> None:
    best = next(c for c in all_checkpoints(client, finished.training_id) if c.best)
    version = client.create_version_from_checkpoint(finished.training_id, best.checkpoint_id)
    assert version.source == "checkpoint"
    assert version.training_id == finished.training_id
    assert version.checkpoint_id == best.checkpoint_id
    assert not version.active  # kept for ActivateAgentVersion or a rollout
    # The same weights, measured the same way; trained for the epochs up to the best.
    assert version.metrics.epochs_run == best.epoch
    same = {**comparable(version.metrics), "epochs_run": finished.metrics.epochs_run}
    assert same == comparable(finished.metrics)
    assert client.get_agent("kept").active_version_id == finished.version_id


def test_a_version_from_another_epoch_has_that_epochs_figures_and_answers(
    client: AgentTrainingClient, finished
) -> None:
    checkpoints = all_checkpoints(client, finished.training_id)
    other = next(c for c in checkpoints if not c.best)
    version = client.create_version_from_checkpoint(
        finished.training_id, other.checkpoint_id, activate=True, request_id="from-other"
    )
    assert version.active and version.metrics.epochs_run == other.epoch
    assert version.metrics.validation_accuracy == other.validation_accuracy
    assert client.get_agent("kept").active_version_id == version.version_id
    answer = client.invoke_agent(agent_id="kept", input="my card has not arrived yet")
    assert answer.version_id == version.version_id
    again = client.create_version_from_checkpoint(
        finished.training_id, other.checkpoint_id, activate=True, request_id="from-other"
    )
    assert again.version_id == version.version_id  # a retry makes nothing new


def test_keep_checkpoints_0_keeps_the_best_only(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="best-only")
    config = training_pb2.TrainingConfig(epochs=3, keep_checkpoints=0)
    events = list(
        client.train_agent(agent_id="best-only", training_data=banking77(10), config=config)
    )
    checkpoints = all_checkpoints(client, events[0].training_id)
    assert [c.best for c in checkpoints] == [True]


def test_bad_and_unknown_checkpoints_and_running_jobs_are_refused(
    client: AgentTrainingClient, server: ServerThread, finished
) -> None:
    training_id = finished.training_id
    error = expect_error(client.create_version_from_checkpoint, training_id, "the-best")
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert error.field_violations[0].field == "checkpoint_id"
    error = expect_error(client.create_version_from_checkpoint, training_id, "epoch-1")
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert error.code == "CHECKPOINT_NOT_FOUND"
    for call in (client.list_training_checkpoints, client.create_version_from_checkpoint):
        arguments = ("epoch-1",) if call == client.create_version_from_checkpoint else ()
        error = expect_error(call, "train_00000000deadbeef", *arguments)
        assert_status(error, grpc.StatusCode.NOT_FOUND)
        assert error.code == "TRAINING_JOB_NOT_FOUND"
    # A job still running: its checkpoints are changing.
    client.create_agent(agent_id="busy")
    config = training_pb2.TrainingConfig(epochs=30, early_stopping={"patience": 0})
    started = next(client.train_agent(agent_id="busy", training_data=banking77(30), config=config))
    error = expect_error(client.create_version_from_checkpoint, started.training_id, "epoch-1")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "JOB_NOT_STOPPED"
    client.cancel_training_job(started.training_id)
    # A damaged kept file is refused, and nothing is made of it.
    checkpoints = all_checkpoints(client, training_id)
    last = checkpoints[-1]
    path = (
        server.config.artifact_root
        / "jobs"
        / training_id
        / "checkpoints"
        / "kept"
        / f"epoch-{last.epoch:04d}.safetensors"
    )
    data = bytearray(path.read_bytes())
    data[-10:] = bytes(10)
    path.write_bytes(bytes(data))
    versions_before = len(client.list_agent_versions("kept").versions)
    error = expect_error(client.create_version_from_checkpoint, training_id, last.checkpoint_id)
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "CHECKPOINT_DAMAGED"
    assert len(client.list_agent_versions("kept").versions) == versions_before


def test_a_transfer_version_from_its_first_epoch(client: AgentTrainingClient) -> None:
    """The encoder's kept epoch, with the n-gram companion's best: both loops finish."""
    client.create_agent(agent_id="transferred")
    config = training_pb2.TrainingConfig(
        epochs=2, keep_checkpoints=2, early_stopping={"patience": 0}
    )
    events = list(
        client.train_agent(
            agent_id="transferred",
            training_type=training_pb2.TRAINING_TYPE_TRANSFER,
            training_data=banking77(8, intents=6),
            config=config,
        )
    )
    assert events[-1].finished.status == SUCCEEDED, events[-1]
    training_id = events[0].training_id
    assert [c.epoch for c in all_checkpoints(client, training_id)] == [1, 2]
    version = client.create_version_from_checkpoint(training_id, "epoch-1")
    assert version.metrics.epochs_run == 1
    assert list(version.outputs) == list(
        client.list_agent_versions("transferred").versions[0].outputs
    )
    answer = client.invoke_agent(
        agent_id="transferred", input="my card has not arrived", version_id=version.version_id
    )
    assert answer.version_id == version.version_id
    assert answer.predictions[0].output in version.outputs


def test_the_cli_lists_checkpoints_and_makes_a_version_from_one(
    client: AgentTrainingClient, server: ServerThread, finished
) -> None:
    table = run("jobs", "checkpoints", finished.training_id, target=server.address)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["CHECKPOINT", "EPOCH", "STEP"]
    listed = [line.split()[0] for line in lines[1:]]
    assert listed == [c.checkpoint_id for c in all_checkpoints(client, finished.training_id)]
    # The first: the refusals' test damages the last one.
    made = run("jobs", "version-from", finished.training_id, listed[0], target=server.address)
    assert made.returncode == 0, made.stderr
    version = json.loads(made.stdout)
    assert version["checkpoint_id"] == listed[0] and version["source"] == "checkpoint"
    missing = run("jobs", "version-from", finished.training_id, "epoch-99", target=server.address)
    assert missing.returncode != 0
    assert error_object(missing.stderr)["code"] == "CHECKPOINT_NOT_FOUND"
