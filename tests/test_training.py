"""Training jobs over a real channel: streaming, watching, cancelling, invoking, limits."""

from __future__ import annotations

import csv
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from tests.conftest import BANKING77, ServerThread, assert_status, expect_error, make_config

INTENTS = (
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "cash_withdrawal_charge",
    "top_up_failed",
)
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
CANCELLED = training_pb2.TRAINING_STATUS_CANCELLED


def banking_examples(intents=INTENTS, per_intent: int = 30) -> list[training_pb2.TrainingExample]:
    counts: dict[str, int] = {}
    examples = []
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = row["category"]
            if label in intents and counts.get(label, 0) < per_intent:
                counts[label] = counts.get(label, 0) + 1
                examples.append(
                    training_pb2.TrainingExample(input=row["text"], expected_output=label)
                )
    return examples


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("training"), workers=1))
    yield running
    running.stop()


@pytest.fixture
def trainer(shared_server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(shared_server.address, timeout=60) as made:
        yield made


def kinds(events) -> list[str]:
    return [event.WhichOneof("kind") for event in events]


def train(client, agent_id: str, examples=None, **config) -> list[training_pb2.TrainingEvent]:
    return list(
        client.train_agent(
            agent_id=agent_id,
            training_data=examples or banking_examples(),
            config=training_pb2.TrainingConfig(**config),
            timeout=300,
        )
    )


def test_train_streams_accepted_progress_finished_in_order(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="streamer")
    events = train(trainer, "streamer", epochs=20, seed=1)

    assert kinds(events)[0] == "accepted" and kinds(events)[-1] == "finished"
    assert set(kinds(events)[1:-1]) == {"progress"}
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert len({event.training_id for event in events}) == 1
    phases = {event.progress.phase for event in events if event.HasField("progress")}
    assert training_pb2.TRAINING_PHASE_TRAINING in phases
    percents = [e.progress.percent_complete for e in events if e.HasField("progress")]
    assert percents == sorted(percents) and percents[0] >= 0 and percents[-1] <= 100

    finished = events[-1].finished
    assert finished.status == SUCCEEDED
    metrics = finished.metrics
    assert 0.9 <= metrics.accuracy <= 1.0 and metrics.loss >= 0
    assert 0.0 <= metrics.validation_accuracy <= 1.0 and 0.0 <= metrics.macro_f1 <= 1.0
    assert 1 <= metrics.epochs_run <= 20 and metrics.examples_per_second > 0
    assert metrics.train_examples + metrics.validation_examples == 150

    agent = trainer.get_agent("streamer")
    assert agent.active_version_id == finished.version_id
    version = trainer.list_agent_versions("streamer").versions[0]
    assert version.active and sorted(version.outputs) == sorted(INTENTS)
    assert version.manifest.seed == 1 and len(version.manifest.data_sha256) == 64
    assert version.training_id == events[0].training_id and version.size_bytes > 0

    job = trainer.get_training_job(events[0].training_id)
    assert job.status == SUCCEEDED and job.version_id == finished.version_id
    assert [t.status for t in job.timeline] == [
        training_pb2.TRAINING_STATUS_QUEUED,
        training_pb2.TRAINING_STATUS_RUNNING,
        SUCCEEDED,
    ]
    assert job.last_sequence == events[-1].sequence and job.config.epochs == 20


def test_invoke_answers_training_examples(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="answerer")
    examples = banking_examples()
    assert train(trainer, "answerer", epochs=30)[-1].finished.status == SUCCEEDED

    response = trainer.invoke_agent(agent_id="answerer", inputs=[e.input for e in examples])
    right = sum(
        p.output == e.expected_output for p, e in zip(response.predictions, examples, strict=True)
    )
    assert right / len(examples) >= 0.95
    single = trainer.invoke_agent(agent_id="answerer", input=examples[0].input).predictions[0]
    assert single.output == examples[0].expected_output
    assert 0 < single.confidence <= 1 and len(single.alternatives) == 3
    assert single.invocation_id and not single.is_fallback
    assert response.version_id == trainer.get_agent("answerer").active_version_id


def test_same_seed_gives_same_metrics(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="repeat")
    first = train(trainer, "repeat", epochs=10, seed=7)[-1].finished.metrics
    second = train(trainer, "repeat", epochs=10, seed=7)[-1].finished.metrics
    for name in ("accuracy", "loss", "validation_accuracy", "validation_loss", "epochs_run"):
        assert getattr(first, name) == getattr(second, name), name


def test_subscribers_and_late_watchers_see_the_same_events(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="watched")
    stream = trainer.train_agent(
        agent_id="watched",
        training_data=banking_examples(),
        config=training_pb2.TrainingConfig(epochs=25),
        timeout=300,
    )
    accepted = next(stream)
    live_watch: list = []
    watcher = threading.Thread(
        target=lambda: live_watch.extend(trainer.watch_training_job(accepted.training_id, 0))
    )
    watcher.start()
    from_stream = [accepted, *stream]
    watcher.join(120)

    late = list(trainer.watch_training_job(accepted.training_id, 0))
    middle = len(from_stream) // 2
    from_middle = list(trainer.watch_training_job(accepted.training_id, middle))

    def raw(events):
        return [event.SerializeToString(deterministic=True) for event in events]

    assert raw(live_watch) == raw(from_stream) == raw(late)
    assert raw(from_middle) == raw(from_stream[middle - 1 :])


def test_closing_the_stream_does_not_cancel_the_job(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="detached")
    stream = trainer.train_agent(
        agent_id="detached",
        training_data=banking_examples(),
        config=training_pb2.TrainingConfig(epochs=10),
    )
    training_id = next(stream).training_id
    stream.close()
    final = list(trainer.watch_training_job(training_id))[-1]
    assert final.finished.status == SUCCEEDED


def _long_job(client, agent_id: str) -> Iterator[training_pb2.TrainingEvent]:
    config = training_pb2.TrainingConfig(
        epochs=1000, batch_size=1, early_stopping=training_pb2.EarlyStopping(patience=0)
    )
    return client.train_agent(
        agent_id=agent_id, training_data=banking_examples(per_intent=60), config=config, timeout=300
    )


def test_cancel_mid_run_keeps_previous_version(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="cancelled")
    previous = train(trainer, "cancelled", epochs=5)[-1].finished.version_id

    stream = _long_job(trainer, "cancelled")
    training_id = next(stream).training_id
    for event in stream:
        if event.HasField("progress") and event.progress.epoch >= 1:
            break
    job = trainer.cancel_training_job(training_id)
    assert job.status == CANCELLED
    rest = list(stream)
    assert rest[-1].finished.status == CANCELLED
    assert rest[-1].finished.error.code == "TRAINING_CANCELLED"
    assert trainer.get_agent("cancelled").active_version_id == previous
    assert len(trainer.list_agent_versions("cancelled").versions) == 1
    error = expect_error(trainer.cancel_training_job, training_id)
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)


def test_health_and_get_agent_answer_while_training(
    shared_server: ServerThread, trainer: AgentTrainingClient
) -> None:
    trainer.create_agent(agent_id="busy")
    stream = _long_job(trainer, "busy")
    training_id = next(stream).training_id
    for event in stream:
        training = training_pb2.TRAINING_PHASE_TRAINING
        if event.HasField("progress") and event.progress.phase == training:
            break
    assert trainer.get_training_job(training_id).status == training_pb2.TRAINING_STATUS_RUNNING
    for _ in range(5):
        assert trainer.health() == "SERVING"
        assert trainer.get_agent("busy").agent_id == "busy"
    assert trainer.cancel_training_job(training_id).status == CANCELLED


def test_list_jobs_filters_by_agent_and_status(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="listed")
    train(trainer, "listed", epochs=3)
    train(trainer, "listed", epochs=3)
    jobs = trainer.list_training_jobs(agent_id="listed").jobs
    assert len(jobs) == 2 and all(job.agent_id == "listed" for job in jobs)
    assert jobs[0].create_time.ToNanoseconds() >= jobs[1].create_time.ToNanoseconds()
    page = trainer.list_training_jobs(agent_id="listed", page_size=1)
    assert len(page.jobs) == 1 and page.next_page_token
    second = trainer.list_training_jobs(
        agent_id="listed", page_size=1, page_token=page.next_page_token
    )
    assert second.jobs[0].training_id == jobs[1].training_id
    assert trainer.list_training_jobs(agent_id="listed", status=CANCELLED).jobs == []


def test_invalid_training_data_is_refused_with_a_hint(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="picky")
    nothing_taught = [
        training_pb2.TrainingExample(
            input=f"hello {i}", expected_output="greet", feedback="incorrect"
        )
        for i in range(5)
    ]
    error = expect_error(trainer.train_agent, agent_id="picky", training_data=nothing_taught)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    assert "teaches no output" in error.field_violations[0].description
    error = expect_error(trainer.train_agent, agent_id="nobody", training_data=banking_examples())
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert trainer.list_training_jobs(agent_id="picky").jobs == []


def test_too_many_examples_and_full_queue(tmp_path: Path) -> None:
    server = ServerThread(
        make_config(tmp_path, workers=1, max_queued_jobs=1, max_examples_per_request=100)
    )
    try:
        with AgentTrainingClient(server.address) as client:
            client.create_agent(agent_id="limited")
            error = expect_error(
                client.train_agent,
                agent_id="limited",
                training_data=banking_examples(per_intent=30),
            )
            assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
            assert "at most 100" in error.field_violations[0].description

            small = banking_examples(per_intent=15)
            config = training_pb2.TrainingConfig(
                epochs=1000, batch_size=1, early_stopping=training_pb2.EarlyStopping(patience=0)
            )
            running = client.train_agent(agent_id="limited", training_data=small, config=config)
            running_id = next(running).training_id
            next(running)  # RUNNING: the worker took it, so the queue is empty again
            queued = client.train_agent(agent_id="limited", training_data=small, config=config)
            queued_id = next(queued).training_id
            error = expect_error(client.train_agent, agent_id="limited", training_data=small)
            assert_status(error, grpc.StatusCode.RESOURCE_EXHAUSTED)
            assert error.code == "QUEUE_FULL" and error.retryable
            assert error.retry_delay_seconds and error.retry_delay_seconds > 0
            assert client.cancel_training_job(queued_id).status == CANCELLED
            assert client.cancel_training_job(running_id).status == CANCELLED
    finally:
        server.stop()


def test_invoke_without_a_version_is_failed_precondition(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="untrained")
    error = expect_error(trainer.invoke_agent, agent_id="untrained", input="hello")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "NO_ACTIVE_VERSION"
    error = expect_error(trainer.invoke_agent, agent_id="untrained", input="a", inputs=["b"])
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)


def test_cli_trains_with_progress_watches_and_invokes(
    shared_server: ServerThread, tmp_path
) -> None:
    import subprocess
    import sys

    data = tmp_path / "train.csv"
    with data.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "category"])
        for example in banking_examples():
            writer.writerow([example.input, example.expected_output])

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "agent_training_client",
                "--target",
                shared_server.address,
                *args,
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )

    assert cli("agents", "create", "cli-trained").returncode == 0
    trained = cli("train", str(data), "--agent", "cli-trained", "--epochs", "15", "--follow")
    assert trained.returncode == 0, trained.stderr
    assert "accepted: 150 examples, 5 outputs" in trained.stderr
    assert "epoch" in trained.stderr and "loss" in trained.stderr and "ETA" in trained.stderr
    assert '"status": "TRAINING_STATUS_SUCCEEDED"' in trained.stdout

    listed = cli("jobs", "list", "--agent", "cli-trained").stdout.splitlines()
    assert listed[0].split()[0] == "TRAINING_ID"  # a header row, then the jobs
    job_id = listed[1].split()[0]
    watched = cli("jobs", "watch", job_id)
    assert watched.returncode == 0 and "TRAINING_STATUS_SUCCEEDED" in watched.stdout

    answer = cli("invoke", "--agent", "cli-trained", "I still have not received my new card")
    assert answer.returncode == 0, answer.stderr
    assert '"output": "card_arrival"' in answer.stdout


def test_job_past_its_time_limit_fails_clearly(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="slow")
    config = training_pb2.TrainingConfig(
        epochs=1000,
        batch_size=1,
        max_duration_seconds=1,
        early_stopping=training_pb2.EarlyStopping(patience=0),
    )
    events = list(
        trainer.train_agent(
            agent_id="slow", training_data=banking_examples(), config=config, timeout=120
        )
    )
    finished = events[-1].finished
    assert finished.status == training_pb2.TRAINING_STATUS_FAILED
    assert finished.error.code == "TRAINING_TIMEOUT"
    assert "max_duration_seconds" in finished.error.hint
    assert trainer.get_agent("slow").active_version_id == ""


def test_delete_agent_with_running_job_needs_force(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="doomed")
    stream = _long_job(trainer, "doomed")
    training_id = next(stream).training_id
    error = expect_error(trainer.delete_agent, "doomed")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "AGENT_HAS_RUNNING_JOBS"
    trainer.delete_agent("doomed", force=True)
    assert_status(expect_error(trainer.get_agent, "doomed"), grpc.StatusCode.NOT_FOUND)
    assert_status(expect_error(trainer.get_training_job, training_id), grpc.StatusCode.NOT_FOUND)


def test_interrupted_job_resumes_after_restart(tmp_path: Path) -> None:
    server = ServerThread(make_config(tmp_path, workers=1))
    with AgentTrainingClient(server.address) as client:
        client.create_agent(agent_id="survivor")
        stream = client.train_agent(
            agent_id="survivor",
            training_data=banking_examples(per_intent=60),
            config=training_pb2.TrainingConfig(
                epochs=40, batch_size=4, early_stopping=training_pb2.EarlyStopping(patience=0)
            ),
        )
        before = [next(stream)]
        for event in stream:
            before.append(event)
            if event.HasField("progress") and event.progress.epoch >= 2:
                break
    server.stop()

    restarted = ServerThread(make_config(tmp_path, workers=1))
    try:
        with AgentTrainingClient(restarted.address) as client:
            training_id = before[0].training_id
            events = list(client.watch_training_job(training_id, 0, timeout=300))
            sequences = [event.sequence for event in events]
            assert sequences == list(range(1, len(events) + 1))
            assert [e.SerializeToString() for e in events[: len(before)]] == [
                e.SerializeToString() for e in before
            ]
            assert events[-1].finished.status == SUCCEEDED
            job = client.get_training_job(training_id)
            reasons = [transition.reason for transition in job.timeline]
            assert "server shutting down" in reasons  # checkpointed on stop, then resumed
            assert client.get_agent("survivor").active_version_id == job.version_id
    finally:
        restarted.stop()


def test_finished_jobs_leave_only_their_kept_checkpoints_and_deleted_agents_no_files(
    shared_server: ServerThread, trainer: AgentTrainingClient
) -> None:
    trainer.create_agent(agent_id="tidy")
    events = train(trainer, "tidy", epochs=3)
    data_dir = shared_server.config.data_dir
    job_folder = data_dir / "jobs" / events[0].training_id
    left = {p.relative_to(job_folder).parent.as_posix() for p in job_folder.rglob("*.*")}
    assert left == {"checkpoints/kept"}, left  # the resumable checkpoints are gone
    version = trainer.get_agent("tidy").active_version_id
    assert (data_dir / "artifacts" / "tidy" / version / "model.safetensors").exists()
    trainer.delete_agent("tidy")
    assert not (data_dir / "artifacts" / "tidy").exists()
    assert not job_folder.exists()


def test_train_retry_with_same_request_id_reattaches_to_the_same_job(
    trainer: AgentTrainingClient,
) -> None:
    trainer.create_agent(agent_id="retried")
    examples = banking_examples()
    first = list(
        trainer.train_agent(
            agent_id="retried",
            training_data=examples,
            config=training_pb2.TrainingConfig(epochs=3),
            request_id="train-once",
        )
    )
    again = list(
        trainer.train_agent(
            agent_id="retried",
            training_data=examples,
            config=training_pb2.TrainingConfig(epochs=3),
            request_id="train-once",
        )
    )
    assert [e.SerializeToString() for e in again] == [e.SerializeToString() for e in first]
    assert len(trainer.list_training_jobs(agent_id="retried").jobs) == 1
    error = expect_error(
        trainer.train_agent, agent_id="retried", training_data=examples, request_id="train-once"
    )
    assert error.code == "REQUEST_ID_REUSED"


def test_num_workers_above_one_needs_the_ray_executor(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="wants-workers")
    error = expect_error(train, trainer, "wants-workers", epochs=1, num_workers=2)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    (violation,) = error.field_violations  # the message summarises; the violation says it all
    assert violation.field == "config.num_workers" and "--executor ray" in violation.description
    job = train(trainer, "wants-workers", epochs=1, num_workers=1)[-1]
    assert job.finished.status == SUCCEEDED
