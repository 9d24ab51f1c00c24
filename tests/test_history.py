"""The watched-pair history against a plain dict of sets."""

from __future__ import annotations

import itertools

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.model.history import History

pairs = st.lists(st.tuples(st.integers(0, 30), st.integers(0, 2_000)), max_size=400)


def _as_sets(history: History) -> list[set[int]]:
    offsets, items = history.lists(np.arange(history.users))
    return [set(items[a:b].tolist()) for a, b in itertools.pairwise(offsets)]


@settings(max_examples=60, deadline=None)
@given(batches=st.lists(pairs, max_size=6), forgotten=st.sets(st.integers(0, 30), max_size=4))
def test_history_behaves_like_a_set_per_user(
    batches: list[list[tuple[int, int]]], forgotten: set[int]
) -> None:
    history, expected = History(), [set[int]() for _ in range(31)]
    history.grow_to(31)
    for batch in batches:
        users = np.array([u for u, _ in batch], dtype=np.int64)
        items = np.array([i for _, i in batch], dtype=np.int64)
        added = history.add(users, items)
        news = []
        for user, item in batch:
            news.append(item not in expected[user])
            expected[user].add(item)
        assert added.tolist() == news
    for user in forgotten:
        history.forget(user)
        expected[user] = set()
    assert _as_sets(history) == expected
    assert history.counts(np.arange(31)).tolist() == [len(s) for s in expected]
    probe_users, probe_items = np.arange(31)[:, None], np.arange(0, 2_000, 37)[None, :]
    assert history.watched(probe_users, probe_items).tolist() == [
        [int(i) in expected[u] for i in probe_items[0]] for u in range(31)
    ]
    restored = History()
    restored.load(*history.pack())
    assert _as_sets(restored) == expected


def test_remove_takes_pairs_out_wherever_they_sit() -> None:
    history = History()
    history.grow_to(3)
    history.add(np.array([0, 0, 0, 1, 2]), np.array([5, 7, 9, 6, 8]))
    history.remove(np.array([0, 1, 2, 2]), np.array([7, 6, 3, 8]))  # 2-3 was never there
    assert _as_sets(history) == [{5, 9}, set(), set()]
    assert history.counts(np.arange(3)).tolist() == [2, 0, 0]
    assert history.add(np.array([0, 1]), np.array([7, 6])).all()  # and may come back
    assert _as_sets(history) == [{5, 7, 9}, {6}, set()]


def test_history_grows_past_its_first_tables() -> None:
    history = History()
    history.grow_to(5_000)
    users = np.repeat(np.arange(5_000), 10)
    items = np.tile(np.arange(10), 5_000) * 3
    assert history.add(users, items).all()
    assert history.slots.shape[0] >= 2 * users.size
    assert history.watched(users, items).all() and not history.watched(users, items + 1).any()
    offsets, values = history.pack()
    assert torch.equal(offsets, torch.arange(0, 50_001, 10))
    assert values[:10].tolist() == list(range(0, 30, 3))


def test_pairs_taken_out_are_reclaimed_while_running() -> None:
    history = History()
    history.grow_to(20)
    users, items = np.repeat(np.arange(20), 50), np.tile(np.arange(50), 20)
    sizes = []
    for cycle in range(40):  # the same users watch, are forgotten, come back
        history.add(users, items + cycle)
        history.remove(users[:100], items[:100] + cycle)
        for user in range(20):
            history.forget(user)
        sizes.append(history.nbytes)
    assert max(sizes[5:]) <= sizes[4]
    history.add(np.array([3, 3]), np.array([7, 9]))
    assert _as_sets(history) == [set()] * 3 + [{7, 9}] + [set()] * 16
