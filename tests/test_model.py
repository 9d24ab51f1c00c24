"""The learner's math: losses and gradients, sampling, tables, registry, top-N."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consumers.model.config import ModelConfig
from consumers.model.learner import MatrixFactorization
from consumers.model.losses import bpr_loss, triplet_loss
from consumers.model.registry import IdRegistry
from consumers.model.sampling import hardest_negatives, uniform_candidates, uniform_negatives
from consumers.model.tables import EmbeddingTable, coalesce
from consumers.model.topn import top_n


@pytest.mark.parametrize("loss", [bpr_loss, triplet_loss])
def test_loss_derivative_matches_autograd(loss) -> None:  # type: ignore[no-untyped-def]
    diff = torch.tensor([-3.0, -0.5, 0.2, 0.99, 1.5, 4.0], dtype=torch.float64, requires_grad=True)
    value, derivative = loss(diff)
    value.sum().backward()
    assert diff.grad is not None
    torch.testing.assert_close(derivative, diff.grad)


def test_learn_applies_the_autograd_gradient_with_sgd() -> None:
    config = ModelConfig(dim=4, optimizer="sgd", learning_rate=0.1, l2=0.01, seed=3)
    model = MatrixFactorization(config)
    model.users.add_many(["a", "b"])
    model.items.add_many([1, 2, 3])
    model.sync_rows()
    users = torch.tensor([0, 1, 0])
    positives = torch.tensor([0, 1, 2])
    negatives = torch.tensor([1, 2, 0])
    weights = torch.tensor([1.0, 0.5, 2.0])
    u = model.user_table.weight.clone().requires_grad_(True)
    v = model.item_table.weight.clone().requires_grad_(True)
    diff = (u[users] * (v[positives] - v[negatives])).sum(1)
    l2 = (
        0.5
        * config.l2
        * ((u[users] ** 2).sum(1) + (v[positives] ** 2).sum(1) + (v[negatives] ** 2).sum(1))
    )
    objective = (weights * torch.nn.functional.softplus(-diff)).sum() + l2.sum()
    objective.backward()
    assert u.grad is not None and v.grad is not None
    model.learn(users, positives, negatives, weights)
    torch.testing.assert_close(model.user_table.weight, (u - 0.1 * u.grad).detach())
    torch.testing.assert_close(model.item_table.weight, (v - 0.1 * v.grad).detach())


def test_uniform_negatives_never_return_the_positive_and_cover_the_rest() -> None:
    generator = torch.Generator().manual_seed(0)
    positives = torch.full((60_000,), 2)
    negatives = uniform_negatives(positives, 5, generator)
    assert not torch.any(negatives == positives)
    counts = torch.bincount(negatives, minlength=5).tolist()
    assert counts[2] == 0
    assert all(abs(count - 15_000) < 600 for i, count in enumerate(counts) if i != 2)


def test_uniform_negatives_need_two_items() -> None:
    with pytest.raises(ValueError, match="two items"):
        uniform_negatives(torch.tensor([0]), 1, torch.Generator())


def test_uniform_candidates_are_independent_draws_other_than_the_positive() -> None:
    positives = torch.tensor([0, 3, 4])
    candidates = uniform_candidates(positives, 5, 1000, torch.Generator().manual_seed(1))
    assert candidates.shape == (3, 1000)
    assert not torch.any(candidates == positives.unsqueeze(1))
    assert all(len(set(row)) == 4 for row in candidates.tolist())


def test_hardest_negative_is_the_top_scoring_candidate_not_excluded() -> None:
    candidates = torch.tensor([[4, 5, 6], [7, 8, 9], [1, 2, 3]])
    scores = torch.tensor([[0.1, 0.9, 0.5], [2.0, -1.0, 0.0], [1.0, 2.0, 3.0]])
    excluded = torch.tensor([[False, False, False], [True, False, False], [True, True, True]])
    chosen = hardest_negatives(candidates, scores, excluded)
    assert chosen.tolist() == [5, 9, 1]  # the best; the best not excluded; all excluded: first


def test_sample_negatives_picks_the_hardest_of_the_draws_the_user_has_not_watched() -> None:
    model = MatrixFactorization(ModelConfig(dim=4, negatives=6, seed=2))
    model.users.add_many(["a", "b"])
    model.items.add_many(range(30))
    model.sync_rows()
    model.history[0] = {1, 2, 3, 4, 5}
    users, items = torch.tensor([0, 0, 1]), torch.tensor([7, 8, 9])
    replay = torch.Generator().manual_seed(0)
    replay.set_state(model.generator.get_state())
    negatives = model.sample_negatives(items, users)
    candidates = uniform_candidates(items, 30, 6, replay)
    scores = model.user_table.weight[users] @ model.item_table.weight.T
    watched = [{1, 2, 3, 4, 5, 7, 8}, {1, 2, 3, 4, 5, 7, 8}, {9}]
    for row, negative in enumerate(negatives.tolist()):
        allowed = [c for c in candidates[row].tolist() if c not in watched[row]]
        assert negative == max(allowed, key=lambda c: float(scores[row, c]))


def test_sample_negatives_never_returns_an_item_the_user_watched() -> None:
    model = MatrixFactorization(ModelConfig(dim=4, negatives=64))
    model.users.add_many(["a"])
    model.items.add_many(range(10))
    model.sync_rows()
    model.history[0] = {0, 1, 2, 3, 4}
    items = torch.full((500,), 5)
    negatives = model.sample_negatives(items, torch.zeros(500, dtype=torch.long))
    assert negatives is not None
    assert set(negatives.tolist()) <= {6, 7, 8, 9}
    assert model.sample_negatives(items[:3]) is not None  # without users: uniform, any item


def test_registry_grows_without_collisions_and_keeps_raw_ids() -> None:
    registry = IdRegistry()
    rows = registry.add_many(["a", 7, "b", "7", "a"])
    assert rows.tolist() == [0, 1, 2, 1, 0]
    assert registry.raws([0, 1, 2]) == ["a", 7, "b"]
    assert "7" in registry and 7 in registry and "c" not in registry
    assert registry.row("missing") is None
    assert len(registry) == 3


def test_tables_grow_in_chunks_and_keep_rows() -> None:
    table = EmbeddingTable(dim=3, init_std=0.1, generator=torch.Generator().manual_seed(0))
    table.grow_to(10)
    before = table.weight.clone()
    capacity = table.capacity
    table.grow_to(capacity + 1)
    assert table.capacity >= int(capacity * 1.5)
    torch.testing.assert_close(table.weight[:10], before)
    assert table.rows == capacity + 1
    assert torch.all(table.weight[10:].abs().sum(1) > 0)


def test_coalesce_sums_repeated_rows() -> None:
    rows, grads = coalesce(torch.tensor([3, 1, 3]), torch.tensor([[1.0], [2.0], [4.0]]))
    assert rows.tolist() == [1, 3]
    assert grads.tolist() == [[2.0], [5.0]]


def test_top_n_orders_and_excludes() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[3.0, 0.0], [2.0, 1.0], [1.0, 3.0], [0.0, 2.0]])
    scores, indices = top_n(users, items, 3, torch.tensor([0, 1]), torch.tensor([0, 2]))
    assert indices[0].tolist() == [1, 2, 3]
    assert indices[1].tolist() == [3, 1, 0]
    assert torch.all(torch.isfinite(scores))


def test_top_n_marks_missing_slots_with_minus_infinity() -> None:
    scores, _ = top_n(torch.ones(1, 2), torch.ones(2, 2), 5, torch.tensor([0]), torch.tensor([1]))
    assert scores.shape == (1, 2)
    assert torch.isinf(scores[0, 1])


def test_recommend_excludes_watched_items() -> None:
    model = MatrixFactorization(ModelConfig(dim=8, top_n=5))
    users = torch.from_numpy(model.users.add_many(["u"] * 3))
    items = torch.from_numpy(model.items.add_many(range(10))[:3])
    model.learn(users, items, model.sample_negatives(items), torch.ones(3))
    _, recommended = model.recommend(torch.tensor([0]), 10)
    assert set(recommended[0, :7].tolist()).isdisjoint(items.tolist())


@pytest.mark.parametrize("loss", ["bpr", "triplet"])
@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_learning_separates_two_planted_groups(loss: str, optimizer: str) -> None:
    """Users of group g watch items of group g: after training they rank them first."""
    config = ModelConfig(dim=8, loss=loss, optimizer=optimizer, learning_rate=0.1, seed=1)  # type: ignore[arg-type]
    model = MatrixFactorization(config)
    rng = np.random.default_rng(0)
    model.users.add_many(range(20))
    model.items.add_many(range(40))
    for _ in range(300):
        users = rng.integers(0, 20, 64)
        items = (users % 2) * 20 + rng.integers(0, 20, 64)
        item_rows = torch.from_numpy(items)
        model.learn(
            torch.from_numpy(users), item_rows, model.sample_negatives(item_rows), torch.ones(64)
        )
    scores = model.user_table.weight @ model.item_table.weight.T
    own = torch.stack([scores[u, (u % 2) * 20 : (u % 2) * 20 + 20].mean() for u in range(20)])
    other = torch.stack(
        [scores[u, (1 - u % 2) * 20 : (1 - u % 2) * 20 + 20].mean() for u in range(20)]
    )
    assert torch.all(own > other)


def test_a_non_finite_batch_is_skipped_and_tables_stay_finite() -> None:
    model = MatrixFactorization(ModelConfig(dim=4, optimizer="sgd"))
    users = torch.from_numpy(model.users.add_many(["a", "b"]))
    items = torch.from_numpy(model.items.add_many([1, 2]))
    model.sync_rows()
    before = model.item_table.weight.clone()
    loss = model.learn(users, items, torch.tensor([1, 0]), torch.tensor([1.0, float("inf")]))
    assert loss != loss  # NaN
    assert model.skipped_batches == 1
    torch.testing.assert_close(model.item_table.weight, before)
    assert torch.isfinite(model.user_table.weight).all()


def test_state_round_trip_resumes_identically() -> None:
    config = ModelConfig(dim=4, seed=5)
    first, second = MatrixFactorization(config), MatrixFactorization(config)
    for model in (first, second):
        items = torch.from_numpy(model.items.add_many([1, 2, 3, "x"]))
        users = torch.from_numpy(model.users.add_many(["a", 7, "a", "b"]))
        model.learn(users, items, model.sample_negatives(items), torch.ones(4))
    second.forget_user(7)
    restored = MatrixFactorization(config)
    restored.load_state(second.state())
    for model in (second, restored):
        items = torch.from_numpy(model.items.add_many([3, "y"]))
        users = torch.from_numpy(model.users.add_many(["b", "c"]))
        model.learn(users, items, model.sample_negatives(items), torch.ones(2))
    torch.testing.assert_close(restored.user_table.weight, second.user_table.weight)
    torch.testing.assert_close(restored.item_table.weight, second.item_table.weight)
    assert restored.users.row(7) is None and restored.users.row("c") == 3
    assert restored.history == second.history
    assert restored.items.raws(range(5)) == [1, 2, 3, "x", "y"]
