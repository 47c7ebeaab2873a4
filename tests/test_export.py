"""ExportAgentVersion over a real channel: the bundle, its ONNX scorer against InvokeAgent, errors.

The ONNX checks score every Banking77 test input with the bundle alone (its ngram_features.py,
its tokenizer, onnxruntime) and compare with InvokeAgent's answers: the same output, confidences
within 1e-4.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import io
import json
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import numpy as np
import pytest

from agent_training.v1 import service_pb2, service_pb2_grpc, training_pb2
from agent_training_client import AgentTrainingClient
from agent_training_server.engines import precision
from tests.conftest import BANKING77, ServerThread, assert_status, expect_error, make_config
from tests.test_training import banking_examples

SUPERVISED = training_pb2.TRAINING_TYPE_SUPERVISED
TRANSFER = training_pb2.TRAINING_TYPE_TRANSFER
REINFORCEMENT = training_pb2.TRAINING_TYPE_REINFORCEMENT
CLI = str(Path(sys.executable).with_name("agent-training"))
AGREEMENT = 1e-4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    running = ServerThread(make_config(tmp_path_factory.mktemp("export"), workers=1))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def client(server: ServerThread) -> Iterator[AgentTrainingClient]:
    with AgentTrainingClient(server.address, timeout=120) as made:
        yield made


@pytest.fixture(scope="module")
def test_texts() -> list[str]:
    with (BANKING77 / "test.csv").open(newline="", encoding="utf-8") as handle:
        return [row["text"] for row in csv.DictReader(handle)]


def trained(client: AgentTrainingClient, agent_id: str, examples, training_type, **config) -> str:
    """Create an agent, train it, return its new version id."""
    client.create_agent(agent_id=agent_id)
    events = list(
        client.train_agent(
            agent_id=agent_id,
            training_data=examples,
            training_type=training_type,
            config=training_pb2.TrainingConfig(**config),
            timeout=600,
        )
    )
    finished = events[-1].finished
    assert finished.status == training_pb2.TRAINING_STATUS_SUCCEEDED, finished.error
    return finished.version_id


@pytest.fixture(scope="module")
def supervised(client: AgentTrainingClient) -> str:
    """A supervised agent on all of Banking77's training file (seconds)."""
    with (BANKING77 / "train.csv").open(newline="", encoding="utf-8") as handle:
        examples = [
            training_pb2.TrainingExample(input=row["text"], expected_output=row["category"])
            for row in csv.DictReader(handle)
        ]
    trained(client, "sup", examples, SUPERVISED, epochs=3)
    return "sup"


@pytest.fixture(scope="module")
def transfer(client: AgentTrainingClient) -> str:
    """A transfer agent on 4 examples of each of Banking77's 77 intents, one epoch."""
    intents = json.loads((BANKING77 / "categories.json").read_text())
    trained(
        client,
        "xfer",
        banking_examples(intents, per_intent=4),
        TRANSFER,
        epochs=1,
        validation_split=0.0,
    )
    return "xfer"


def unpacked(path: Path) -> dict[str, bytes]:
    """The bundle's files by name, in archive order."""
    with tarfile.open(path) as archive:
        return {
            member.name: archive.extractfile(member).read()  # type: ignore[union-attr]
            for member in archive.getmembers()
        }


def load_module(name: str, source: bytes, folder: Path) -> ModuleType:
    """Import a file shipped in a bundle, as its user would."""
    path = folder / f"{name}.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location(f"bundle_{name}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def onnx_confidences(files: dict[str, bytes], texts: list[str], folder: Path) -> np.ndarray:
    """The bundle's model.onnx scored on texts with only what the bundle holds."""
    import onnxruntime

    manifest = json.loads(files["manifest.json"])
    inputs = {entry["name"]: entry for entry in manifest["onnx"]["inputs"]}
    session = onnxruntime.InferenceSession(files["model.onnx"], providers=["CPUExecutionProvider"])
    tokenizer = None
    if "input_ids" in inputs:
        from transformers import AutoTokenizer

        for name, data in files.items():
            if name.startswith("tokenizer/"):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_bytes(data)
        tokenizer = AutoTokenizer.from_pretrained(str(folder / "tokenizer"))
    features = None
    if "ngram_ids" in inputs:
        features = load_module("ngram_features", files["ngram_features.py"], folder)
    # By length, as the service batches: a batch is padded to its longest text.
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    parts = []
    for start in range(0, len(texts), 64):
        batch = [texts[index] for index in order[start : start + 64]]
        feeds: dict[str, Any] = {}
        if tokenizer is not None:
            tokens = tokenizer(
                batch, padding=True, truncation=True, max_length=64, return_tensors="np"
            )
            feeds["input_ids"] = tokens["input_ids"].astype(np.int64)
            feeds["attention_mask"] = tokens["attention_mask"].astype(np.int64)
        if features is not None:
            ids, counts = features.ngram_arrays(batch, inputs["ngram_ids"]["features"])
            feeds.update(ngram_ids=ids, ngram_counts=counts)
        parts.append(session.run(["confidences"], feeds)[0])
    confidences = np.empty_like(np.concatenate(parts))
    confidences[order] = np.concatenate(parts)
    return confidences


def invoked(client: AgentTrainingClient, agent_id: str, texts: list[str], batch: int) -> list:
    """InvokeAgent's predictions of texts, in order; sent by length, so each batch pads little."""
    order = sorted(range(len(texts)), key=lambda index: len(texts[index]))
    predictions: list = [None] * len(texts)
    for start in range(0, len(order), batch):
        rows = order[start : start + batch]
        answer = client.invoke_agent(agent_id=agent_id, inputs=[texts[row] for row in rows])
        for row, prediction in zip(rows, answer.predictions, strict=True):
            predictions[row] = prediction
    return predictions


def check_agreement(predictions: list, confidences: np.ndarray, outputs: list[str]) -> float:
    """Where InvokeAgent answers with the model's argmax, the ONNX model answers the same."""
    compared = 0
    largest = 0.0
    for prediction, row in zip(predictions, confidences, strict=True):
        assert not prediction.is_fallback  # the default behaviour: no threshold
        assert prediction.output == outputs[int(row.argmax())]
        largest = max(largest, abs(prediction.confidence - float(row.max())))
        compared += 1
    assert compared == len(confidences)
    assert largest <= AGREEMENT, largest
    return largest


def test_a_supervised_bundle_holds_the_version_and_its_checksum(
    client: AgentTrainingClient, server: ServerThread, supervised: str, tmp_path: Path
) -> None:
    agent_before = client.get_agent(supervised)
    header, path = client.export_agent_version(supervised, path=tmp_path / "sup.tar")
    version = header.version
    assert path == tmp_path / "sup.tar" and header.size_bytes == path.stat().st_size
    assert header.format == "agent-training-bundle/1" and header.onnx
    assert version.version_id == agent_before.active_version_id and version.active
    files = unpacked(path)
    assert list(files) == list(header.files)
    assert list(files) == [
        "manifest.json",
        "model.safetensors",
        "spec.json",
        "model.onnx",
        "ngram_features.py",
    ]
    stored = server.config.data_dir / "artifacts" / supervised / version.version_id
    for name in ("model.safetensors", "spec.json"):
        assert files[name] == (stored / name).read_bytes()
    manifest = json.loads(files["manifest.json"])
    assert manifest["format"] == header.format
    assert manifest["version_id"] == version.version_id and manifest["agent_id"] == supervised
    assert manifest["training_type"] == "supervised"
    assert manifest["outputs"] == list(version.outputs)
    assert manifest["behavior"]["fallback_output"] == version.behavior.fallback_output
    assert manifest["replay"]["data_sha256"] == version.manifest.data_sha256
    assert manifest["replay"]["seed"] == version.manifest.config.seed
    assert manifest["metrics"]["validation_accuracy"] == pytest.approx(
        version.metrics.validation_accuracy
    )
    assert manifest["encoder"]["name"] == "hashed_ngrams"
    described = {entry["name"]: entry for entry in manifest["files"]}
    assert list(described) == list(files)
    for name, data in files.items():
        assert described[name]["what"]
        if name != "manifest.json":
            assert described[name]["sha256"] == hashlib.sha256(data).hexdigest()
    onnx = manifest["onnx"]
    assert onnx["included"] and [i["name"] for i in onnx["inputs"]] == [
        "ngram_ids",
        "ngram_counts",
    ]
    assert [o["name"] for o in onnx["outputs"]] == ["probabilities", "confidences"]
    # An export changes nothing.
    agent_after = client.get_agent(supervised)
    assert agent_after.active_version_id == agent_before.active_version_id
    assert agent_after.version_count == agent_before.version_count
    assert not any((server.config.data_dir / "exports").iterdir())


def test_the_stream_is_a_header_chunks_of_at_most_1_mib_and_a_trailer(
    server: ServerThread, supervised: str
) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        request = service_pb2.ExportAgentVersionRequest(agent_id=supervised)
        responses = list(stub.ExportAgentVersion(request, timeout=120))
    kinds = [response.WhichOneof("part") for response in responses]
    assert kinds[0] == "header" and kinds[-1] == "trailer"
    assert set(kinds[1:-1]) == {"chunk"} and len(kinds) > 3
    chunks = [response.chunk for response in responses[1:-1]]
    assert max(len(chunk) for chunk in chunks) <= 1 << 20
    bundle = b"".join(chunks)
    trailer = responses[-1].trailer
    assert trailer.size_bytes == len(bundle) == responses[0].header.size_bytes
    assert trailer.sha256 == hashlib.sha256(bundle).hexdigest()


def test_a_supervised_onnx_model_answers_as_invoke_agent_on_every_test_input(
    client: AgentTrainingClient, supervised: str, test_texts: list[str], tmp_path: Path
) -> None:
    header, path = client.export_agent_version(supervised, path=tmp_path / "sup.tar")
    confidences = onnx_confidences(unpacked(path), test_texts, tmp_path)
    predictions = invoked(client, supervised, test_texts, batch=500)
    largest = check_agreement(predictions, confidences, list(header.version.outputs))
    print(f"supervised: {len(test_texts)} inputs, largest confidence difference {largest:.2g}")


def test_a_transfer_onnx_model_answers_as_invoke_agent_on_every_test_input(
    client: AgentTrainingClient,
    transfer: str,
    test_texts: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # On a CPU that multiplies bfloat16 natively the service scores batches of 4 texts or more
    # with the encoder in bfloat16 (engines/encoder_runtime.py), which moves confidences by up
    # to 1e-2; the ONNX model computes in float32, as the service does for 1 to 3 texts and on
    # other CPUs. Serving as on those CPUs lets the comparison use batches of 64, not 3 (a
    # minute less). This test is the first to invoke the agent, so its model loads so.
    monkeypatch.setattr(precision, "native_bfloat16", lambda: False)
    header, path = client.export_agent_version(transfer, path=tmp_path / "xfer.tar")
    files = unpacked(path)
    assert {"model.onnx", "ngram_features.py", "tokenizer/tokenizer.json"} <= set(files)
    manifest = json.loads(files["manifest.json"])
    assert [entry["name"] for entry in manifest["onnx"]["inputs"]] == [
        "input_ids",
        "attention_mask",
        "ngram_ids",
        "ngram_counts",
    ]
    assert "out_of_scope.embeddings" in manifest["out_of_scope"]
    confidences = onnx_confidences(files, test_texts, tmp_path)
    predictions = invoked(client, transfer, test_texts, batch=64)
    largest = check_agreement(predictions, confidences, list(header.version.outputs))
    print(f"transfer: {len(test_texts)} inputs, largest confidence difference {largest:.2g}")


def test_a_reinforcement_version_exports_its_policy(
    client: AgentTrainingClient, tmp_path: Path
) -> None:
    """The policy is the supervised engine's n-gram model: its bundle has the same scorer."""
    log = [
        training_pb2.TrainingExample(
            input=example.input, expected_output=example.expected_output, feedback="correct"
        )
        for example in banking_examples(("card_arrival", "exchange_rate"), per_intent=10)
    ]
    trained(client, "policy", log, REINFORCEMENT, epochs=2)
    header, path = client.export_agent_version("policy", path=tmp_path / "policy.tar")
    files = unpacked(path)
    manifest = json.loads(files["manifest.json"])
    assert header.onnx and manifest["onnx"]["included"]
    assert manifest["training_type"] == "reinforcement"
    assert "exploration_rate" in " ".join(manifest["onnx"]["answer"])
    texts = ["where is my card", "what is the euro rate", "card"]
    confidences = onnx_confidences(files, texts, tmp_path)
    check_agreement(invoked(client, "policy", texts, 3), confidences, list(manifest["outputs"]))


def test_bad_ids_are_refused_with_field_violations(client: AgentTrainingClient) -> None:
    for fields, names in (
        ({"agent_id": ""}, {"agent_id"}),
        ({"agent_id": "no spaces allowed"}, {"agent_id"}),
        ({"agent_id": "sup", "version_id": "ver/../x"}, {"version_id"}),
    ):
        error = expect_error(client.export_agent_version, **fields)
        assert_status(error, grpc.StatusCode.INVALID_ARGUMENT)
        assert {violation.field for violation in error.field_violations} == names


def test_unknown_agent_or_version_is_not_found(
    client: AgentTrainingClient, supervised: str, tmp_path: Path
) -> None:
    error = expect_error(client.export_agent_version, "nobody", path=tmp_path / "x.tar")
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert error.code == "AGENT_NOT_FOUND"
    error = expect_error(client.export_agent_version, supervised, "ver_0123456789abcdef")
    assert_status(error, grpc.StatusCode.NOT_FOUND)
    assert error.code == "VERSION_NOT_FOUND"
    assert not (tmp_path / "x.tar").exists()


def test_an_agent_without_a_version_has_nothing_to_export(client: AgentTrainingClient) -> None:
    client.create_agent(agent_id="untrained")
    error = expect_error(client.export_agent_version, "untrained")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "NO_ACTIVE_VERSION"


def test_a_damaged_version_is_refused_with_a_clear_error(
    client: AgentTrainingClient, server: ServerThread, tmp_path: Path
) -> None:
    version_id = trained(
        client,
        "damaged",
        banking_examples(("card_arrival", "exchange_rate"), 10),
        SUPERVISED,
        epochs=1,
    )
    weights = server.config.data_dir / "artifacts" / "damaged" / version_id / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped bit in the last tensor's bytes
    weights.write_bytes(bytes(data))
    error = expect_error(client.export_agent_version, "damaged", path=tmp_path / "d.tar")
    assert_status(error, grpc.StatusCode.FAILED_PRECONDITION)
    assert error.code == "VERSION_DAMAGED" and "checksum" in error.message
    assert "ActivateAgentVersion" in error.hint
    assert not (tmp_path / "d.tar").exists() and not (tmp_path / "d.tar.partial").exists()
    assert not any((server.config.data_dir / "exports").iterdir())


def test_a_client_that_cancels_mid_stream_leaves_no_temporary_file(
    server: ServerThread, transfer: str
) -> None:
    exports = server.config.data_dir / "exports"
    with grpc.insecure_channel(server.address) as channel:
        stub = service_pb2_grpc.AgentTrainingServiceStub(channel)
        call = stub.ExportAgentVersion(
            service_pb2.ExportAgentVersionRequest(agent_id=transfer), timeout=300
        )
        header = next(call)
        assert header.header.size_bytes > 10 << 20  # many chunks still to come
        next(call)
        assert len(list(exports.iterdir())) == 1  # the bundle being streamed
        call.cancel()
    deadline = time.monotonic() + 30
    while any(exports.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(exports.iterdir())


def test_the_cli_writes_the_bundle_to_a_file(
    server: ServerThread, supervised: str, tmp_path: Path
) -> None:
    out = tmp_path / "bundle.tar"
    finished = subprocess.run(
        [CLI, "--target", server.address, "agents", "export", supervised, "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr
    shown = json.loads(finished.stdout)
    assert shown["path"] == str(out) and shown["onnx"] is True
    assert shown["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert shown["files"][0] == "manifest.json"
    with tarfile.open(out) as archive:
        assert archive.getnames() == shown["files"]

    refused = subprocess.run(
        [CLI, "--target", server.address, "agents", "export", "nobody", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert refused.returncode == 1 and "AGENT_NOT_FOUND" in refused.stderr
    assert "Traceback" not in refused.stderr


def test_a_bundle_without_onnx_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the server cannot write ONNX (here: onnx is not installed), the bundle goes
    without model.onnx and its manifest says why."""
    from agent_training_server.domain import AgentVersion
    from agent_training_server.engines import registry
    from agent_training_server.engines.base import Example, TrainSettings
    from agent_training_server.engines.supervised import SupervisedEngine
    from agent_training_server.services.export_bundle import write_bundle

    class Quiet:
        def progress(self, update: object) -> None:
            pass

        def cancelled(self) -> bool:
            return False

    examples = [Example("where is my card", "card_arrival"), Example("euro rate", "exchange_rate")]
    artifact = SupervisedEngine().train(
        examples, TrainSettings(epochs=1, validation_split=0.0), Quiet(), tmp_path / "work"
    )
    registry.save_artifact(artifact, tmp_path / "artifacts" / "a" / "ver_1")
    version = AgentVersion(
        version_id="ver_1",
        agent_id="a",
        version_number=1,
        source="training",
        training_type="supervised",
        outputs=tuple(artifact.outputs),
        artifact_dir="artifacts/a/ver_1",
    )
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    (tmp_path / "export").mkdir()
    bundle = write_bundle(tmp_path, version, tmp_path / "export")
    assert not bundle.onnx
    assert bundle.files == ["manifest.json", "model.safetensors", "spec.json"]
    with tarfile.open(bundle.path) as archive:
        member = archive.extractfile("manifest.json")
        assert member is not None
        manifest = json.load(io.TextIOWrapper(member))
    assert manifest["onnx"]["included"] is False
    assert "onnx" in manifest["onnx"]["reason"]
