"""The online learner: prequential scoring against served lists, learning, popularity,
what changed, its checkpoint state; and the rule that it does no I/O."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from consumers.learner import OnlineLearner
from consumers.model.base import Batch
from consumers.model.config import ModelConfig
from consumers.model.mf import MatrixFactorization
from consumers.quality import ServedLists
from streamer.events import ViewEvent

ROOT = Path(__file__).resolve().parent.parent


def views(pairs: list[tuple[str, int]], ts: float = 1.0) -> list[ViewEvent]:
    return [ViewEvent(user, item, ts) for user, item in pairs]


def learner(config: ModelConfig) -> OnlineLearner:
    return OnlineLearner(MatrixFactorization(config))


def test_prequential_scores_only_users_with_a_served_list() -> None:
    online, served = learner(ModelConfig(dim=4)), ServedLists(10)
    online.learn(views([("a", 1), ("b", 2), ("b", 3)]), served)
    assert online.quality.scored == 0
    a = online.model.users.row("a")
    assert a is not None
    served.update({a: [online.model.items.add(7)]})  # what the publisher served "a"
    online.learn(views([("a", 7), ("new", 1)]), served)
    assert online.quality.scored == 1
    assert online.quality.hit_rate == 1.0
    assert online.quality.ndcg == 1.0
    assert online.popularity_quality.scored == 1


def test_a_micro_batch_is_learned_as_the_model_learns_it() -> None:
    config = ModelConfig(dim=4, passes=3, negatives=4, seed=7)
    online = learner(config)
    pairs = [("a", 1), ("b", 2), ("a", 3), ("c", 4), ("b", 5)]
    learned = online.learn(views(pairs), ServedLists(10))
    by_hand = MatrixFactorization(config)
    users = by_hand.users.add_many(user for user, _ in pairs)
    items = by_hand.items.add_many(item for _, item in pairs)
    step = by_hand.learn(Batch.of_views(users, items))
    model = online.model
    assert isinstance(model, MatrixFactorization)
    torch.testing.assert_close(model.user_table.weight, by_hand.user_table.weight)
    torch.testing.assert_close(model.item_table.weight, by_hand.item_table.weight)
    assert step.negatives.size == 3 * len(pairs)  # a fresh negative per view and pass
    assert learned.loss == step.loss  # the first pass's loss
    assert online.popularity.scores(list(range(len(pairs)))) == [1.0] * len(pairs)


def test_what_changed_is_the_learned_views_and_the_negatives_they_moved() -> None:
    online = learner(ModelConfig(dim=4, passes=2))
    learned = online.learn(views([("a", 1), ("b", 2), ("a", 3)], ts=5.0), ServedLists(10))
    assert learned.events == 3 and online.events == 3
    assert learned.users.tolist() == [0, 1, 0] and learned.items.tolist() == [0, 1, 2]
    assert learned.negatives.size == 2 * 3  # one per view and pass
    assert learned.arrivals == [5.0, 5.0, 5.0]  # the events' times unless told
    told = online.learn(views([("c", 1)]), ServedLists(10), arrivals=[9.0])
    assert told.arrivals == [9.0]


def test_checkpoint_state_restores_model_popularity_quality_and_events() -> None:
    config = ModelConfig(dim=4)
    first = learner(config)
    first.learn(views([(f"u{n % 30}", n % 40) for n in range(200)]), ServedLists(10))
    tensors, manifest = first.state()
    assert manifest["model"] == "mf-bpr" and manifest["events"] == 200
    restored = learner(config)
    restored.load_state(tensors, manifest)
    assert restored.events == 200
    rows = np.arange(30)
    np.testing.assert_array_equal(
        restored.model.recommend(rows, 5).items, first.model.recommend(rows, 5).items
    )
    assert restored.popularity.scores(list(range(40))) == first.popularity.scores(list(range(40)))
