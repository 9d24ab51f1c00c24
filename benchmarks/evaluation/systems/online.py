"""Our learner, driven the way the service drives it: `OnlineLearner.learn` then
`Publisher.add` per micro-batch, publishing to an in-memory store after each one.

Scores come from the model tables as they stand before a micro-batch is processed,
which is the state the service was serving from while those events happened. `model`
is a `--model` value; what-if variants change its config only: the learner runs
exactly as the service runs it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import Scores
from consumers.learner import OnlineLearner
from consumers.model.base import Config
from consumers.model.factory import ModelName, make_model
from consumers.publisher import Publisher
from consumers.sinks.memory import MemoryStore


@dataclass
class UpdateCost:
    """Wall seconds per micro-batch, split into learning and publishing."""

    events: list[int] = field(default_factory=list)
    total_seconds: list[float] = field(default_factory=list)
    learn_seconds: list[float] = field(default_factory=list)
    publish_seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class ServedQuality:
    """The learner's own prequential counters (served top-10 lists), at one moment."""

    scored: int
    hits: float
    gains: float


class OnlineLearnerSystem:
    """`OnlineLearner` (the model registered as `model`) and its `Publisher`, fed
    micro-batches of `step`."""

    def __init__(
        self, config: Config, name: str = "recstream", step: int = 64, model: ModelName = "mf"
    ) -> None:
        self.name = name
        self.step = step
        self.config = config
        self.model = model
        self.cost = UpdateCost()
        self.publisher = self._new_publisher()
        self._user_rows = np.zeros(0, dtype=np.int64)
        self._item_rows = np.zeros(0, dtype=np.int64)

    def _new_publisher(self) -> Publisher:
        return Publisher(OnlineLearner(make_model(self.model, self.config)), MemoryStore())

    @property
    def learner(self) -> OnlineLearner:
        return self.publisher.learner

    def fit(self, stream: EncodedStream, stop: int) -> None:
        """Learn the stream's first `stop` views, its feature records first (known from
        the start, as `produce` publishes them before the views)."""
        self.publisher = self._new_publisher()
        for record in stream.features:
            self.learner.learn_features(record)
        self._user_rows = np.zeros(0, dtype=np.int64)
        self._item_rows = np.zeros(0, dtype=np.int64)
        self.update(stream, 0, stop)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        for a in range(start, stop, self.step):
            b = min(a + self.step, stop)
            began = time.perf_counter()
            learned = self.learner.learn(stream.events[a:b], self.publisher.served)
            published = self.publisher.add(learned)
            self.cost.total_seconds.append(time.perf_counter() - began)
            self.cost.events.append(b - a)
            self.cost.learn_seconds.append(learned.learn_seconds)
            self.cost.publish_seconds.append(published.seconds if published else 0.0)
            self._map_new_ids(stream, b)

    def served_quality(self) -> ServedQuality:
        quality = self.learner.quality
        return ServedQuality(quality.scored, quality.hits, quality.gains)

    def _map_new_ids(self, stream: EncodedStream, stop: int) -> None:
        """Table rows of the stream's users and items that first appeared before `stop`."""
        model = self.learner.model
        users, items = stream.users_before(stop), stream.items_before(stop)
        if users > self._user_rows.size:
            fresh = [model.users.row(raw) for raw in stream.user_ids[self._user_rows.size : users]]
            self._user_rows = np.concatenate([self._user_rows, np.asarray(fresh, dtype=np.int64)])
        if items > self._item_rows.size:
            fresh = [model.items.row(raw) for raw in stream.item_ids[self._item_rows.size : items]]
            self._item_rows = np.concatenate([self._item_rows, np.asarray(fresh, dtype=np.int64)])

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        return self.learner.model.score(self._user_rows[users], self._item_rows[:n_items])
