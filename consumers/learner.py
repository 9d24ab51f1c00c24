"""The online learner: a micro-batch of views in, what it changed out.

Per batch, in this order: score each view against the list its user was being
served (prequential: test, then train), map ids to rows, learn, count popularity.
No I/O: nothing here imports ingest, sinks, Kafka or Redis; the publisher
(consumers/publisher.py) turns what changed into store writes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from consumers.model.base import Batch, Model
from consumers.model.features import FeatureStore, ReadsFeatures
from consumers.model.popularity import Popularity
from consumers.model.shared import Lock
from consumers.quality import OnlineQuality, RatingQuality, ServedLists
from streamer.events import EntityFeatures, EntityKind, Id, ViewEvent

QUALITY_K = 10
EVENTS, VERSION = 0, 1


class Totals:
    """Events learned and versions published; with `shared` (an int64 array of two and
    the host's lock), those of every worker of a host."""

    def __init__(self, shared: tuple[np.ndarray, Lock] | None = None) -> None:
        self._counts = np.zeros(2, dtype=np.int64) if shared is None else shared[0]
        self._lock: Lock = contextlib.nullcontext() if shared is None else shared[1]

    @property
    def events(self) -> int:
        return int(self._counts[EVENTS])

    @property
    def version(self) -> int:
        return int(self._counts[VERSION])

    def add_events(self, amount: int) -> None:
        with self._lock:
            self._counts[EVENTS] += amount

    def add_version(self) -> None:
        with self._lock:
            self._counts[VERSION] += 1

    def load_events(self, events: int) -> None:
        self._counts[EVENTS] = events

    def load_version(self, version: int) -> None:
        self._counts[VERSION] = version


@dataclass(frozen=True, slots=True)
class LearnedBatch:
    """What one batch changed: its learned views' user and item rows, the negative
    item rows the updates moved, and the views' arrival times (for freshness)."""

    events: int
    loss: float
    learn_seconds: float
    users: np.ndarray
    items: np.ndarray
    negatives: np.ndarray
    arrivals: list[float]


class OnlineLearner:
    """A `Model` with its popularity baseline and prequential quality trackers.

    `popularity` and `totals` may be shared by a host's workers (the model's
    registries and tables then are too).
    """

    def __init__(
        self,
        model: Model,
        popularity: Popularity | None = None,
        totals: Totals | None = None,
    ) -> None:
        self.model = model
        self.popularity = popularity or Popularity()
        self.totals = totals or Totals()
        self.quality = OnlineQuality(k=QUALITY_K)
        self.popularity_quality = OnlineQuality(k=QUALITY_K)
        self.rating_quality = RatingQuality()
        self.features = FeatureStore()
        if isinstance(model, ReadsFeatures):
            model.read_features(self.features)

    @property
    def events(self) -> int:
        """Events learned (by every worker of the host, when totals are shared)."""
        return self.totals.events

    def learn(
        self,
        events: Sequence[ViewEvent],
        served: ServedLists,
        arrivals: Sequence[float] | None = None,
    ) -> LearnedBatch:
        """Score against `served`, then learn; `arrivals` are the events' log times
        (default: their ts). Non-finite views change neither popularity nor the rows
        reported as changed."""
        started = time.perf_counter()
        self._score_prequential(events, served)
        users = self.model.users.add_many(event.user for event in events)
        items = self.model.items.add_many(event.item for event in events)
        with np.errstate(over="ignore"):  # a weight over float32's range: inf, view skipped
            weights = np.fromiter((event.weight for event in events), dtype=np.float32)
        step = self.model.learn(
            Batch(
                users,
                items,
                np.fromiter((event.ts for event in events), dtype=np.float64, count=len(events)),
                weights,
                np.fromiter(
                    (np.nan if event.rating is None else event.rating for event in events),
                    dtype=np.float32,
                    count=len(events),
                ),
            )
        )
        self.rating_quality.observe(step.rating_errors)
        users, items, weights = users[step.learned], items[step.learned], weights[step.learned]
        self.popularity.add(items, weights.astype(np.float64))
        self.totals.add_events(len(users))
        return LearnedBatch(
            len(events),
            step.loss,
            time.perf_counter() - started,
            users,
            items,
            step.negatives,
            [event.ts for event in events] if arrivals is None else list(arrivals),
        )

    def forget_user(self, raw: Id) -> int | None:
        """Drop everything learned about a user; the row they had, if any."""
        return self.model.forget_user(raw)

    def learn_features(self, record: EntityFeatures) -> int | None:
        """Keep a user's or item's features in place of older ones; the entity's row,
        for a model that reads features (None for one that does not)."""
        self.features.update(record)
        return self._features_arrived(record.kind, record.id)

    def forget_features(self, kind: EntityKind, raw: Id) -> int | None:
        """Drop an entity's features (a tombstone on its topic); its row, as above."""
        self.features.forget(kind, raw)
        return self._features_arrived(kind, raw)

    def _features_arrived(self, kind: EntityKind, raw: Id) -> int | None:
        if isinstance(self.model, ReadsFeatures):
            return self.model.features_arrived(kind, raw)
        return None

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON manifest of the model, popularity, quality and events."""
        model_recent, model_totals = self.quality.state()
        popular_recent, popular_totals = self.popularity_quality.state()
        tensors = {
            **self.model.state(),
            **self.popularity.state(),
            **self.features.state(),
            "quality_recent": model_recent,
            "popularity_quality_recent": popular_recent,
            "rating_quality": self.rating_quality.state(),
        }
        manifest = {
            "model": self.model.name,
            "config": dataclasses.asdict(self.model.config),
            "events": self.events,
            "quality": model_totals,
            "popularity_quality": popular_totals,
        }
        return tensors, manifest

    def load_state(
        self, tensors: dict[str, torch.Tensor], manifest: dict[str, Any], shared: bool = True
    ) -> None:
        """Restore; `shared=False` leaves the host's shared state (tables, registries,
        popularity, totals) alone: it is restored once for every worker."""
        config = dataclasses.asdict(self.model.config)
        if manifest["config"] != config:
            raise ValueError(
                f"checkpoint was written with {manifest['config']}, not {self.model.config}"
            )
        self.features.load_state(tensors)  # every worker holds all; the model reads them
        self.model.load_state(tensors, shared)
        if shared:
            self.popularity.load_state(tensors)
            self.totals.load_events(manifest["events"])
        self.quality.load_state(tensors["quality_recent"], manifest["quality"])
        self.popularity_quality.load_state(
            tensors["popularity_quality_recent"], manifest["popularity_quality"]
        )
        if "rating_quality" in tensors:  # checkpoints before the rating model have none
            self.rating_quality.load_state(tensors["rating_quality"])

    def _score_prequential(self, events: Sequence[ViewEvent], served: ServedLists) -> None:
        """Before learning: was each event's item in what we were serving its user?"""
        scored = []
        for event in events:
            user = self.model.users.row(event.user)
            shown = None if user is None else served.get(user)
            if user is not None and shown is not None:
                scored.append((user, shown, self.model.items.row(event.item)))
        if not scored:
            return
        history = self.model.history
        user_rows = np.fromiter((user for user, _, _ in scored), np.int64, len(scored))
        # The baseline needs no more of the ranking than K past the longest history.
        longest = int(history.counts(user_rows).max())
        ranking = self.popularity.ranking(QUALITY_K + longest, len(self.model.items))
        unwatched = ~history.watched(user_rows[:, None], ranking[None, :])
        for (_, shown, item), allowed in zip(scored, unwatched, strict=True):
            item_row = -1 if item is None else item
            self.quality.observe(shown, item_row)
            baseline = ranking[allowed][:QUALITY_K].tolist()
            self.popularity_quality.observe(baseline, item_row)
