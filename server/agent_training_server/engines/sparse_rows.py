"""Training a bag-of-features linear layer at the cost of the rows a batch uses.

A mini-batch of short texts touches a few thousand of the tens of thousands of n-gram rows. Dense
training pays for every row at every step: a zeroed gradient the size of the whole table, and
the optimizer's update of every entry. Here the gradient holds only the batch's rows (a sparse
tensor, summed per row in the backward pass) and ``SparseAdagrad`` updates only those rows, so a
step costs what its examples and their features cost, whatever the number of rows. Everything
runs on the device the weights are on, the CPU or a GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


class _BagSum(torch.autograd.Function):
    """Weighted sums of weight rows per bag, with a row-compact sparse gradient."""

    @staticmethod
    def forward(
        ctx: Any,
        weight: torch.Tensor,
        indices: torch.Tensor,
        offsets: torch.Tensor,
        weights: torch.Tensor,
    ) -> torch.Tensor:
        ctx.save_for_backward(indices, offsets, weights)
        ctx.rows = weight.shape[0]
        return nn.functional.embedding_bag(
            indices, weight, offsets, mode="sum", per_sample_weights=weights
        )

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        indices, offsets, weights = ctx.saved_tensors
        used, grad = row_gradient(grad_output, indices, offsets, weights)
        size = (ctx.rows, grad_output.shape[1])
        sparse = torch.sparse_coo_tensor(
            used.unsqueeze(0), grad, size, is_coalesced=True, check_invariants=False
        )
        return sparse, None, None, None


def row_gradient(
    grad_output: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows a batch uses (sorted, unique) and their gradient, one summed row each.

    Each entry (bag b, row r, weight w) adds w * grad_output[b] to row r. Grouping the entries by
    row (a stable sort) turns that sum into one more bag sum, over the small grad_output: the
    gradient is written once per used row, never once per entry nor once per table row.
    """
    bags = torch.repeat_interleave(
        torch.arange(len(offsets), dtype=torch.int64, device=offsets.device),
        torch.diff(offsets, append=offsets.new_tensor([len(indices)])),
    )
    # int32 keys sort about twice as fast as int64 ones; row ids fit easily.
    rows, order = torch.sort(indices.to(torch.int32), stable=True)
    used, counts = torch.unique_consecutive(rows, return_counts=True)
    starts = torch.cumsum(counts, 0) - counts
    if not len(used):
        return used, grad_output.new_zeros((0, grad_output.shape[1]))
    grad = nn.functional.embedding_bag(
        bags[order], grad_output, starts, mode="sum", per_sample_weights=weights[order]
    )
    return used.to(torch.int64), grad


def bag_sum(
    weight: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """``embedding_bag(mode="sum")`` whose weight gradient is sparse, one entry per used row."""
    result: torch.Tensor = _BagSum.apply(weight, indices, offsets, weights)
    return result


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's operations on one thread inside the block, then restore the thread count.

    A row-sparse step is dozens of operations of well under a millisecond each. Split over
    threads, each one waits for the slowest: on a shared machine, one thread descheduled by
    another process stalls every operation (training up to ten times slower on 2 busy cores),
    while one thread loses at most the second core's share on an idle machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class SparseAdagrad(torch.optim.Adagrad):
    """torch's Adagrad, which moves only the rows a sparse gradient has, and exactly as dense.

    Adagrad's state is one running sum of squared gradients per entry: a row without gradient
    keeps its sum and its weights, so updating only the used rows is the dense update, not an
    approximation of it (Adam's moments, by contrast, decay at every step). Per-row step sizes
    also suit n-gram features: a rare n-gram's few updates stay large. Steps run with sparse
    invariant checks explicitly off: the gradients come sorted and unique from row_gradient
    (or summed by DistributedDataParallel, which Adagrad coalesces), and torch otherwise warns
    once per process that it skips them.
    """

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        with torch.sparse.check_sparse_tensor_invariants(enable=False):
            super().step()
