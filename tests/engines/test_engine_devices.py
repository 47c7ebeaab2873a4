"""The n-gram engines (supervised, reinforcement) on their device: what they report, and where.

Everything here runs on the CPU, except the tests marked ``cuda``, which the conftest skips
where torch sees no GPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
import torch

from agent_training_server import devices
from agent_training_server.engines import registry, supervised
from agent_training_server.engines.base import Artifact, TrainingCancelled
from agent_training_server.engines.defaults import defaults_for
from agent_training_server.engines.parallel import DataParallel
from tests.engines.test_parallel import _in_two_processes
from tests.engines.test_resume import TIMING, StopAfterSteps, interactions
from tests.engines.test_supervised import banking

EXAMPLES = {"supervised": banking, "reinforcement": interactions}
ENGINES = sorted(EXAMPLES)


@pytest.fixture(autouse=True)
def server_setting_cpu() -> Iterator[None]:
    """The process's server setting is the CPU here, whatever ran before."""
    before = devices.setting()
    devices.use_setting("cpu")
    yield
    devices.use_setting(before)


def train(training_type: str, workdir: Path, reporter=None, **changes) -> Artifact:
    settings = dataclasses.replace(defaults_for(training_type), epochs=4, seed=3, **changes)
    engine = registry.get_engine(training_type)
    return engine.train(EXAMPLES[training_type](), settings, reporter or StopAfterSteps(), workdir)


def untimed(metrics: dict[str, float]) -> dict[str, float]:
    return {name: value for name, value in metrics.items() if name not in TIMING}


# On the CPU -----------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", ""])
@pytest.mark.parametrize("training_type", ENGINES)
def test_on_the_cpu_the_artifact_says_cpu_and_float32(
    training_type: str, device: str, tmp_path: Path
) -> None:
    """Named, or the server's setting (an empty device): the CPU, in float32."""
    artifact = train(training_type, tmp_path, device=device)
    assert (artifact.device, artifact.precision) == ("cpu", "float32")
    assert {tensor.device.type for tensor in artifact.tensors.values()} == {"cpu"}


@pytest.mark.parametrize("training_type", ENGINES)
def test_on_the_cpu_a_seed_gives_the_same_tensors_and_metrics(
    training_type: str, tmp_path: Path
) -> None:
    first = train(training_type, tmp_path / "first", device="cpu")
    second = train(training_type, tmp_path / "second", device="cpu")
    assert untimed(first.metrics) == untimed(second.metrics)
    assert first.tensors.keys() == second.tensors.keys()
    for name, tensor in first.tensors.items():
        assert torch.equal(tensor, second.tensors[name]), name


def test_gradients_are_row_sparse_but_in_a_data_parallel_job_on_gpus() -> None:
    cpu, gpu = torch.device("cpu"), torch.device("cuda:0")
    assert supervised.sparse_gradients(cpu, 1)
    assert supervised.sparse_gradients(cpu, 4)  # gloo sums sparse gradients
    assert supervised.sparse_gradients(gpu, 1)
    assert not supervised.sparse_gradients(gpu, 2)  # NCCL has no sparse all-reduce


def _dense_data_parallel(parallel: DataParallel, folder: Path) -> None:
    """A supervised job's share with dense gradients, as a data-parallel job on GPUs trains."""
    engine = registry.get_engine("supervised")
    engine.parallel = parallel
    settings = dataclasses.replace(defaults_for("supervised"), epochs=4, seed=3, device="cpu")
    with mock.patch.object(supervised, "sparse_gradients", return_value=False):
        artifact = engine.train(
            banking(), settings, StopAfterSteps(), folder / f"rank{parallel.rank}"
        )
    torch.save(
        {"tensors": artifact.tensors, "metrics": artifact.metrics},
        folder / f"rank{parallel.rank}.pt",
    )


def test_dense_gradients_keep_data_parallel_processes_in_step(tmp_path: Path) -> None:
    """The dense path (DDP over a dense EmbeddingBag gradient), here through gloo."""
    _in_two_processes(_dense_data_parallel, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(2)]
    for name, tensor in ranks[0]["tensors"].items():
        assert torch.equal(tensor, ranks[1]["tensors"][name]), name
    alone = train("supervised", tmp_path / "alone", device="cpu")
    assert ranks[0]["metrics"]["num_workers"] == 2
    assert ranks[0]["metrics"]["validation_accuracy"] >= alone.metrics["validation_accuracy"] - 0.1


# On a GPU -------------------------------------------------------------------------------------


def answers(artifact: Artifact, texts: list[str]) -> np.ndarray:
    return registry.load_predictor(artifact.spec, artifact.tensors).predict_proba(texts)


@pytest.mark.cuda
@pytest.mark.parametrize("training_type", ENGINES)
def test_on_the_gpu_trains_there_saves_from_the_cpu_and_answers_as_on_the_cpu(
    training_type: str, tmp_path: Path
) -> None:
    on_gpu = train(training_type, tmp_path / "gpu", device="cuda:0")
    on_cpu = train(training_type, tmp_path / "cpu", device="cpu")
    assert (on_gpu.device, on_gpu.precision) == ("cuda:0", "float32")
    assert {tensor.device.type for tensor in on_gpu.tensors.values()} == {"cpu"}
    for name in ("accuracy", "validation_accuracy"):
        assert on_gpu.metrics[name] == pytest.approx(on_cpu.metrics[name], abs=0.05), name
    texts = [example.input for example in EXAMPLES[training_type]()]
    gpu_best = answers(on_gpu, texts).argmax(axis=1)
    cpu_best = answers(on_cpu, texts).argmax(axis=1)
    assert np.mean(gpu_best == cpu_best) >= 0.95


@pytest.mark.cuda
@pytest.mark.parametrize("training_type", ENGINES)
def test_on_the_gpu_a_stopped_job_resumes_from_its_checkpoint(
    training_type: str, tmp_path: Path
) -> None:
    """The checkpoint is read onto the CPU; the optimizer's state goes back to the GPU."""
    changes = {"device": "cuda:0", "early_stopping_patience": 0, "batch_size": 8}
    unbroken = train(training_type, tmp_path / "unbroken", **changes)
    with pytest.raises(TrainingCancelled):
        train(training_type, tmp_path / "split", StopAfterSteps(20), **changes)
    resumed = train(training_type, tmp_path / "split", **changes)
    assert (resumed.device, resumed.metrics["epochs_run"]) == ("cuda:0", 4)
    for name in ("accuracy", "validation_accuracy"):
        assert resumed.metrics[name] == pytest.approx(unbroken.metrics[name], abs=0.05), name
