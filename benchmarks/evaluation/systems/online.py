"""Our learner, driven the way the service drives it: `OnlineRecommender.process` per
micro-batch, publishing to an in-memory store after each one.

Scores come from the model tables as they stand before a micro-batch is processed,
which is the state the service was serving from while those events happened. What-if
variants change the `ModelConfig` only: the learner runs exactly as the service runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import Scores
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

    def __init__(self, config: ModelConfig, name: str = "recstream", step: int = 64) -> None:
        self.name = name
        self.step = step
        self.config = config
        self.cost = UpdateCost()
        self.recommender = self._new_recommender()
        self._user_rows = np.zeros(0, dtype=np.int64)
        self._item_rows = np.zeros(0, dtype=np.int64)

    def _new_recommender(self) -> OnlineRecommender:
        return OnlineRecommender(self.config, MemoryStore(), model_name=self.name)

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self.recommender = self._new_recommender()
        self._user_rows = np.zeros(0, dtype=np.int64)
        self._item_rows = np.zeros(0, dtype=np.int64)
        self.update(stream, 0, stop)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        for a in range(start, stop, self.step):
            b = min(a + self.step, stop)
            began = time.perf_counter()
            result = self.recommender.process(stream.events[a:b])
            self.cost.total_seconds.append(time.perf_counter() - began)
            self.cost.events.append(b - a)
            self.cost.learn_seconds.append(result.learn_seconds)
            self.cost.publish_seconds.append(result.publish.seconds if result.publish else 0.0)
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
