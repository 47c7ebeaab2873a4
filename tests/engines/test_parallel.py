"""Data parallelism without Ray: gradient averaging, and the encoder engines in two processes.

The two-process tests start a gloo group of two processes on this machine (a file store in the
test's folder), as Ray Train starts one across its workers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import ClassVar
from unittest import mock

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from agent_training_server.engines import precision, registry, transfer
from agent_training_server.engines.base import TrainingCancelled
from agent_training_server.engines.checkpoint import load_checkpoint
from agent_training_server.engines.defaults import defaults_for
from agent_training_server.engines.parallel import SINGLE_PROCESS, DataParallel
from agent_training_server.engines.supervised import SupervisedEngine
from tests.engines.test_resume import StopAfterSteps
from tests.engines.test_supervised import banking

WORLD = 2


def _in_two_processes(work, folder: Path, *args) -> None:
    """Run ``work(parallel, folder, *args)`` in each of two processes joined in a gloo group."""
    mp.spawn(_join, args=(work, folder, *args), nprocs=WORLD)


def _join(rank: int, work, folder: Path, *args) -> None:
    torch.set_num_threads(1)  # two processes on a small machine; and the same sums run after run
    dist.init_process_group(
        "gloo", init_method=f"file://{folder / 'store'}", rank=rank, world_size=WORLD
    )
    try:
        work(DataParallel(rank, WORLD), folder, *args)
    finally:
        dist.destroy_process_group()


def _model() -> nn.Module:
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    model[0].bias.requires_grad_(False)  # a frozen parameter: no gradient to average
    return model


def _gradients_of_rank(rank: int) -> list[torch.Tensor]:
    """Different gradients per process (None where the parameter is frozen)."""
    generator = torch.Generator().manual_seed(rank)
    return [torch.randn(p.shape, generator=generator) for p in _model().parameters()]


def _average(parallel: DataParallel, folder: Path) -> None:
    model = _model()
    for parameter, gradient in zip(
        model.parameters(), _gradients_of_rank(parallel.rank), strict=True
    ):
        if parameter.requires_grad:
            parameter.grad = gradient.clone()
    parallel.average_gradients(model.parameters())
    torch.save([p.grad for p in model.parameters()], folder / f"rank{parallel.rank}.pt")


def test_gradients_are_replaced_by_their_mean_over_the_processes(tmp_path: Path) -> None:
    _in_two_processes(_average, tmp_path)
    expected = [
        (a + b) / 2 for a, b in zip(_gradients_of_rank(0), _gradients_of_rank(1), strict=True)
    ]
    frozen = [not p.requires_grad for p in _model().parameters()]
    for rank in range(WORLD):
        averaged = torch.load(tmp_path / f"rank{rank}.pt")
        for gradient, mean, skipped in zip(averaged, expected, frozen, strict=True):
            if skipped:
                assert gradient is None
            else:
                torch.testing.assert_close(gradient, mean, rtol=0, atol=1e-6)


def test_one_process_leaves_gradients_untouched() -> None:
    model = _model()
    gradients = _gradients_of_rank(0)
    for parameter, gradient in zip(model.parameters(), gradients, strict=True):
        parameter.grad = gradient.clone()
    SINGLE_PROCESS.average_gradients(model.parameters())  # no process group: none is needed
    for parameter, gradient in zip(model.parameters(), gradients, strict=True):
        assert torch.equal(parameter.grad, gradient)


def test_the_precision_step_runs_its_hook_between_backward_and_step() -> None:
    model = nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    before = model.weight.detach().clone()
    seen = []

    def hook() -> None:
        seen.append((model.weight.grad is not None, torch.equal(model.weight, before)))

    loss = model(torch.ones(4, 3)).sum()
    precision.for_device("cpu").step(loss, optimizer, before_step=hook)
    assert seen == [(True, True)]  # gradients there, weights not yet moved
    assert not torch.equal(model.weight, before)


FEW_SHOT_CHANGES = {"epochs": 2, "batch_size": 8, "early_stopping_patience": 0}
"""20 examples: 10 a process, 3 steps of 4, 4 and 2 an epoch; a stop before the 5th step falls
inside the second epoch."""


def _few_shot(parallel: DataParallel, workdir: Path, reporter: StopAfterSteps, every: int):
    engine = registry.get_engine("few_shot")
    engine.parallel = parallel
    engine.checkpoint_every_steps = every
    settings = dataclasses.replace(defaults_for("few_shot"), **FEW_SHOT_CHANGES)
    return engine.train(banking(per_intent=2), settings, reporter, workdir)


def _few_shot_stopped_and_resumed(parallel: DataParallel, folder: Path) -> None:
    own = folder / f"rank{parallel.rank}"
    whole = _few_shot(parallel, own / "whole", StopAfterSteps(), every=0)
    with pytest.raises(TrainingCancelled):
        _few_shot(parallel, own / "split", StopAfterSteps(4), every=2)
    stopped_at = load_checkpoint(own / "split")["state"]
    resumed = _few_shot(parallel, own / "split", StopAfterSteps(), every=2)
    torch.save(
        {
            "whole": whole.tensors,
            "resumed": resumed.tensors,
            "metrics": whole.metrics,
            "stopped_at": (stopped_at["epoch"], stopped_at["step_in_epoch"]),
            "last_whole": load_checkpoint(own / "whole")["model"],
            "last_resumed": load_checkpoint(own / "split")["model"],
        },
        folder / f"rank{parallel.rank}.pt",
    )


def test_few_shot_in_two_processes_stays_in_step_and_resumes_like_an_unbroken_run(
    tmp_path: Path,
) -> None:
    _in_two_processes(_few_shot_stopped_and_resumed, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    assert ranks[0]["stopped_at"] == (1, 1)  # inside the second epoch
    assert ranks[0]["metrics"]["num_workers"] == WORLD
    for name, tensor in ranks[0]["whole"].items():
        # The processes' weights never part: the same averaged gradients, the same steps.
        assert torch.equal(tensor, ranks[1]["whole"][name]), name
        assert torch.equal(tensor, ranks[0]["resumed"][name]), name
    for name, tensor in ranks[0]["last_whole"].items():
        assert torch.equal(tensor, ranks[0]["last_resumed"][name]), name
    assert ranks[0]["metrics"] == ranks[1]["metrics"] | {
        key: ranks[0]["metrics"][key] for key in ("duration_seconds", "examples_per_second")
    }


class _RecordedCompanion(SupervisedEngine):
    """Transfer's n-gram companion, noting the share of the job it trains."""

    shares: ClassVar[list[DataParallel]] = []

    def train(self, *args, **kwargs):
        self.shares.append(self.parallel)
        return super().train(*args, **kwargs)


def _transfer(parallel: DataParallel, folder: Path) -> None:
    engine = registry.get_engine("transfer")
    engine.parallel = parallel
    settings = dataclasses.replace(defaults_for("transfer"), epochs=1, batch_size=8)
    workdir = folder / f"rank{parallel.rank}"
    with mock.patch.object(transfer, "SupervisedEngine", _RecordedCompanion):
        artifact = engine.train(banking(per_intent=3), settings, StopAfterSteps(), workdir)
    companion_checkpoint = load_checkpoint(workdir / "ngrams")
    torch.save(
        {
            "tensors": artifact.tensors,
            "metrics": artifact.metrics,
            "companion_shares": [(s.rank, s.world_size) for s in _RecordedCompanion.shares],
            "companion_epochs": companion_checkpoint["state"]["epoch"],
        },
        folder / f"rank{parallel.rank}.pt",
    )


def test_transfer_in_two_processes_trains_its_companion_data_parallel_too(
    tmp_path: Path,
) -> None:
    _in_two_processes(_transfer, tmp_path)
    ranks = [torch.load(tmp_path / f"rank{rank}.pt") for rank in range(WORLD)]
    assert ranks[0]["metrics"]["num_workers"] == WORLD
    assert ranks[0]["companion_epochs"] > 0
    for rank, saved in enumerate(ranks):
        assert saved["companion_shares"] == [(rank, WORLD)]
    assert any(name.startswith("ngrams.") for name in ranks[0]["tensors"])
    for name, tensor in ranks[0]["tensors"].items():
        # The n-gram companion's weights too: it averaged its gradients across the processes.
        assert torch.equal(tensor, ranks[1]["tensors"][name]), name
