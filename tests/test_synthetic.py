"""The synthetic stream: seeded, in time order, growing, drifting, with a learnable structure."""

from __future__ import annotations

import dataclasses
import re
from collections import Counter

import numpy as np
import pytest

from streamer.datasets import open_dataset
from streamer.datasets.synthetic import (
    CHUNK,
    SyntheticConfig,
    SyntheticWorld,
    _choose,
    _Watched,
    id_index,
    plant_world,
    synthetic_views,
)
from streamer.events import ViewEvent, decode_view, encode_view

SMALL = SyntheticConfig(n_users=1000, n_items=400, events=20_000, seed=7)


def _in_cluster_share(
    events: list[ViewEvent], world: SyntheticWorld, clusters: np.ndarray
) -> float:
    """Share of `events` whose item is in the cluster `clusters[user]`."""
    users = np.array([id_index(str(e.user)) for e in events])
    items = np.array([id_index(str(e.item)) for e in events])
    return float(np.mean(world.item_cluster[items] == clusters[users]))


@pytest.fixture(scope="module")
def small() -> list[ViewEvent]:
    return list(synthetic_views(SMALL))


def test_the_same_seed_gives_the_same_stream(small: list[ViewEvent]) -> None:
    assert list(synthetic_views(SMALL)) == small
    other = list(synthetic_views(dataclasses.replace(SMALL, seed=8)))
    assert other != small


def test_events_are_valid_in_time_order_with_string_ids(small: list[ViewEvent]) -> None:
    assert len(small) == SMALL.events
    stamps = [e.ts for e in small]
    assert stamps == sorted(stamps)
    assert stamps[0] >= SMALL.start_ts
    assert all(
        re.fullmatch(r"u\d+", str(e.user)) and re.fullmatch(r"i\d+", str(e.item)) for e in small
    )
    assert decode_view(encode_view(small[0])) == small[0]


def test_simulated_time_runs_at_the_configured_rate(small: list[ViewEvent]) -> None:
    span = small[-1].ts - small[0].ts
    assert span * SMALL.events_per_second == pytest.approx(SMALL.events, rel=0.05)


def test_users_and_items_arrive_over_the_stream(small: list[ViewEvent]) -> None:
    world = plant_world(SMALL)
    for index, event in enumerate(small):
        chunk_start = index // CHUNK * CHUNK
        assert world.user_arrival[id_index(str(event.user))] <= chunk_start
        assert world.item_arrival[id_index(str(event.item))] <= chunk_start
    first_tenth = small[: SMALL.events // 10]
    assert all(id_index(str(e.item)) < SMALL.n_initial_items + 50 for e in first_tenth)
    late_items = {e.item for e in small if id_index(str(e.item)) >= SMALL.n_initial_items}
    late_users = {e.user for e in small if id_index(str(e.user)) >= SMALL.n_initial_users}
    assert len(late_items) > 0.8 * (SMALL.n_items - SMALL.n_initial_items)
    assert len(late_users) > 0.5 * (SMALL.n_users - SMALL.n_initial_users)
    assert len({e.user for e in first_tenth}) < len({e.user for e in small})


def test_users_mostly_watch_items_of_their_cluster(small: list[ViewEvent]) -> None:
    world = plant_world(SMALL)
    share = _in_cluster_share(small, world, world.user_cluster)
    assert share > 0.7  # chance is 1 / n_clusters = 0.125
    assert np.array_equal(world.user_cluster, world.user_cluster_after)


def test_drift_moves_every_user_to_another_cluster() -> None:
    config = dataclasses.replace(SMALL, drift_at=0.5)
    events = list(synthetic_views(config))
    world = plant_world(config)
    assert config.drift_index == SMALL.events // 2
    assert np.all(world.user_cluster != world.user_cluster_after)
    before, after = events[: config.events // 2], events[config.events // 2 :]
    assert _in_cluster_share(before, world, world.user_cluster) > 0.7
    assert _in_cluster_share(after, world, world.user_cluster_after) > 0.7
    assert _in_cluster_share(after, world, world.user_cluster) < 0.2
    assert world.taste(0, config.events - 1) == world.user_cluster_after[0]
    assert world.taste(0, 0) == world.user_cluster[0]


def test_users_rarely_watch_an_item_twice(small: list[ViewEvent]) -> None:
    pairs = Counter((e.user, e.item) for e in small)
    repeats = sum(count - 1 for count in pairs.values())
    assert repeats < 0.02 * len(small)


def test_activity_and_popularity_are_skewed(small: list[ViewEvent]) -> None:
    by_user = Counter(e.user for e in small)
    by_item = Counter(e.item for e in small)
    top_users = sum(n for _, n in by_user.most_common(SMALL.n_users // 10))
    top_items = sum(n for _, n in by_item.most_common(SMALL.n_items // 10))
    assert top_users > 0.2 * len(small)
    assert top_items > 0.2 * len(small)


def test_world_is_read_only_and_clusters_are_balanced() -> None:
    world = plant_world(SMALL)
    with pytest.raises(ValueError):
        world.item_cluster[0] = 1
    sizes = np.bincount(world.item_cluster, minlength=SMALL.n_clusters)
    assert sizes.max() - sizes.min() <= 2
    initial = np.bincount(world.item_cluster[: SMALL.n_initial_items], minlength=SMALL.n_clusters)
    assert initial.min() >= 1


@pytest.mark.parametrize(
    "bad",
    [
        {"in_cluster": 1.5},
        {"drift_at": -0.1},
        {"n_clusters": 0},
        {"initial_items": 0.001},
        {"initial_users": 0.0},
        {"events_per_second": 0.0},
        {"rewatch_tries": 0},
        {"n_users": 10**6, "n_items": 10**5},
    ],
)
def test_config_rejects_bad_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SyntheticConfig(**bad)  # type: ignore[arg-type]


def test_empty_stream() -> None:
    assert list(synthetic_views(SyntheticConfig(events=0))) == []


def _choose_one_by_one(
    users: np.ndarray, candidates: np.ndarray, history: set[tuple[int, int]]
) -> list[int]:
    """The rule `_choose` vectorises: per view in order, its first candidate not yet watched."""
    picks = []
    for user, row in zip(users.tolist(), candidates.tolist(), strict=True):
        pick = next((item for item in row if (user, item) not in history), row[0])
        history.add((user, pick))
        picks.append(pick)
    return picks


@pytest.mark.parametrize("seed", range(20))
def test_choose_matches_the_one_by_one_rule(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_users, n_items = 6, 10
    watched = _Watched(n_users, n_items)
    history: set[tuple[int, int]] = set()
    for _ in range(5):
        users = rng.integers(0, n_users, size=40)
        candidates = rng.integers(0, n_items, size=(40, 4))
        expected = _choose_one_by_one(users, candidates, history)
        assert _choose(users, candidates, watched).tolist() == expected
    every = np.arange(n_users * n_items)
    found = watched.contains(every // n_items, every % n_items)
    assert {(int(k) // n_items, int(k) % n_items) for k in np.flatnonzero(found)} == history


def test_open_dataset_names_the_synthetic_streams() -> None:
    plain = list(open_dataset("synthetic", events=300, seed=3))
    assert plain == list(synthetic_views(SyntheticConfig(events=300, seed=3)))
    drifting = list(open_dataset("synthetic:drift", events=300, seed=3))
    assert drifting == list(synthetic_views(SyntheticConfig(events=300, seed=3, drift_at=0.5)))
    late = list(open_dataset("synthetic:drift", events=300, seed=3, drift_at=0.9))
    assert late == list(synthetic_views(SyntheticConfig(events=300, seed=3, drift_at=0.9)))


@pytest.mark.parametrize("spec", ["synthetic:other", "kafka", "", "movie:x"])
def test_open_dataset_refuses_unknown_specs(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown source"):
        open_dataset(spec)


def test_open_dataset_refuses_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown synthetic option"):
        open_dataset("synthetic", users=5)
