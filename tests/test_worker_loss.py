"""A lost worker: ``kill -9`` of the training worker alone, the server alive.

The server runs as a real process (one worker, one torch thread). A job trains on a Banking77
subset; once it is inside an epoch past the first (a checkpoint is on disk), its worker process is
killed. The job resumes from that checkpoint in the worker that replaces it, under the same
training_id and on the same stream, and ends with the metrics of an uninterrupted run. A job whose
worker is killed more often than MAX_WORKER_RESTARTS allows ends FAILED with WORKER_LOST. Ended
jobs leave no folder behind, and a start-up removes the folders a crash left. A worker killed
while idle is replaced by one that takes the next task and its cancel.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server import job_checkpoints
from agent_training_server.services.jobs import MAX_WORKER_RESTARTS
from tests.server_process import ServerProcess
from tests.test_crash_recovery import (
    CHECKPOINT_EVERY_STEPS,
    CONFIG,
    INTENTS,
    comparable,
    resumed_from_checkpoint,
    until_mid_epoch,
)
from tests.test_training import banking_examples

QUEUED = training_pb2.TRAINING_STATUS_QUEUED
RUNNING = training_pb2.TRAINING_STATUS_RUNNING


def worker_pid(server: ServerProcess) -> int:
    """The pid of the server's one training worker: a spawned child with the worker's env."""
    workers, seen = [], []
    for process in Path("/proc").glob("[0-9]*"):
        try:
            # "pid (comm) state ppid ...": comm may hold spaces, never ") ".
            parent = int((process / "stat").read_text().rsplit(") ", 1)[1].split()[1])
            if parent != server.process.pid:
                continue
            command = (process / "cmdline").read_bytes()
            environment = (process / "environ").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue  # not a process, or one that just ended
        pid = process.name
        seen.append((pid, command[:100], b"MALLOC_MMAP_THRESHOLD_=" in environment))
        if b"spawn_main" in command and b"MALLOC_MMAP_THRESHOLD_=" in environment:
            workers.append(int(pid))
    assert len(workers) == 1, f"expected one training worker among the children {seen}"
    return workers[0]


def is_running(event) -> bool:
    return event.HasField("progress") and event.progress.status == RUNNING


def sequences_are_whole(events) -> None:
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))


def resumptions(events) -> int:
    """QUEUED progress events after the job first ran."""
    first_run = next(index for index, event in enumerate(events) if is_running(event))
    return sum(
        1
        for event in events[first_run:]
        if event.HasField("progress") and event.progress.status == QUEUED
    )


def test_a_killed_worker_resumes_its_job_then_fails_it_past_the_bound(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    jobs_dir = data_dir / "jobs"
    examples = banking_examples(INTENTS, per_intent=40)
    log = tmp_path / "server.log"
    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            # Killed once inside an epoch past the first: resumed on the same stream.
            client.create_agent(agent_id="resumed")
            stream = client.train_agent(
                agent_id="resumed", training_data=examples, config=CONFIG, timeout=300
            )
            seen = until_mid_epoch(stream)
            training_id = seen[0].training_id
            assert (jobs_dir / training_id / "checkpoints").is_dir()
            os.kill(worker_pid(server), signal.SIGKILL)
            events = seen + list(stream)
            sequences_are_whole(events)
            everything = list(client.watch_training_job(training_id, 0, timeout=60))
            assert [e.SerializeToString() for e in everything] == [
                e.SerializeToString() for e in events
            ]
            finished = events[-1].finished
            assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            assert resumptions(events) == 1
            assert resumed_from_checkpoint(log, training_id) is not None, (
                "it started again from scratch"
            )
            reasons = [entry.reason for entry in client.get_training_job(training_id).timeline]
            assert sum(reason.startswith("worker lost") for reason in reasons) == 1, reasons
            assert job_checkpoints.only_kept(jobs_dir / training_id)

            # Killed at every start: resumed MAX_WORKER_RESTARTS times, then FAILED.
            client.create_agent(agent_id="doomed")
            stream = client.train_agent(
                agent_id="doomed", training_data=examples, config=CONFIG, timeout=300
            )
            doomed = []
            for event in stream:
                # The first RUNNING event after the accepted or a QUEUED one: a worker took it.
                if is_running(event) and not is_running(doomed[-1]):
                    os.kill(worker_pid(server), signal.SIGKILL)
                doomed.append(event)
            sequences_are_whole(doomed)
            failed = doomed[-1].finished
            assert failed.status == training_pb2.TRAINING_STATUS_FAILED
            assert failed.error.code == "WORKER_LOST"
            assert failed.error.retryable
            assert resumptions(doomed) == MAX_WORKER_RESTARTS
            assert not (jobs_dir / doomed[0].training_id).exists()

            # The pool replaced every dead worker: the same request, uninterrupted, on the
            # same server, gives the same numbers.
            client.create_agent(agent_id="unbroken")
            reference = list(
                client.train_agent(
                    agent_id="unbroken", training_data=examples, config=CONFIG, timeout=300
                )
            )
            assert resumptions(reference) == 0
            assert comparable(finished.metrics) == comparable(reference[-1].finished.metrics)
            assert job_checkpoints.only_kept(jobs_dir / reference[0].training_id)
    finally:
        server.kill()


def test_a_worker_killed_while_idle_is_replaced_by_one_that_takes_tasks_and_cancels(
    tmp_path: Path,
) -> None:
    """An idle worker is blocked reading its task and control pipes when it is killed.

    Those pipes are that worker's alone and are made anew with its replacement: a process killed
    inside an operation on a shared multiprocessing queue leaves the queue's lock held forever,
    and every later task (or event, or cancel) would wait on it.
    """
    examples = banking_examples(INTENTS[:4], per_intent=20)
    long_run = training_pb2.TrainingConfig(
        epochs=200, batch_size=1, seed=3, early_stopping=training_pb2.EarlyStopping(patience=0)
    )
    server = ServerProcess(tmp_path / "data", tmp_path / "server.log")
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="after-idle-kill")
            first = list(client.train_agent(agent_id="after-idle-kill", training_data=examples))
            assert first[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            # Idle now, its threads blocked reading the task queue and the control queue.
            os.kill(worker_pid(server), signal.SIGKILL)
            stream = client.train_agent(
                agent_id="after-idle-kill", training_data=examples, config=long_run, timeout=120
            )
            seen = []
            for event in stream:
                seen.append(event)
                if is_running(event):
                    break
            cancelled = client.cancel_training_job(seen[0].training_id)
            ended = list(stream)[-1].finished
            assert ended.status == training_pb2.TRAINING_STATUS_CANCELLED, cancelled
            reference = list(
                client.train_agent(agent_id="after-idle-kill", training_data=examples, timeout=120)
            )
            assert reference[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    finally:
        server.kill()


def test_start_up_removes_the_folders_of_ended_jobs_and_keeps_the_resumable(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    jobs_dir = data_dir / "jobs"
    log = tmp_path / "server.log"
    examples = banking_examples(INTENTS[:4], per_intent=40)
    config = training_pb2.TrainingConfig(
        epochs=4, batch_size=1, seed=5, early_stopping=training_pb2.EarlyStopping(patience=0)
    )
    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="done")
            ended = list(client.train_agent(agent_id="done", training_data=examples, timeout=300))
            assert ended[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            client.create_agent(agent_id="interrupted")
            seen = until_mid_epoch(
                client.train_agent(
                    agent_id="interrupted", training_data=examples, config=config, timeout=300
                )
            )
    finally:
        server.kill()
    # What a crash between a job's end and the pruning of its folder leaves.
    for leftover in (ended[0].training_id, "train_of_a_deleted_agent"):
        (jobs_dir / leftover / "checkpoints").mkdir(parents=True, exist_ok=True)
        (jobs_dir / leftover / "checkpoints" / "stale").write_bytes(b"\0" * 64)
    interrupted = seen[0].training_id
    assert (jobs_dir / interrupted).is_dir()

    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        # The ended job keeps what it kept; the deleted agent's job folder is gone.
        names = sorted(path.name for path in jobs_dir.iterdir())
        assert names == sorted([interrupted, ended[0].training_id]), names
        assert job_checkpoints.only_kept(jobs_dir / ended[0].training_id)
        with AgentTrainingClient(server.address, timeout=60) as client:
            events = list(client.watch_training_job(interrupted, 0, timeout=300))
            sequences_are_whole(events)
            assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            assert resumed_from_checkpoint(log, interrupted) is not None, (
                "its checkpoint was not kept"
            )
        assert all(job_checkpoints.only_kept(folder) for folder in jobs_dir.iterdir())
    finally:
        server.kill()
