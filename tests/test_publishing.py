"""Publishing that keeps up: coalescing within an interval, popular lists without a full
sort, the shared registry's id cache, one MSET per publication."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np

from consumers.model.config import ModelConfig
from consumers.model.popularity import Popularity
from consumers.model.shared import SharedIdRegistry
from consumers.sinks.memory import MemoryStore
from streamer.events import ViewEvent
from tests.learners import online


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def views(pairs: list[tuple[str, int]]) -> list[ViewEvent]:
    return [ViewEvent(user, item, 1.0) for user, item in pairs]


def test_batches_within_the_interval_are_published_once() -> None:
    store, clock = MemoryStore(), Clock()
    pair = online(ModelConfig(dim=4), store, clock=clock, publish_interval_s=1.0)
    _, first = pair.process(views([("a", 1), ("b", 2)]))
    assert first is not None and first.users == 2
    clock.now += 0.3
    assert pair.process(views([("a", 3)]))[1] is None
    clock.now += 0.3
    assert pair.process(views([("a", 4), ("c", 1)]))[1] is None
    assert pair.publisher.pending
    assert json.loads(store.get("rs:user:a:top") or b"null")["version"] == 1
    clock.now += 0.5  # the interval has passed: the next batch publishes what waited
    _, result = pair.process(views([("d", 2)]))
    assert result is not None and result.users == 3  # a, c, d: a once
    assert len(result.freshness) == 4  # every event that waited
    assert json.loads(store.get("rs:user:a:top") or b"null")["version"] == 2
    assert not pair.publisher.pending


def test_flush_publishes_at_once_whatever_the_interval() -> None:
    store, clock = MemoryStore(), Clock()
    pair = online(ModelConfig(dim=4), store, clock=clock, publish_interval_s=60.0)
    pair.process(views([("a", 1), ("b", 2)]))
    assert pair.process(views([("c", 3)]))[1] is None
    result = pair.publisher.flush()  # what the service calls when idle and before checkpoints
    assert result is not None and result.ok and result.users == 1
    assert store.get("rs:user:c:top") is not None


def test_every_batch_publishes_by_default() -> None:
    pair = online(ModelConfig(dim=4), MemoryStore(), clock=Clock())
    for pairs in ([("a", 1)], [("a", 2)], [("b", 1)]):
        assert pair.process(views(pairs))[1] is not None


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


def test_shared_ids_come_back_through_the_cache_and_forgotten_rows_leave_it(
    tmp_path: Path,
) -> None:
    registry = SharedIdRegistry(tmp_path, "users", 100, threading.Lock())
    rows = registry.add_many(["a", 7, "b"]).tolist()
    assert registry.raws(rows) == ["a", 7, "b"]
    assert registry.raws(rows[::-1]) == ["b", 7, "a"]
    row = registry.forget("a")
    assert row == rows[0] and row not in registry._raw_cache
    assert registry.row("a") is None
