"""Our learner, driven the way the service drives it: `OnlineRecommender.process` per
micro-batch, publishing to an in-memory store after each one.

Scores come from the model tables as they stand before a micro-batch is processed,
which is the state the service was serving from while those events happened.

What-if knobs exist for diagnostics only (the defaults are the service's behaviour):
`passes` gives each micro-batch to `process` that many times (more steps per event),
`replay` follows each micro-batch with `replay x size` events drawn uniformly from the
stream before it (a replay buffer holding everything), and `negatives` / `item_bias`
swap in the variants of `whatif`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from consumers.evaluation.stream import EncodedStream
from consumers.evaluation.systems.base import Scores
from consumers.model.config import ModelConfig
from consumers.pipeline import OnlineRecommender
from consumers.sinks.memory import MemoryStore


@dataclass
class UpdateCost:
    """Wall seconds per micro-batch (`process` calls), as the pipeline splits them."""

    events: list[int] = field(default_factory=list)
    total_seconds: list[float] = field(default_factory=list)
    learn_seconds: list[float] = field(default_factory=list)
    publish_seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ServedQuality:
    """The pipeline's own prequential counters (served top-10 lists), at one moment."""

    scored: int
    hits: float
    gains: float


class OnlineLearnerSystem:
    """`OnlineRecommender` (MatrixFactorization + publishing) fed micro-batches of `step`."""

    def __init__(
        self,
        config: ModelConfig,
        name: str = "recstream",
        step: int = 64,
        passes: int = 1,
        replay: float = 0.0,
        negatives: str = "uniform",
        item_bias: bool = False,
    ) -> None:
        self.name = name
        self.step = step
        self.config = config
        self.passes = passes
        self.replay = replay
        self.negatives = negatives
        self.item_bias = item_bias
        self.cost = UpdateCost()
        self._rng = np.random.default_rng(config.seed)
        self.recommender = self._new_recommender()
        self._user_rows = np.zeros(0, dtype=np.int64)
        self._item_rows = np.zeros(0, dtype=np.int64)

    def _new_recommender(self) -> OnlineRecommender:
        recommender = OnlineRecommender(self.config, MemoryStore(), model_name=self.name)
        if self.negatives == "popularity":
            from consumers.evaluation.systems.whatif import use_popularity_negatives

            use_popularity_negatives(recommender)
        elif self.negatives != "uniform":
            raise ValueError(f"unknown negative sampler {self.negatives!r}")
        if self.item_bias:
            from consumers.evaluation.systems.whatif import use_item_bias

            use_item_bias(recommender)
        return recommender

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self.recommender = self._new_recommender()
        self._rng = np.random.default_rng(self.config.seed)
        self._user_rows = np.zeros(0, dtype=np.int64)
        self._item_rows = np.zeros(0, dtype=np.int64)
        self.update(stream, 0, stop)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        for a in range(start, stop, self.step):
            b = min(a + self.step, stop)
            began = time.perf_counter()
            learn = publish = 0.0
            batches = [stream.events[a:b]] * self.passes
            if self.replay > 0 and a > 0:
                drawn = self._rng.integers(0, a, size=max(1, round(self.replay * (b - a))))
                batches.append([stream.events[i] for i in drawn.tolist()])
            for batch in batches:
                result = self.recommender.process(batch)
                learn += result.learn_seconds
                publish += result.publish.seconds if result.publish else 0.0
            self.cost.total_seconds.append(time.perf_counter() - began)
            self.cost.events.append(b - a)
            self.cost.learn_seconds.append(learn)
            self.cost.publish_seconds.append(publish)
            self._map_new_ids(stream, b)

    def served_quality(self) -> ServedQuality:
        quality = self.recommender.quality
        return ServedQuality(quality.scored, quality.hits, quality.gains)

    def _map_new_ids(self, stream: EncodedStream, stop: int) -> None:
        """Table rows of the stream's users and items that first appeared before `stop`."""
        model = self.recommender.model
        users, items = stream.users_before(stop), stream.items_before(stop)
        if users > self._user_rows.size:
            fresh = [model.users.row(raw) for raw in stream.user_ids[self._user_rows.size : users]]
            self._user_rows = np.concatenate([self._user_rows, np.asarray(fresh, dtype=np.int64)])
        if items > self._item_rows.size:
            fresh = [model.items.row(raw) for raw in stream.item_ids[self._item_rows.size : items]]
            self._item_rows = np.concatenate([self._item_rows, np.asarray(fresh, dtype=np.int64)])

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        model = self.recommender.model
        user_vectors = model.user_table.weight[torch.from_numpy(self._user_rows[users])]
        item_vectors = model.item_table.weight[torch.from_numpy(self._item_rows[:n_items])]
        return (user_vectors @ item_vectors.T).numpy()
