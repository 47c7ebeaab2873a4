"""Row-sparse gradients and LazyAdam agree with torch's dense embedding_bag and Adam."""

from __future__ import annotations

import torch
from torch import nn

from agent_training_server.engines.sparse_rows import LazyAdam, bag_sum

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


def test_lazy_adam_moves_used_rows_as_adam_does_and_leaves_the_others() -> None:
    sparse = _table().requires_grad_()
    dense = _table().requires_grad_()
    lazy, reference = LazyAdam([sparse], lr=0.1), torch.optim.Adam([dense], lr=0.1)
    for _ in range(3):  # the same rows every step: Adam's moments of the others stay zero
        for table, optimizer, function in (
            (sparse, lazy, bag_sum),
            (dense, reference, _dense_bag_sum),
        ):
            optimizer.zero_grad()
            _loss(function(table, INDICES, OFFSETS, WEIGHTS)).backward()
            optimizer.step()
    torch.testing.assert_close(sparse.detach(), dense.detach())
    assert torch.equal(sparse.detach()[[0, 5]], _table()[[0, 5]])


def test_lazy_adam_sums_a_gradient_that_names_a_row_twice() -> None:
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
        optimizer = LazyAdam([table], lr=0.5)
        table.grad = grad
        optimizer.step()
        results.append(table.detach())
    assert torch.equal(results[0], results[1])


def test_lazy_adam_updates_a_dense_parameter_as_adam() -> None:
    ours, theirs = torch.ones(5, requires_grad=True), torch.ones(5, requires_grad=True)
    lazy, reference = LazyAdam([ours], lr=0.01), torch.optim.Adam([theirs], lr=0.01)
    for step in range(4):
        for parameter, optimizer in ((ours, lazy), (theirs, reference)):
            optimizer.zero_grad()
            (parameter * torch.arange(5.0) * (step + 1)).sum().backward()
            optimizer.step()
    torch.testing.assert_close(ours.detach(), theirs.detach())
    assert lazy.state_dict()["state"][0].keys() == reference.state_dict()["state"][0].keys()


def _dense_bag_sum(
    table: torch.Tensor, indices: torch.Tensor, offsets: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    return nn.functional.embedding_bag(
        indices, table, offsets, mode="sum", per_sample_weights=weights
    )
