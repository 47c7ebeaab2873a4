"""Devices: the setting, its start-up check, TrainAgent's device, and what a version records.

Everything here runs on the CPU, except the tests marked ``cuda``, which the conftest skips
where torch sees no GPU.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

from agent_training.v1 import training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server import devices
from agent_training_server.config import load_config
from agent_training_server.engines import precision, registry
from agent_training_server.engines.base import Example
from agent_training_server.engines.defaults import defaults_for
from tests.conftest import ServerThread, assert_status, expect_error, make_config
from tests.engines.test_supervised import Recorder
from tests.test_training import banking_examples

FEW_SHOT = training_pb2.TRAINING_TYPE_FEW_SHOT
SUPERVISED = training_pb2.TRAINING_TYPE_SUPERVISED
SUCCEEDED = training_pb2.TRAINING_STATUS_SUCCEEDED
INTENTS = ("card_arrival", "exchange_rate")
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")


# The setting ----------------------------------------------------------------------------------


def test_the_setting_reads_from_flag_and_environment_and_defaults_to_auto() -> None:
    assert load_config([], environ={}).device == "auto"
    assert load_config([], environ={"AGENT_TRAINING_DEVICE": "cuda:1"}).device == "cuda:1"
    assert load_config(["--device", "cpu"], environ={"AGENT_TRAINING_DEVICE": "cuda"}).device == (
        "cpu"
    )


@pytest.mark.parametrize("value", ["gpu", "cuda:", "cuda:-1", "cuda:01", "cuda:0:1", "mps", ""])
def test_a_malformed_setting_names_the_setting_and_the_rule(value: str) -> None:
    with pytest.raises(ValueError, match=r"^device: .* is not a device: use auto, cpu, cuda"):
        load_config(["--device", value], environ={})


def test_devices_are_recorded_one_way() -> None:
    assert devices.parse(" CUDA ") == "cuda:0"
    assert devices.parse("cuda:3") == "cuda:3"
    assert devices.parse("Auto") == "auto"
    assert devices.unavailable_reason("cpu", 0) is None
    assert devices.unavailable_reason("cuda:1", 2) is None
    assert "no CUDA GPU" in str(devices.unavailable_reason("cuda:0", 0))
    assert "cuda:0 to cuda:1" in str(devices.unavailable_reason("cuda:2", 2))
    # A data-parallel job takes a GPU per worker.
    assert devices.unavailable_reason("cuda:0", 2, workers=2) is None
    assert "3 data-parallel workers" in str(devices.unavailable_reason("cuda:0", 2, workers=3))
    assert devices.unavailable_reason("cpu", 0, workers=4) is None


def refused(data_dir: Path, device: str) -> tuple[int, str]:
    """Start the server with ``--device``; it must not serve: (exit code, its one line)."""
    command = [sys.executable, "-m", "agent_training_server.main", "--address", "127.0.0.1:0"]
    command += ["--metrics-address", "", "--data-dir", str(data_dir), "--device", device]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=120, env={**os.environ}, check=False
    )
    assert "serving" not in done.stdout and "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("agent-training: "), done.stderr
    return done.returncode, lines[0]


def test_a_malformed_setting_stops_the_start_as_bad_configuration(tmp_path: Path) -> None:
    code, line = refused(tmp_path / "data", "gpu")
    assert code == 2
    assert line.startswith("agent-training: bad configuration: device: 'gpu' is not a device")
    assert not (tmp_path / "data").exists()


@no_gpu
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_a_gpu_the_machine_lacks_stops_the_start(tmp_path: Path, device: str) -> None:
    code, line = refused(tmp_path / "data", device)
    assert code == 1
    assert f"device {devices.parse(device)} is not available: no CUDA GPU" in line
    assert "--device (AGENT_TRAINING_DEVICE)" in line
    assert not (tmp_path / "data").exists()


# TrainAgent's device --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("devices"), device="cpu"))
    yield running
    running.stop()


@pytest.fixture
def trainer(cpu_server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(cpu_server.address, timeout=60) as made:
        yield made


def train(
    client: AgentTrainingClient, agent_id: str, training_type: int, per_intent: int, **config
) -> list[training_pb2.TrainingEvent]:
    return list(
        client.train_agent(
            agent_id=agent_id,
            training_type=training_type,
            training_data=banking_examples(INTENTS, per_intent),
            config=training_pb2.TrainingConfig(**config),
            timeout=300,
        )
    )


def test_a_malformed_device_is_an_invalid_argument(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="typo")
    error = expect_error(train, trainer, "typo", SUPERVISED, 5, device="gpu0")
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
    violations = {v.field: v.description for v in error.field_violations}
    assert "is not a device: use auto, cpu, cuda or cuda:N" in violations["config.device"]
    assert trainer.list_training_jobs(agent_id="typo").jobs == []


@no_gpu
def test_a_gpu_the_workers_lack_is_refused_before_a_job_exists(
    trainer: AgentTrainingClient,
) -> None:
    trainer.create_agent(agent_id="wants-gpu")
    error = expect_error(train, trainer, "wants-gpu", SUPERVISED, 5, device="cuda")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "DEVICE_UNAVAILABLE" and not error.retryable
    assert "cuda:0 is not available" in error.message and "config.device" in error.hint
    assert trainer.list_training_jobs(agent_id="wants-gpu").jobs == []


def test_a_job_on_the_cpu_records_its_device_and_precision(trainer: AgentTrainingClient) -> None:
    trainer.create_agent(agent_id="on-cpu")
    events = train(trainer, "on-cpu", FEW_SHOT, 3, epochs=1, seed=3, device="CPU")
    assert events[-1].finished.status == SUCCEEDED, events[-1]
    assert recorded_on(trainer, "on-cpu", events[-1].finished.version_id) == ENCODER_ON_CPU
    assert trainer.get_training_job(events[0].training_id).config.device == "cpu"


def test_a_job_without_a_device_records_the_servers_setting(
    trainer: AgentTrainingClient,
) -> None:
    trainer.create_agent(agent_id="server-chooses")
    events = train(trainer, "server-chooses", SUPERVISED, 10, epochs=2)
    assert events[-1].finished.status == SUCCEEDED, events[-1]
    job = trainer.get_training_job(events[0].training_id)
    assert job.config.device == "cpu"
    assert recorded_on(trainer, "server-chooses", events[-1].finished.version_id) == CPU


# On a GPU -------------------------------------------------------------------------------------


def mixed_precision() -> str:
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


@pytest.mark.cuda
@pytest.mark.parametrize("paradigm", [FEW_SHOT, training_pb2.TRAINING_TYPE_TRANSFER])
def test_encoder_paradigms_train_and_answer_on_the_gpu_as_on_the_cpu(
    tmp_path: Path, paradigm: int
) -> None:
    """The same job on cuda and on the CPU: mixed precision recorded, the same answers."""
    running = ServerThread(make_config(tmp_path, device="cuda"))
    texts = ["my card still has not come", "how much is a euro in pounds", "where is my card"]
    answers = {}
    try:
        with AgentTrainingClient(running.address, timeout=60) as client:
            runs = (("cuda", ("cuda:0", mixed_precision())), ("cpu", ENCODER_ON_CPU))
            for device, recorded in runs:
                client.create_agent(agent_id=device)
                events = train(client, device, paradigm, 10, epochs=2, seed=5, device=device)
                assert events[-1].finished.status == SUCCEEDED, events[-1]
                assert recorded_on(client, device, events[-1].finished.version_id) == recorded
                reply = client.invoke_agent(agent_id=device, inputs=texts)  # served on the GPU
                answers[device] = [(p.output, p.confidence) for p in reply.predictions]
    finally:
        running.stop()
    assert [output for output, _ in answers["cuda"]] == [output for output, _ in answers["cpu"]]
    confidences = [[c for _, c in answers[device]] for device in ("cuda", "cpu")]
    np.testing.assert_allclose(*confidences, atol=0.1)


@pytest.mark.cuda
def test_a_version_served_on_the_gpu_answers_as_on_the_cpu(tmp_path: Path) -> None:
    """The same weights: the GPU runtime (mixed precision) within 2e-2 of the CPU's."""
    examples = [Example(e.input, e.expected_output) for e in banking_examples(INTENTS, 5)]
    settings = dataclasses.replace(defaults_for("few_shot"), epochs=1, device="cpu")
    artifact = registry.get_engine("few_shot").train(examples, settings, Recorder(), tmp_path)
    texts = [e.input for e in examples] + ["my card still has not come"]
    served = {}
    try:
        for device in ("cpu", "cuda"):
            devices.use_setting(device)
            predictor = registry.load_predictor(artifact.spec, artifact.tensors)
            served[device] = predictor.predict_proba(texts)
        assert predictor.runtime == f"torch-cuda:0-{mixed_precision()}"
    finally:
        devices.use_setting("cpu")
    np.testing.assert_allclose(served["cuda"], served["cpu"], atol=2e-2)


CPU = ("cpu", "float32")
ENCODER_ON_CPU = ("cpu", precision.for_device("cpu").name)
"""An encoder trains in bfloat16 on a CPU that has it natively (AMX, AVX512-BF16)."""


def recorded_on(client: AgentTrainingClient, agent_id: str, version_id: str) -> tuple[str, str]:
    """(device, precision) of a version's replay manifest."""
    for version in client.list_agent_versions(agent_id).versions:
        if version.version_id == version_id:
            return version.manifest.device, version.manifest.precision
    raise AssertionError(f"no version {version_id}")
