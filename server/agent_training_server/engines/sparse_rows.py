"""Training a bag-of-features linear layer at the cost of the rows a batch uses.

A mini-batch of short texts touches a few thousand of the tens of thousands of n-gram rows. Dense
training pays for every row at every step: a zeroed gradient the size of the whole table, and
Adam's update of every entry. Here the gradient holds only the batch's rows (a sparse tensor,
summed per row in the backward pass) and ``LazyAdam`` updates only those rows, so a step costs
what its examples and their features cost, whatever the number of rows. Everything runs on the
device the weights are on, the CPU or a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn
from torch.optim.adam import adam


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


class LazyAdam(torch.optim.Optimizer):
    """Adam that, for a sparse gradient, moves only the rows the gradient has.

    Dense gradients get Adam's update. For sparse ones the rows are gathered, updated by the
    same fused Adam kernel as a small dense block, and put back; the moments and weights of the
    other rows stay as they are, as in torch.optim.SparseAdam (a row's moments decay only at the
    steps that use it; bias correction counts the parameter's steps). The state (``step``,
    ``exp_avg``, ``exp_avg_sq``) has Adam's names and shapes, so its checkpoints look like Adam's.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """Apply one update to every parameter that has a gradient."""
        for group in self.param_groups:
            blocks = [self._block(param) for param in group["params"] if param.grad is not None]
            if not blocks:
                continue
            beta1, beta2 = group["betas"]
            # One fused kernel for all blocks; it also counts each parameter's step.
            adam(
                [block.weights for block in blocks],
                [block.grad for block in blocks],
                [block.exp_avg for block in blocks],
                [block.exp_avg_sq for block in blocks],
                [],
                [self.state[block.param]["step"] for block in blocks],
                fused=True,
                amsgrad=False,
                beta1=beta1,
                beta2=beta2,
                lr=group["lr"],
                weight_decay=0.0,
                eps=group["eps"],
                maximize=False,
            )
            for block in blocks:
                block.put_back(self.state[block.param])

    def _block(self, param: torch.Tensor) -> _Block:
        """What to update of a parameter: all of it (dense gradient) or copies of its rows."""
        state = self.state[param]
        if not state:
            # The fused kernel reads the step count where the weights are (on a GPU, there).
            state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
        elif state["step"].device != param.device:
            # Loaded from a checkpoint: load_state_dict moves the moments to the weights' device
            # but leaves the step count where the file put it, on the CPU.
            state["step"] = state["step"].to(param.device)
        grad = param.grad
        assert grad is not None
        if not grad.is_sparse:
            return _Block(param, param, grad, state["exp_avg"], state["exp_avg_sq"])
        rows, values = _unique_rows(grad)
        return _Block(
            param,
            param.index_select(0, rows),
            values,
            state["exp_avg"].index_select(0, rows),
            state["exp_avg_sq"].index_select(0, rows),
            rows,
        )


@dataclasses.dataclass
class _Block:
    """Tensors of one parameter for the fused Adam kernel; ``rows`` when they are copies."""

    param: torch.Tensor
    weights: torch.Tensor
    grad: torch.Tensor
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor
    rows: torch.Tensor | None = None

    def put_back(self, state: dict[str, Any]) -> None:
        """Write updated row copies into the parameter and its moments."""
        # index_copy_ of unique rows: several times faster than index_add_ on CPU.
        if self.rows is not None:
            self.param.index_copy_(0, self.rows, self.weights)
            state["exp_avg"].index_copy_(0, self.rows, self.exp_avg)
            state["exp_avg_sq"].index_copy_(0, self.rows, self.exp_avg_sq)


def _unique_rows(grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows and values of a sparse gradient with each row once, in increasing order."""
    rows = grad._indices()[0]
    # A single process's gradient is already so (row_gradient); coalescing it again costs a sort.
    if not bool((rows[1:] > rows[:-1]).all()):
        grad = grad.coalesce()
        rows = grad._indices()[0]
    return rows, grad._values()
