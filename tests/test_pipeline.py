"""A micro-batch through the learner: prequential scoring, publishing, store outages."""

from __future__ import annotations

import json

import numpy as np
import torch

from consumers.model.config import ModelConfig
from consumers.model.learner import MatrixFactorization
from consumers.pipeline import OnlineRecommender
from consumers.sinks.memory import MemoryStore
from consumers.sinks.schema import Publication, decode_vector
from streamer.events import ViewEvent


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
    recommender = OnlineRecommender(ModelConfig(dim=8, top_n=5), store, "mf-bpr")
    recommender.process(views([("a", 1), ("a", 2), ("b", 3), ("b", 4), ("c", 5), ("c", 6)]))
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


def test_prequential_scores_only_users_with_a_served_list() -> None:
    recommender = OnlineRecommender(ModelConfig(dim=4), MemoryStore())
    recommender.process(views([("a", 1), ("b", 2), ("b", 3)]))
    assert recommender.quality.scored == 0
    served = recommender.served[recommender.model.users.row("a") or 0]
    next_item = recommender.model.items.raw(served[0])
    recommender.process(views([("a", next_item), ("new", 1)]))
    assert recommender.quality.scored == 1
    assert recommender.quality.hit_rate == 1.0
    assert recommender.quality.ndcg == 1.0
    assert recommender.popularity_quality.scored == 1


def test_store_outage_keeps_learning_and_catches_up_with_backoff() -> None:
    store, clock = FlakyStore(), Clock()
    recommender = OnlineRecommender(ModelConfig(dim=4), store, clock=clock)
    store.down = True
    first = recommender.process(views([("a", 1), ("b", 2)], ts=999.0))
    assert first.publish is not None and not first.publish.ok
    second = recommender.process(views([("c", 3)], ts=999.5))
    assert second.publish is None  # backing off: no attempt yet
    assert recommender.events == 3 and recommender.pending
    store.down = False
    clock.now += 60
    result = recommender.flush()
    assert result is not None and result.ok and result.users == 3
    assert np.allclose(sorted(result.freshness), [60.5, 61.0, 61.0])
    assert not recommender.pending
    assert all(store.get(f"rs:user:{u}:top") for u in "abc")
    assert store.get_hash("rs:meta")["events"] == "3"


def test_a_micro_batch_is_learned_as_the_model_learns_it() -> None:
    config = ModelConfig(dim=4, passes=3, negatives=4, seed=7)
    recommender = OnlineRecommender(config, MemoryStore())
    pairs = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    result = recommender.process(views(pairs))
    by_hand = MatrixFactorization(config)
    users = torch.from_numpy(by_hand.users.add_many(user for user, _ in pairs))
    items = torch.from_numpy(by_hand.items.add_many(item for _, item in pairs))
    step = by_hand.learn(users, items, torch.ones(len(pairs)))
    torch.testing.assert_close(recommender.model.user_table.weight, by_hand.user_table.weight)
    torch.testing.assert_close(recommender.model.item_table.weight, by_hand.item_table.weight)
    assert step.negatives.size == 3 * len(pairs)  # a fresh negative per view and pass
    assert result.loss == step.loss  # the first pass's loss
    assert recommender.popularity.scores(list(range(len(pairs)))) == [1.0] * len(pairs)


def test_similar_lists_are_recomputed_at_most_once_per_interval() -> None:
    now = [100.0]
    store = MemoryStore()
    recommender = OnlineRecommender(
        ModelConfig(dim=4), store, clock=lambda: now[0], similar_interval_s=1.0
    )
    recommender.process(views([("a", 1), ("b", 2)]))
    assert store.get("rs:item:1:similar") is not None
    now[0] += 0.5
    recommender.process(views([("a", 3)]))
    assert store.get("rs:item:3:similar") is None  # due at 101
    assert json.loads(store.get("rs:user:a:top") or b"{}")["updated_at"] == 100.5
    assert not recommender.pending  # the similar list waits for its interval
    now[0] += 0.6
    assert recommender.pending  # and an idle service's flush then publishes it
    recommender.flush()
    assert store.get("rs:item:3:similar") is not None and not recommender.pending


def test_memory_held_stays_flat_on_a_stream_of_the_same_users() -> None:
    recommender = OnlineRecommender(ModelConfig(dim=4), MemoryStore())
    pairs = [(f"u{n}", n % 7) for n in range(2000)]
    sizes = []
    for _ in range(4):
        recommender.process(views(pairs))
        sizes.append((recommender.served.nbytes, recommender.model.history.nbytes))
    assert len(recommender.served) == 2000 and sizes[-1] == sizes[1]
    assert recommender.served.nbytes <= 2 * 2000 * (4 * 10 + 2)  # rows grow by doubling


def test_served_lists_keep_their_order_through_a_checkpoint() -> None:
    config = ModelConfig(dim=4)
    recommender = OnlineRecommender(config, MemoryStore())
    recommender.process(views([(f"u{n % 30}", n % 40) for n in range(200)]))
    restored = OnlineRecommender(config, MemoryStore())
    restored.load_state(*recommender.state())
    lists = [recommender.served.get(row) for row in range(30)]
    assert all(lists) and [restored.served.get(row) for row in range(30)] == lists
