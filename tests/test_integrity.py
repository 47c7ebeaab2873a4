"""Damaged files on disk, over a real channel: versions refused, checkpoints fallen back from.

A version whose weights have flipped bits, are truncated, deleted or wrongly shaped answers
FAILED_PRECONDITION ``VERSION_DAMAGED`` and is never served; activating a good version serves
again. A job whose newest checkpoint is corrupt, or says an impossible epoch, resumes from the
previous checkpoint (or from scratch) with a line in the log saying so, and ends with the
metrics of an uninterrupted run.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import torch
from safetensors.torch import load_file, save_file

from agent_training.v1 import adaptation_pb2, training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.engines import integrity
from agent_training_server.engines.checkpoint import (
    checkpoint_files,
    read_checkpoint,
    save_checkpoint,
)
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.server_process import ServerProcess
from tests.test_training import banking_examples

INTENTS = ("card_arrival", "lost_or_stolen_card", "exchange_rate")
FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED


@pytest.fixture(scope="module")
def shared(tmp_path_factory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("integrity")))
    yield running
    running.stop()


@pytest.fixture
def client(shared: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(shared.address, timeout=60) as made:
        yield made


def train(client: AgentTrainingClient, agent_id: str) -> str:
    """Train a small version of the agent; return its version_id (now active)."""
    events = list(
        client.train_agent(
            agent_id=agent_id,
            training_data=banking_examples(INTENTS, per_intent=10),
            config=training_pb2.TrainingConfig(epochs=2),
            timeout=120,
        )
    )
    assert events[-1].finished.status == SUCCEEDED, events[-1]
    return events[-1].finished.version_id


def weights(server: ServerThread, agent_id: str, version_id: str) -> Path:
    return server.config.data_dir / "artifacts" / agent_id / version_id / "model.safetensors"


def flip_a_bit_in_the_tensor_data(path: Path) -> None:
    raw = bytearray(path.read_bytes())
    (header,) = struct.unpack("<Q", raw[:8])
    data_start = 8 + header
    raw[data_start + (len(raw) - data_start) // 2] ^= 0x10
    path.write_bytes(bytes(raw))


def assert_damaged(error) -> None:
    assert_status(error, FAILED_PRECONDITION)
    assert error.code == "VERSION_DAMAGED", error.to_dict()
    assert "ActivateAgentVersion" in error.hint
    assert "/" not in error.message, "a path reached the client"


def test_flipped_bits_are_refused_everywhere_until_a_good_version_is_activated(
    client, shared
) -> None:
    client.create_agent(agent_id="flipped")
    good = train(client, "flipped")
    damaged = train(client, "flipped")
    flip_a_bit_in_the_tensor_data(weights(shared, "flipped", damaged))

    assert_damaged(expect_error(client.invoke_agent, agent_id="flipped", inputs=["my card?"]))
    assert_damaged(expect_error(client.analyze_and_optimize, agent_id="flipped"))
    assert_damaged(
        expect_error(
            client.adapt_agent_behavior,
            agent_id="flipped",
            performance_metrics={"success_rate": 0.9},
            adaptation_strategy=adaptation_pb2.ADAPTATION_STRATEGY_THRESHOLD,
            targets={"success_rate": 0.99},
        )
    )
    # Refused again on the next call: a damaged version is never cached.
    assert_damaged(expect_error(client.invoke_agent, agent_id="flipped", inputs=["my card?"]))

    client.activate_agent_version("flipped", good)
    answer = client.invoke_agent(agent_id="flipped", inputs=["where is my card"])
    assert answer.version_id == good and answer.predictions[0].output in INTENTS
    assert client.analyze_and_optimize(agent_id="flipped").version_id == good
    named = expect_error(
        client.invoke_agent, agent_id="flipped", version_id=damaged, inputs=["my card?"]
    )
    assert_damaged(named)


@pytest.mark.parametrize("damage", ["truncated", "deleted", "wrong_shape", "spec_edited"])
def test_a_damaged_weight_file_is_refused(client, shared, damage: str) -> None:
    agent_id = f"damaged-{damage.replace('_', '-')}"
    client.create_agent(agent_id=agent_id)
    version_id = train(client, agent_id)
    path = weights(shared, agent_id, version_id)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "deleted":
        path.unlink()
    elif damage == "wrong_shape":
        # A file that carries a valid checksum of its own, with tensors the model cannot use.
        tensors = load_file(str(path))
        tensors["weight"] = torch.zeros(tensors["weight"].shape[0], len(INTENTS) + 2)
        integrity.write_tensors(path, tensors)
    else:
        spec = path.with_name("spec.json")
        edited = json.loads(spec.read_text())
        edited["outputs"] = [*edited["outputs"], "extra"]
        spec.write_text(json.dumps(edited))
    assert_damaged(expect_error(client.invoke_agent, agent_id=agent_id, inputs=["my card?"]))
    assert_damaged(expect_error(client.analyze_and_optimize, agent_id=agent_id))


def test_versions_written_before_checksums_are_served_with_shape_checks(client, shared) -> None:
    """Old data folders keep working: weights without a digest get the structural checks."""
    client.create_agent(agent_id="legacy")
    version_id = train(client, "legacy")
    path = weights(shared, "legacy", version_id)
    tensors = load_file(str(path))
    save_file(tensors, str(path))  # as written before this change: no metadata
    assert client.invoke_agent(agent_id="legacy", inputs=["my card?"]).version_id == version_id

    client.create_agent(agent_id="legacy-misshaped")
    version_id = train(client, "legacy-misshaped")
    path = weights(shared, "legacy-misshaped", version_id)
    tensors = load_file(str(path))
    tensors["bias"] = torch.zeros(len(INTENTS) + 1)
    save_file(tensors, str(path))
    error = expect_error(client.invoke_agent, agent_id="legacy-misshaped", inputs=["my card?"])
    assert_damaged(error)


# Checkpoints: a job interrupted by a shutdown, its checkpoints damaged, then resumed.

JOB_INTENTS = (*INTENTS, "pin_blocked", "change_pin", "top_up_failed")
JOB_CONFIG = training_pb2.TrainingConfig(
    epochs=5, batch_size=1, seed=5, early_stopping=training_pb2.EarlyStopping(patience=0)
)
CHECKPOINT_EVERY_STEPS = 30
TIMING = ("duration_seconds", "examples_per_second")


def comparable(metrics) -> dict[str, float]:
    return {f.name: value for f, value in metrics.ListFields() if f.name not in TIMING}


def interrupted_job(data_dir: Path, log: Path) -> tuple[str, int]:
    """Start a job, stop the server (SIGTERM) inside its third epoch; (training_id, sequence)."""
    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            client.create_agent(agent_id="resumed")
            stream = client.train_agent(
                agent_id="resumed",
                training_data=banking_examples(JOB_INTENTS, per_intent=25),
                config=JOB_CONFIG,
                timeout=300,
            )
            for event in stream:
                assert not event.HasField("finished"), "the job ended before the interruption"
                if event.HasField("progress") and event.progress.epoch >= 3:
                    training_id, sequence = event.training_id, event.sequence
                    break
            server.terminate()
    finally:
        server.kill()
    return training_id, sequence


def damage_checkpoints(folder: Path, damage: str) -> None:
    files = checkpoint_files(folder)
    assert len(files) == 2, "the newest and the previous checkpoint are kept"
    newest, previous = files
    if damage in ("corrupt", "both_corrupt"):
        flip_a_bit_in_the_tensor_data(newest)
    if damage == "both_corrupt":
        flip_a_bit_in_the_tensor_data(previous)
    if damage == "epoch_edited":
        # Rewritten with a valid checksum: only the check of its values can catch it. Saving
        # rotates, so the previous checkpoint becomes the one that was the newest.
        checkpoint = read_checkpoint(newest)
        state = {**checkpoint["state"], "epoch": 1_000_000_000, "step_in_epoch": 0}
        best = checkpoint["best"] or None
        save_checkpoint(
            folder, checkpoint["model"], checkpoint["optimizer"], best, state, checkpoint["rng"]
        )


@pytest.mark.parametrize(
    ("damage", "resumes_from"),
    [
        ("corrupt", "the previous checkpoint"),
        ("epoch_edited", "the previous checkpoint"),
        ("both_corrupt", "scratch"),
    ],
)
def test_a_damaged_checkpoint_is_fallen_back_from(
    tmp_path: Path, damage: str, resumes_from: str
) -> None:
    data_dir, log = tmp_path / "data", tmp_path / "server.log"
    training_id, sequence = interrupted_job(data_dir, log)
    damage_checkpoints(data_dir / "jobs" / training_id / "checkpoints", damage)

    server = ServerProcess(data_dir, log, checkpoint_every_steps=CHECKPOINT_EVERY_STEPS)
    try:
        with AgentTrainingClient(server.address, timeout=60) as client:
            rest = list(client.watch_training_job(training_id, sequence + 1, timeout=300))
            finished = rest[-1].finished
            assert finished.status == SUCCEEDED, finished
            assert finished.metrics.epochs_run == JOB_CONFIG.epochs
            client.create_agent(agent_id="unbroken")
            reference = list(
                client.train_agent(
                    agent_id="unbroken",
                    training_data=banking_examples(JOB_INTENTS, per_intent=25),
                    config=JOB_CONFIG,
                    timeout=300,
                )
            )[-1].finished
            assert comparable(finished.metrics) == comparable(reference.metrics)
    finally:
        server.kill()
    said = [line for line in log.read_text().splitlines() if "checkpoint is damaged" in line]
    assert said and all(training_id in line for line in said), said
    assert f"resuming from {resumes_from}" in said[-1], said
