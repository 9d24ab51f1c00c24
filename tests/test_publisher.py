"""The publisher: what the learner changed, as store writes (coalesced within an
interval); store outages; served lists."""

from __future__ import annotations

import json

import numpy as np

from consumers.model.config import ModelConfig
from consumers.sinks.memory import MemoryStore
from consumers.sinks.schema import Publication, decode_vector
from streamer.events import ViewEvent
from tests.learners import online


class FlakyStore(MemoryStore):
    """A memory store that fails while `down` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    def publish(self, publication: Publication) -> None:
        from consumers.sinks.base import StoreUnavailable

        if self.down:
            raise StoreUnavailable("down for the test")
        super().publish(publication)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def views(pairs: list[tuple[str, int]], ts: float = 1.0) -> list[ViewEvent]:
    return [ViewEvent(user, item, ts) for user, item in pairs]


def test_publishes_top_lists_without_watched_items_and_vectors() -> None:
    store = MemoryStore()
    pair = online(ModelConfig(dim=8, top_n=5), store)
    pair.process(views([("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5), ("c", 6)]))
    top = json.loads(store.get("rs:user:a:top") or b"null")
    assert set(top) == {"items", "scores", "model", "version", "updated_at"}
    assert top["model"] == "mf-bpr" and top["version"] == 1
    assert len(top["items"]) == 4
    assert not {1, 2} & set(top["items"])
    assert top["scores"] == sorted(top["scores"], reverse=True)
    assert decode_vector(store.get("rs:user:a:vec") or b"").shape == (8,)
    assert all(store.get(f"rs:item:{item}:vec") for item in range(1, 7))
    assert store.get("rs:item:1:similar") is not None
    assert json.loads(store.get("rs:popular") or b"null")["items"]
    meta = store.get_hash("rs:meta")
    assert meta["events"] == "6" and meta["users"] == "3" and meta["items"] == "6"
    assert meta["dim"] == "8" and meta["model"] == "mf-bpr"


def test_store_outage_keeps_learning_and_catches_up_with_backoff() -> None:
    store, clock = FlakyStore(), Clock()
    pair = online(ModelConfig(dim=4), store, clock=clock)
    store.down = True
    _, first = pair.process(views([("a", 1), ("b", 2)], ts=999.0))
    assert first is not None and not first.ok
    _, second = pair.process(views([("c", 3)], ts=999.5))
    assert second is None  # backing off: no attempt yet
    assert pair.learner.events == 3 and pair.publisher.pending
    store.down = False
    clock.now += 60
    result = pair.publisher.flush()
    assert result is not None and result.ok and result.users == 3
    assert np.allclose(sorted(result.freshness), [60.5, 61.0, 61.0])
    assert not pair.publisher.pending
    assert all(store.get(f"rs:user:{u}:top") for u in "abc")
    assert store.get_hash("rs:meta")["events"] == "3"


def test_similar_lists_are_recomputed_at_most_once_per_interval() -> None:
    now = [100.0]
    store = MemoryStore()
    pair = online(ModelConfig(dim=4), store, clock=lambda: now[0], similar_interval_s=1.0)
    publisher = pair.publisher
    pair.process(views([("a", 1), ("b", 2)]))
    assert store.get("rs:item:1:similar") is not None
    now[0] += 0.5
    pair.process(views([("a", 3)]))
    assert store.get("rs:item:3:similar") is None  # due at 101
    assert json.loads(store.get("rs:user:a:top") or b"{}")["updated_at"] == 100.5
    assert not publisher.pending  # the similar list waits for its interval
    now[0] += 0.6
    assert publisher.pending  # and an idle service's flush then publishes it
    publisher.flush()
    assert store.get("rs:item:3:similar") is not None and not publisher.pending


def test_memory_held_stays_flat_on_a_stream_of_the_same_users() -> None:
    pair = online(ModelConfig(dim=4))
    served = pair.publisher.served
    pairs = [(f"u{n}", n % 7) for n in range(2000)]
    sizes = []
    for _ in range(4):
        pair.process(views(pairs))
        sizes.append((served.nbytes, pair.learner.model.history.nbytes))
    assert len(served) == 2000 and sizes[-1] == sizes[1]
    assert served.nbytes <= 2 * 2000 * (4 * 10 + 2)  # rows grow by doubling


def test_the_served_list_is_the_head_of_the_published_one() -> None:
    store = MemoryStore()
    pair = online(ModelConfig(dim=4, top_n=15), store)
    pair.process(views([(f"u{n % 5}", n % 30) for n in range(120)]))
    pair.process(views([("u0", 3), ("new", 4)]))  # a list replaced, a list added
    items = pair.learner.model.items
    for user in ("u0", "u1", "new"):
        published = json.loads(store.get(f"rs:user:{user}:top") or b"null")["items"]
        served = pair.publisher.served.get(pair.learner.model.users.row(user) or 0) or []
        assert items.raws(served) == published[:10]
    assert len(pair.publisher.served) == 6


def test_served_lists_keep_their_order_through_a_checkpoint() -> None:
    config = ModelConfig(dim=4)
    pair = online(config)
    pair.process(views([(f"u{n % 30}", n % 40) for n in range(200)]))
    restored = online(config)
    restored.learner.load_state(*pair.learner.state())
    restored.publisher.load_state(*pair.publisher.state())
    lists = [pair.publisher.served.get(row) for row in range(30)]
    assert all(lists) and [restored.publisher.served.get(row) for row in range(30)] == lists


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
