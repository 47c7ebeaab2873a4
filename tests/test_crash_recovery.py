"""The crash test: ``kill -9`` the server and its workers mid-epoch, restart, lose nothing.

The server runs as a real process in its own process group. A job trains on a Banking77 subset;
once it is inside an epoch past the first, the whole group is killed. The test then checks the
database with SQLite's integrity check, restarts the server on the same data folder, and checks
that the job completes under the same training_id with its event log gapless and unrepeated, with
the metrics of an uninterrupted run of the same request, and that every stored object (agents,
versions, datasets, invocations, feedback) is as it was.

``CRASH_TEST_RUNS=20`` repeats it (scripts/crash_loop.sh does, and reports the count).
"""

from __future__ import annotations

import os
import random
import re
import time
from pathlib import Path

import pytest

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.engines.checkpoint import load_checkpoint
from tests.server_process import ServerProcess, integrity_check, table_rows
from tests.test_training import banking_examples

INTENTS = (
    "card_arrival",
    "lost_or_stolen_card",
    "exchange_rate",
    "cash_withdrawal_charge",
    "top_up_failed",
    "pin_blocked",
    "change_pin",
    "declined_card_payment",
    "Refund_not_showing_up",
    "transfer_timing",
    "card_payment_fee_charged",
    "balance_not_updated_after_bank_transfer",
    "wrong_amount_of_cash_received",
    "transaction_charged_twice",
    "beneficiary_not_allowed",
    "apple_pay_or_google_pay",
)
CONFIG = training_pb2.TrainingConfig(
    epochs=8,
    batch_size=1,
    seed=11,
    early_stopping=training_pb2.EarlyStopping(patience=0),
)
CHECKPOINT_EVERY_STEPS = 60
QUEUED = training_pb2.TRAINING_STATUS_QUEUED
TIMING = ("duration_seconds", "examples_per_second")
KEPT_TABLES = (
    "agents",
    "versions",
    "named_datasets",
    "dataset_examples",
    "invocations",
    "feedback",
)
RUNS = int(os.environ.get("CRASH_TEST_RUNS", "1"))


def store_other_objects(client: AgentTrainingClient) -> None:
    """An agent with a version, a dataset, answers and feedback: what a crash must not touch."""
    client.create_agent(agent_id="keeper", display_name="Keeper")
    small = banking_examples(INTENTS[:3], per_intent=10)
    events = list(
        client.train_agent(
            agent_id="keeper",
            training_data=small,
            config=training_pb2.TrainingConfig(epochs=2),
            timeout=120,
        )
    )
    assert events[-1].finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
    client.upload_dataset("kept-examples", small, description="must survive a crash")
    answers = client.invoke_agent(agent_id="keeper", inputs=["where is my card", "pin blocked"])
    for prediction in answers.predictions:
        client.record_feedback(
            agent_id="keeper", invocation_id=prediction.invocation_id, feedback="correct"
        )


def until_mid_epoch(stream) -> list:
    """Events of a TrainAgent stream up to a progress report inside an epoch past the first."""
    seen = []
    for event in stream:
        seen.append(event)
        progress = event.progress if event.HasField("progress") else None
        steps_per_epoch = progress and progress.total_steps // max(progress.total_epochs, 1)
        if progress and progress.epoch >= 2 and progress.step % steps_per_epoch:
            return seen
        assert not event.HasField("finished"), "the job ended before the interruption"
    raise AssertionError("the stream ended before the interruption")


def follow_to_the_end(client: AgentTrainingClient, training_id: str, from_sequence: int) -> list:
    return list(client.watch_training_job(training_id, from_sequence, timeout=300))


def resumed_from_checkpoint(log: Path, training_id: str) -> tuple[int, int] | None:
    """(epoch, step) the job's last resumption started from, as its worker logged it; None: none.

    Checkpoints are flushed in the background and a routine one is skipped while the previous is
    still being written, so which checkpoint a kill leaves is a matter of timing; that the job
    resumed from one (rather than from scratch) is not.
    """
    pattern = re.compile(
        rf"job {re.escape(training_id)}: resuming from its checkpoint at epoch (\d+), step (\d+)"
    )
    found = pattern.findall(log.read_text(encoding="utf-8", errors="replace"))
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def comparable(metrics) -> dict[str, float]:
    return {f.name: value for f, value in metrics.ListFields() if f.name not in TIMING}


@pytest.mark.parametrize("run", range(RUNS))
def test_kill_9_mid_epoch_then_restart_loses_nothing(tmp_path: Path, run: int) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    database = data_dir / "agent_training.sqlite3"
    examples = banking_examples(INTENTS, per_intent=40)
    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            store_other_objects(client)
            client.create_agent(agent_id="crashed")
            seen = until_mid_epoch(
                client.train_agent(
                    agent_id="crashed", training_data=examples, config=CONFIG, timeout=300
                )
            )
            before = table_rows(database, KEPT_TABLES)
            time.sleep(random.uniform(0.0, 0.3))  # vary where in the step the kill lands
    finally:
        server.kill()

    training_id = seen[0].training_id
    assert integrity_check(database) == "ok"
    checkpoint = load_checkpoint(data_dir / "jobs" / training_id / "checkpoints")
    assert checkpoint is not None, "no checkpoint was on disk at the crash"
    at = checkpoint["state"]
    seen_step = max(e.progress.step for e in seen if e.HasField("progress"))
    print(
        f"\nrun {run}: killed after step {seen_step} or later;"
        f" last checkpoint: {at['epoch']} epochs + {at['step_in_epoch']} steps"
    )

    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            # A subscriber re-attaches where it left off and misses nothing.
            rest = follow_to_the_end(client, training_id, seen[-1].sequence + 1)
            everything = follow_to_the_end(client, training_id, 0)
            sequences = [event.sequence for event in everything]
            assert sequences == list(range(1, len(everything) + 1))
            assert [e.SerializeToString() for e in seen + rest] == [
                e.SerializeToString() for e in everything
            ]
            assert all(event.training_id == training_id for event in everything)
            finished = everything[-1].finished
            assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED
            job = client.get_training_job(training_id)
            assert "server restarted" in [transition.reason for transition in job.timeline]
            assert client.get_agent("crashed").active_version_id == finished.version_id
            assert resumed_from_checkpoint(log, training_id) is not None, (
                "it started again from scratch"
            )

            # The same request, uninterrupted, on the same server: the same numbers.
            client.create_agent(agent_id="unbroken")
            reference = list(
                client.train_agent(
                    agent_id="unbroken", training_data=examples, config=CONFIG, timeout=300
                )
            )[-1].finished
            assert comparable(finished.metrics) == comparable(reference.metrics)
        after = table_rows(database, KEPT_TABLES)
    finally:
        server.kill()

    for table in KEPT_TABLES:
        lost = {row for row in before[table] - after[table] if row[0] != "crashed"}
        assert not lost, (table, lost)
    assert integrity_check(database) == "ok"
