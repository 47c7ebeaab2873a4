"""Row-sparse gradients and SparseAdagrad agree with torch's dense embedding_bag and Adagrad."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from agent_training_server.engines.sparse_rows import SparseAdagrad, bag_sum

# Three bags over a table of 6 rows: row 4 twice in the second bag, rows 0 and 5 never used.
INDICES = torch.tensor([1, 4, 2, 4, 4, 3, 1])
OFFSETS = torch.tensor([0, 2, 5])
WEIGHTS = torch.tensor([0.5, 1.0, 2.0, 0.25, 0.75, 1.5, -1.0])


def _table() -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, 6 * 3).reshape(6, 3)


def _loss(output: torch.Tensor) -> torch.Tensor:
    return (output * torch.arange(9.0).reshape(3, 3)).sum()


def test_the_sparse_gradient_is_the_dense_one_on_the_used_rows() -> None:
    sparse = _table().requires_grad_()
    _loss(bag_sum(sparse, INDICES, OFFSETS, WEIGHTS)).backward()
    dense = _table().requires_grad_()
    expected = nn.functional.embedding_bag(
        INDICES, dense, OFFSETS, mode="sum", per_sample_weights=WEIGHTS
    )
    _loss(expected).backward()
    assert sparse.grad is not None and dense.grad is not None
    assert sparse.grad.is_sparse
    assert sparse.grad._indices()[0].tolist() == [1, 2, 3, 4]  # each used row once, in order
    torch.testing.assert_close(sparse.grad.to_dense(), dense.grad)


def test_sparse_adagrad_is_dense_adagrad_and_leaves_unused_rows() -> None:
    sparse = _table().requires_grad_()
    dense = _table().requires_grad_()
    ours, reference = SparseAdagrad([sparse], lr=0.1), torch.optim.Adagrad([dense], lr=0.1)
    for step in range(3):
        # Different rows at different steps: a row without gradient must keep its state.
        used = slice(0, 5 + step) if step != 1 else slice(2, 7)
        indices, weights = INDICES[used], WEIGHTS[used]
        offsets = torch.tensor([0, 1, 2])
        for table, optimizer, function in (
            (sparse, ours, bag_sum),
            (dense, reference, _dense_bag_sum),
        ):
            optimizer.zero_grad()
            _loss(function(table, indices, offsets, weights)).backward()
            optimizer.step()
    torch.testing.assert_close(sparse.detach(), dense.detach())
    torch.testing.assert_close(ours.state[sparse]["sum"], reference.state[dense]["sum"])
    assert torch.equal(sparse.detach()[[0, 5]], _table()[[0, 5]])


def test_sparse_adagrad_sums_a_gradient_that_names_a_row_twice() -> None:
    # Data-parallel processes' gradients are summed by concatenation: rows may repeat.
    twice = torch.sparse_coo_tensor(
        torch.tensor([[3, 1, 3]]), torch.ones(3, 2), (4, 2), check_invariants=True
    )
    once = torch.sparse_coo_tensor(
        torch.tensor([[1, 3]]), torch.tensor([[1.0] * 2, [2.0] * 2]), (4, 2), check_invariants=True
    )
    results = []
    for grad in (twice, once):
        table = torch.zeros(4, 2, requires_grad=True)
        optimizer = SparseAdagrad([table], lr=0.5)
        table.grad = grad
        optimizer.step()
        results.append(table.detach())
    assert torch.equal(results[0], results[1])


def test_a_sparse_step_does_not_warn() -> None:
    table = _table().requires_grad_()
    optimizer = SparseAdagrad([table], lr=0.1)
    _loss(bag_sum(table, INDICES, OFFSETS, WEIGHTS)).backward()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimizer.step()


def _dense_bag_sum(
    table: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    return nn.functional.embedding_bag(
        indices, table, offsets, mode="sum", per_sample_weights=weights
    )
