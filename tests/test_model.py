"""The learner's math: the kernel against autograd, sampling, tables, registry, top-N."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consumers.model.base import Batch
from consumers.model.config import ModelConfig
from consumers.model.kernel import hyper_parameters, pairwise_step
from consumers.model.mf import MatrixFactorization
from consumers.model.popularity import Popularity
from consumers.model.registry import IdRegistry
from consumers.model.sampling import POOL, uniform_candidates
from consumers.model.tables import EmbeddingTable
from consumers.model.topn import largest, top_n


def _reference_step(
    u: torch.Tensor,
    p: torch.Tensor,
    q: torch.Tensor,
    accumulators: list[torch.Tensor],
    weight: float,
    config: ModelConfig,
) -> list[torch.Tensor]:
    """One triplet's update by autograd: the rows' new (vector, accumulator) pairs."""
    rows = [row.double().clone().requires_grad_(True) for row in (u, p, q)]
    diff = (rows[0] * (rows[1] - rows[2])).sum()
    if config.loss == "bpr":
        loss = torch.nn.functional.softplus(-diff)
    else:
        loss = (config.margin - diff).clamp_min(0.0)
    objective = weight * loss + 0.5 * config.l2 * sum((row**2).sum() for row in rows)
    objective.backward()
    moved = []
    for row, before in zip(rows, accumulators, strict=True):
        grad = row.grad
        assert grad is not None
        if config.optimizer == "adagrad":
            accumulator = before + grad.pow(2).mean()
            moved += [row - config.learning_rate / (accumulator.sqrt() + 1e-8) * grad, accumulator]
        else:
            moved += [row - config.learning_rate * grad, before]
    return [t.detach().float() for t in moved]


def _kernel(
    model: MatrixFactorization,
    users: list[int],
    positives: list[int],
    candidates: list[list[int]],
    weights: list[float],
) -> tuple[float, float, int, list[int]]:
    """`pairwise_step` on the model's tables and history with these candidates, one pass."""
    model.sync_rows()
    negatives = np.zeros((1, len(users)), dtype=np.int64)
    loss, weight, skipped = _step(
        model,
        np.array(users, dtype=np.int64),
        np.array(positives, dtype=np.int64),
        np.array(weights, dtype=np.float32),
        np.array(candidates, dtype=np.int64),
        negatives,
        -1,  # the candidates given, not drawn
    )
    return loss, weight, skipped, negatives[0].tolist()


def _step(
    model: MatrixFactorization,
    users: np.ndarray,
    positives: np.ndarray,
    weights: np.ndarray,
    candidates: np.ndarray,
    negatives: np.ndarray,
    seed: int,
) -> tuple[float, float, int]:
    """`pairwise_step` on the model's tables and history (the views recorded in it)."""
    loss, weight, skipped, new = pairwise_step(
        *model.user_table.arrays(),
        *model.item_table.arrays(),
        *model.history.room_for(users.size),
        np.empty(users.size, dtype=np.bool_),
        users,
        positives,
        weights,
        candidates,
        negatives,
        seed,
        *hyper_parameters(model.config),
    )
    model.history.inserted(new)
    return loss, weight, skipped


def _model(config: ModelConfig, users: int, items: int) -> MatrixFactorization:
    model = MatrixFactorization(config)
    model.users.add_many(range(users))
    model.items.add_many(range(items))
    model.sync_rows()
    return model


@pytest.mark.parametrize("loss", ["bpr", "triplet"])
@pytest.mark.parametrize("optimizer", ["adagrad", "sgd"])
def test_each_triplet_moves_its_three_rows_by_the_autograd_gradient(
    loss: str, optimizer: str
) -> None:
    config = ModelConfig(
        dim=5,
        loss=loss,
        optimizer=optimizer,
        l2=0.01,
        margin=2.0,
        seed=3,  # type: ignore[arg-type]
    )
    model = _model(config, users=2, items=4)
    users, positives, negatives, weights = [0, 1, 0], [0, 1, 2], [1, 3, 3], [1.0, 0.5, 2.0]
    expected_users = model.user_table.weight.clone()
    expected_items = model.item_table.weight.clone()
    expected_user_acc = model.user_table.accumulator.clone()
    expected_item_acc = model.item_table.accumulator.clone()
    for user, positive, negative, weight in zip(users, positives, negatives, weights, strict=True):
        # one after another: each triplet sees the rows the ones before it moved
        accumulators = [
            expected_user_acc[user].double(),
            expected_item_acc[positive].double(),
            expected_item_acc[negative].double(),
        ]
        u, ua, p, pa, q, qa = _reference_step(
            expected_users[user],
            expected_items[positive],
            expected_items[negative],
            accumulators,
            weight,
            config,
        )
        expected_users[user], expected_items[positive], expected_items[negative] = u, p, q
        expected_user_acc[user], expected_item_acc[positive] = ua, pa
        expected_item_acc[negative] = qa
    loss_sum, weight_sum, skipped, chosen = _kernel(
        model, users, positives, [[n] for n in negatives], weights
    )
    assert not skipped and chosen == negatives and weight_sum == 3.5 and loss_sum > 0
    torch.testing.assert_close(model.user_table.weight, expected_users)
    torch.testing.assert_close(model.item_table.weight, expected_items)
    torch.testing.assert_close(model.user_table.accumulator, expected_user_acc)
    torch.testing.assert_close(model.item_table.accumulator, expected_item_acc)


def test_the_hardest_unwatched_candidate_is_the_negative() -> None:
    model = _model(ModelConfig(dim=4, seed=2), users=2, items=10)
    model.history.add(np.array([0, 0]), np.array([5, 6]))
    scores = (model.user_table.weight @ model.item_table.weight.T).tolist()
    candidates = [[1, 5, 6, 7, 8], [5, 6, 7, 8, 9]]
    _, _, _, chosen = _kernel(model, [0, 1], [0, 0], candidates, [1.0, 1.0])
    allowed = [[1, 7, 8], [5, 6, 7, 8, 9]]  # user 0 watched 5 and 6; user 1 nothing
    assert chosen == [max(row, key=lambda c: scores[u][c]) for u, row in enumerate(allowed)]
    _, _, _, chosen = _kernel(model, [0], [1], [[5, 6]], [1.0])
    assert chosen == [5]  # all watched: the first draw


def test_a_triplet_that_would_go_non_finite_is_skipped_and_the_rest_learned() -> None:
    model = _model(ModelConfig(dim=4, optimizer="sgd"), users=3, items=4)
    before = model.user_table.weight.clone()
    _, weight_sum, skipped, chosen = _kernel(
        model, [0, 1, 2], [0, 1, 2], [[1], [2], [3]], [1.0, float("inf"), 1.0]
    )
    assert skipped == 1 and chosen == [1, -1, 3] and weight_sum == 2.0
    assert torch.equal(model.user_table.weight[1], before[1])
    assert not torch.equal(model.user_table.weight[[0, 2]], before[[0, 2]])
    assert torch.isfinite(model.item_table.weight).all()


def test_uniform_candidates_never_return_the_positive_and_cover_the_rest() -> None:
    candidates = uniform_candidates(np.full(7_500, 2), 5, 8, seed=0)
    assert candidates.shape == (7_500, 8) and not np.any(candidates == 2)
    assert set(candidates.ravel().tolist()) == {0, 1, 3, 4}


def test_each_candidate_is_an_exactly_uniform_draw_of_the_other_items() -> None:
    # One pick per seed (a fresh pool each), so the picks are independent. 6 rows: the
    # pool's draws are not a power of two; the positive is in the pool ~43 times, and
    # its picks are replaced by draws of the other 5 (not a power of two either).
    picks = [uniform_candidates(np.array([0]), 6, 1, seed=s)[0, 0] for s in range(20_000)]
    counts = np.bincount(picks, minlength=6)
    assert counts[0] == 0
    expected = len(picks) / 5  # chi-square, 4 degrees of freedom: p = 0.001 at 18.5
    assert float(((counts[1:] - expected) ** 2 / expected).sum()) < 18.5


def test_a_pass_picks_its_candidates_from_one_cache_sized_pool() -> None:
    candidates = uniform_candidates(np.zeros(4_096, dtype=np.int64), 1_000_000, 8, seed=3)
    distinct = np.unique(candidates).size
    assert POOL // 2 < distinct <= POOL  # 32,768 draws of a million rows: ~32,000


def test_uniform_candidates_need_two_items_and_a_seed() -> None:
    with pytest.raises(ValueError, match="two items"):
        uniform_candidates(np.array([0]), 1, 1, seed=0)
    with pytest.raises(ValueError, match="seed"):
        uniform_candidates(np.array([0]), 5, 1, seed=-1)


def test_uniform_candidates_are_fixed_by_their_seed_and_never_the_positive() -> None:
    positives = np.array([0, 3, 4])
    candidates = uniform_candidates(positives, 5, 1000, seed=1)
    assert candidates.shape == (3, 1000)
    assert not np.any(candidates == positives[:, None])
    assert all(len(set(row)) == 4 for row in candidates.tolist())
    assert np.array_equal(candidates, uniform_candidates(positives, 5, 1000, seed=1))
    assert not np.array_equal(candidates, uniform_candidates(positives, 5, 1000, seed=2))


def test_the_kernel_draws_what_uniform_candidates_draws_then_fresh_ones_each_pass() -> None:
    model = _model(ModelConfig(dim=4, negatives=3, passes=2), users=5, items=50)
    users = np.arange(5, dtype=np.int64)
    positives = np.array([4, 8, 15, 16, 23], dtype=np.int64)
    candidates = np.empty((5, 3), dtype=np.int64)
    negatives = np.empty((2, 5), dtype=np.int64)
    _step(model, users, positives, np.ones(5, dtype=np.float32), candidates, negatives, 11)
    first = uniform_candidates(positives, 50, 3, seed=11)
    assert all(negatives[0, t] in first[t] for t in range(5))  # the hardest of its draws
    assert not np.array_equal(candidates, first)  # the buffer holds the second pass's


def test_same_seed_same_tables() -> None:
    def run(seed: int) -> MatrixFactorization:
        model = _model(ModelConfig(dim=8, seed=seed), users=30, items=40)
        rng = np.random.default_rng(0)
        for _ in range(5):
            model.learn(Batch.of_views(rng.integers(0, 30, 64), rng.integers(0, 40, 64)))
        return model

    first, again, other = run(1), run(1), run(2)
    assert torch.equal(first.user_table.weight, again.user_table.weight)
    assert torch.equal(first.item_table.weight, again.item_table.weight)
    assert torch.equal(first.item_table.accumulator, again.item_table.accumulator)
    assert not torch.equal(first.item_table.weight, other.item_table.weight)


def test_learn_draws_fresh_negatives_each_pass_never_a_watched_item() -> None:
    model = _model(ModelConfig(dim=4, negatives=64, passes=3), users=1, items=10)
    model.history.add(np.zeros(4, dtype=np.int64), np.arange(4))
    step = model.learn(Batch.of_views(np.zeros(50, dtype=np.int64), np.full(50, 5)))
    assert step.learned.all() and step.negatives.shape == (150,)
    assert set(step.negatives.tolist()) <= {4, 6, 7, 8, 9}  # 0-3 watched, 5 the positive
    assert model.history.items(0).tolist() == [0, 1, 2, 3, 5]


def test_a_users_other_positives_in_the_batch_are_never_their_negatives() -> None:
    model = _model(ModelConfig(dim=4, negatives=64, passes=2), users=1, items=4)
    step = model.learn(Batch.of_views(np.zeros(3, dtype=np.int64), np.array([0, 1, 2])))
    assert set(step.negatives.tolist()) == {3}
    assert model.history.items(0).tolist() == [0, 1, 2]


def test_a_skipped_view_leaves_the_history_and_later_passes() -> None:
    model = _model(ModelConfig(dim=4, optimizer="sgd", passes=2), users=2, items=3)
    model.history.add(np.array([1]), np.array([2]))
    weights = np.array([1.0, np.inf, 1.0], dtype=np.float32)
    step = model.learn(Batch.of_views(np.array([0, 1, 0]), np.array([1, 2, 0]), weights))
    assert step.learned.tolist() == [True, False, True] and model.skipped_events == 1
    assert step.negatives.size == 4  # two views, two passes
    assert [model.history.items(u).tolist() for u in (0, 1)] == [[0, 1], [2]]  # 1-2 was there


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


def test_table_arrays_follow_growth_and_reloads() -> None:
    table = EmbeddingTable(dim=3, init_std=0.1, generator=torch.Generator().manual_seed(0))
    table.grow_to(2)
    assert table.arrays()[0].shape == (2, 3) and table.arrays()[0] is table.arrays()[0]
    table.grow_to(table.capacity + 1)  # a new buffer
    weight, accumulator = table.arrays()
    weight[-1], accumulator[-1] = 7.0, 8.0
    assert table.weight[-1].tolist() == [7.0] * 3 and table.accumulator[-1] == 8.0
    table.load(torch.ones(4, 3), torch.zeros(4))
    assert table.arrays()[0].shape == (4, 3) and table.arrays()[0][0, 0] == 1.0


def test_top_n_orders_and_excludes() -> None:
    users = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    items = torch.tensor([[3.0, 0.0], [2.0, 1.0], [1.0, 3.0], [0.0, 2.0]])
    scores, indices = top_n(users, items, 3, torch.tensor([0, 1]), torch.tensor([0, 2]))
    assert indices[0].tolist() == [1, 2, 3]
    assert indices[1].tolist() == [3, 1, 0]
    assert torch.all(torch.isfinite(scores))


@pytest.mark.parametrize("seed", range(5))
def test_largest_agrees_with_a_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(-5, 5, size=(7, 300)).astype(np.float32)  # many ties
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[3, 2:] = -np.inf  # a row with two candidates only
    values, columns = largest(torch.from_numpy(scores), 12)
    for row in range(7):
        order = sorted(range(300), key=lambda c: (-scores[row, c], c))[:12]
        expected = [c if np.isfinite(scores[row, c]) else -1 for c in order]
        assert columns[row].tolist() == expected
        assert values[row].tolist() == scores[row, order].tolist()


def test_top_n_marks_missing_slots_with_minus_infinity() -> None:
    scores, _ = top_n(torch.ones(1, 2), torch.ones(2, 2), 5, torch.tensor([0]), torch.tensor([1]))
    assert scores.shape == (1, 2)
    assert torch.isinf(scores[0, 1])


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
        model.learn(Batch.of_views(users, items))
    scores = model.user_table.weight @ model.item_table.weight.T
    own = torch.stack([scores[u, (u % 2) * 20 : (u % 2) * 20 + 20].mean() for u in range(20)])
    other = torch.stack(
        [scores[u, (1 - u % 2) * 20 : (1 - u % 2) * 20 + 20].mean() for u in range(20)]
    )
    assert torch.all(own > other)


def test_a_limited_ranking_is_the_head_of_the_full_one() -> None:
    rng = np.random.default_rng(0)
    popularity = Popularity()
    popularity.add(rng.integers(0, 300, 5000))
    popularity.add(np.arange(0, 300, 7))  # ties broken by row
    full = popularity.ranking()
    for limit in (1, 10, 57, 299, 1000):
        np.testing.assert_array_equal(popularity.ranking(limit), full[:limit])
    below = popularity.ranking(rows=100)
    np.testing.assert_array_equal(below, full[full < 100])
