"""The mlp model's own invariants (the shared ones are tests/test_model_contract.py's):
the MLP ranks the retrieval's candidates, and the published lists name both stages."""

from __future__ import annotations

import json

import numpy as np
import torch

from consumers.learner import OnlineLearner
from consumers.model.base import Batch
from consumers.model.mlp import MlpConfig, MlpRanker
from consumers.publisher import Publisher
from consumers.sinks.memory import MemoryStore
from streamer.events import ViewEvent


def trained(candidates: int) -> MlpRanker:
    model = MlpRanker(MlpConfig(dim=8, top_n=5, candidates=candidates, seed=1))
    model.users.add_many(range(10))
    model.items.add_many(range(40))
    rng = np.random.default_rng(0)
    for _ in range(5):
        model.learn(Batch.of_views(rng.integers(0, 10, 60), rng.integers(0, 40, 60)))
    return model


def test_the_mlp_ranks_exactly_the_retrievals_candidates() -> None:
    model = trained(candidates=12)
    users = np.arange(10, dtype=np.int64)
    retrieved = model.retrieval.recommend(users, 12)
    ranking = model.recommend(users, 5)
    for user in users:
        kept = np.isfinite(ranking.scores[user])
        assert set(ranking.items[user, kept].tolist()) <= set(retrieved.items[user].tolist())
        with torch.no_grad():
            direct = model._rank(
                torch.full((int(kept.sum()),), int(user)),
                torch.from_numpy(ranking.items[user, kept]),
            )
        np.testing.assert_allclose(ranking.scores[user, kept], direct.numpy(), rtol=1e-6)
    scores = model.score(users, np.arange(40, dtype=np.int64))
    assert (np.isfinite(scores).sum(axis=1) <= 12).all()  # only retrieved items score
    best = np.argsort(-scores, axis=1)[:, :5]
    assert (np.sort(best, axis=1) == np.sort(ranking.items, axis=1)).all()


def test_published_lists_say_which_stages_made_them() -> None:
    store = MemoryStore()
    learner = OnlineLearner(MlpRanker(MlpConfig(dim=8, top_n=3)))
    publisher = Publisher(learner, store)
    events = [ViewEvent(user, item, 1.0) for user in "ab" for item in range(6)]
    publisher.add(learner.learn(events, publisher.served))
    top = json.loads(store.get("rs:user:a:top") or b"null")
    assert top["model"] == "mlp" and top["stages"] == ["retrieve:mf", "rank:mlp"]
    similar = json.loads(store.get("rs:item:1:similar") or b"null")
    assert similar["stages"] == ["retrieve:mf"]
