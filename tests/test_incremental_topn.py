"""Incremental top-N lists (consumers/model/incremental.py) against exact search."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.mf import MatrixFactorization

USERS, ITEMS, N = 6, 300, 5


def _model(**search: object) -> MatrixFactorization:
    config = SearchConfig(
        **{"candidates": 16, "full_pass_every": 100, "recent_publishes": 100, **search}
    )  # type: ignore[arg-type]
    model = MatrixFactorization(ModelConfig(dim=8, seed=3), search=config)
    model.users.add_many(range(USERS))
    model.items.add_many(range(ITEMS))
    model.sync_rows()
    model.history.add(np.zeros(3, dtype=np.int64), np.array([1, 2, 3]))
    return model


def _exact(model: MatrixFactorization, users: np.ndarray) -> np.ndarray:
    exact = MatrixFactorization(model.config, search=SearchConfig(index="exact", candidates=0))
    exact.load_state(model.state())
    return exact.recommend(users, N).items


def test_lists_equal_exact_when_nothing_moved() -> None:
    model, users = _model(), np.arange(USERS)
    first = model.recommend(users, N).items
    second = model.recommend(users, N).items
    lists = model.search.candidate_lists
    assert lists is not None and lists.full_searches == USERS and lists.rescored == USERS
    np.testing.assert_array_equal(first, _exact(model, users))
    np.testing.assert_array_equal(second, first)


def test_a_moved_item_enters_a_list_without_a_full_search() -> None:
    model, users = _model(), np.arange(USERS)
    before = model.recommend(users, N).items
    candidates = model.search.candidate_lists._candidates[0]  # type: ignore[union-attr]
    outsider = next(i for i in range(10, ITEMS) if i not in candidates)  # 1-3: watched
    model.item_table.weight[outsider] = 10 * model.user_table.weight[0]
    model.items_moved([outsider])
    after = model.recommend(users, N).items
    assert outsider not in before[0] and after[0][0] == outsider
    assert model.search.candidate_lists.full_searches == USERS  # type: ignore[union-attr]
    np.testing.assert_array_equal(after, _exact(model, users))


def test_watched_items_never_appear() -> None:
    model, users = _model(), np.arange(USERS)
    listed = model.recommend(users, N).items
    model.history.add(users.repeat(2), listed[:, :2].ravel())  # watched since the search
    model.items_moved(listed[:, 2].tolist())  # ... and moved, re-scored in both parts
    again = model.recommend(users, N).items
    for user in users.tolist():
        assert not set(again[user].tolist()) & set(model.history.items(user).tolist())
    assert model.search.candidate_lists.rescored == USERS  # type: ignore[union-attr]
    np.testing.assert_array_equal(again, _exact(model, users))


def test_a_forgotten_users_list_is_dropped_and_a_restore_starts_empty() -> None:
    model, users = _model(), np.arange(USERS)
    model.recommend(users, N)
    lists = model.search.candidate_lists
    assert lists is not None and len(lists) == USERS
    model.forget_user(2)
    assert len(lists) == USERS - 1
    model.users.add_many(["new"])
    model.sync_rows()
    model.recommend(np.array([USERS]), N)  # a new user takes the freed slot
    assert len(lists) == USERS
    model.load_state(model.state())
    assert len(lists) == 0


def test_the_full_search_runs_every_kth_touch() -> None:
    model, users = _model(full_pass_every=3), np.arange(USERS)
    lists = model.search.candidate_lists
    assert lists is not None
    counts = []
    for _ in range(7):
        model.recommend(users, N)
        counts.append(lists.full_searches // USERS)
    assert counts == [1, 1, 1, 2, 2, 2, 3]


def test_a_list_older_than_the_moved_items_window_is_searched_in_full() -> None:
    model, users = _model(recent_publishes=2), np.arange(USERS)
    lists = model.search.candidate_lists
    assert lists is not None
    model.recommend(users, N)
    model.recommend(users[:1], N)  # the others' lists age
    model.recommend(users[:1], N)
    model.recommend(users, N)
    assert lists.full_searches == 2 * USERS and lists.rescored == 2  # publish 4: all 3 old


def test_a_user_who_moved_past_the_bound_is_searched_in_full() -> None:
    model, users = _model(), np.arange(USERS)
    model.recommend(users, N)
    # Item 7 (never among user 0's candidates) becomes far more aligned with user 0's new
    # vector than any candidate; no one told the lists it moved.
    model.item_table.weight[7] = torch.randn(8) * 0.5
    model.user_table.weight[0] = 20 * model.item_table.weight[7]
    again = model.recommend(users, N).items
    assert model.search.candidate_lists.full_searches == USERS + 1  # type: ignore[union-attr]
    assert again[0][0] == 7
    np.testing.assert_array_equal(again[0], _exact(model, users)[0])


@pytest.mark.parametrize(
    ("index", "items", "approximate"),
    [("auto", 99, False), ("auto", 100, True), ("exact", 10**9, False), ("ann", 1, True)],
)
def test_auto_picks_exact_below_and_hnsw_from_the_threshold(
    index: str, items: int, approximate: bool
) -> None:
    search = SearchConfig(index=index, ann_min_items=100)  # type: ignore[arg-type]
    assert search.approximate(items) is approximate
