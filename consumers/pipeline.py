"""One micro-batch through the learner: score what we served, learn, publish.

Pure of I/O apart from the injected store; the service loop feeds it decoded
events, the demo and the evaluation feed it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.learner import MatrixFactorization
from consumers.model.popularity import Popularity
from consumers.model.shared import Lock
from consumers.model.storage import Storage, local_storage
from consumers.quality import OnlineQuality, ServedLists
from consumers.sinks.base import RecommendationStore, StoreUnavailable
from consumers.sinks.schema import Publication, RankedList
from streamer.events import Id, ViewEvent

QUALITY_K = 10
EVENTS, VERSION = 0, 1
MAX_RETRY_SECONDS = 30.0
MAX_PENDING_ARRIVALS = 100_000
LOSS_PROBE_KEYS = 8


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What one call did; `freshness` holds publish minus arrival time per published event."""

    events: int
    loss: float
    learn_seconds: float
    publish: PublishResult | None


@dataclass(frozen=True, slots=True)
class PublishResult:
    ok: bool
    users: int
    seconds: float
    freshness: np.ndarray
    error: str = ""  # why the store refused, when not ok


class OnlineRecommender:
    """The learner with its served lists, quality trackers and publisher."""

    def __init__(
        self,
        config: ModelConfig,
        store: RecommendationStore,
        model_name: str = "mf",
        clock: Callable[[], float] = time.time,
        storage: Callable[[ModelConfig, torch.Generator], Storage] = local_storage,
        popularity: Popularity | None = None,
        totals: np.ndarray | None = None,
        totals_lock: Lock | None = None,
        search: SearchConfig | None = None,
        publish_interval_s: float = 0.0,
        similar_interval_s: float = 0.0,
        owns: Callable[[Id], bool] | None = None,
    ) -> None:
        """`storage`, `popularity` and `totals` (events, version) may be shared by a
        host's workers; `totals_lock` then guards the totals, and `owns` says which users
        are this worker's (their views, tombstones and lists are its alone: it never
        publishes another's users, whose watched items it may not know). `search` picks exact or
        approximate top-N. With `publish_interval_s` > 0, `process` publishes at most
        once per interval: a user updated by several batches in it is written once
        (`flush`, called by the service when idle and before checkpoints, always
        publishes). Similar-item lists (as costly to compute as users' lists, and
        slower to change) of the items watched meanwhile are recomputed at most once
        per `similar_interval_s`."""
        self.config = config
        self.store = store
        self.model_name = model_name
        self.clock = clock
        self.publish_interval_s = publish_interval_s
        self.similar_interval_s = similar_interval_s
        self.model = MatrixFactorization(config, storage, search)
        self.popularity = popularity or Popularity()
        self.quality = OnlineQuality(k=QUALITY_K)
        self.popularity_quality = OnlineQuality(k=QUALITY_K)
        self.owns = owns
        self.served = ServedLists(QUALITY_K)
        # events learned and versions published, shared by a host's workers when given
        self._totals = np.zeros(2, dtype=np.int64) if totals is None else totals
        self._totals_lock = totals_lock or contextlib.nullcontext()
        self.publish_failures = 0
        self._dirty_users: set[int] = set()
        self._dirty_items: set[int] = set()
        self._dirty_positives: set[int] = set()
        self._arrivals: list[float] = []
        self._doomed_keys: set[str] = set()
        self._retry_delay = 0.0
        self._retry_at = 0.0
        self._outage = False
        self._store_error = ""
        self._published_at = float("-inf")
        self._similar_at = float("-inf")

    @property
    def pending(self) -> bool:
        """Whether learned changes are waiting to be published."""
        return bool(
            self._dirty_users or self._dirty_items or self._doomed_keys or self._similar_due()
        )

    def _similar_due(self) -> bool:
        return bool(self._dirty_positives) and (
            self.clock() - self._similar_at >= self.similar_interval_s
        )

    def process(
        self, events: Sequence[ViewEvent], arrivals: Sequence[float] | None = None
    ) -> BatchResult:
        """Score, learn, publish; `arrivals` are the events' log times (default: their ts)."""
        started = time.perf_counter()
        self._score_prequential(events)
        users = self.model.users.add_many(event.user for event in events)
        items = self.model.items.add_many(event.item for event in events)
        with np.errstate(over="ignore"):  # a weight over float32's range: inf, view skipped
            weights = np.fromiter((event.weight for event in events), dtype=np.float32)
        step = self.model.learn(
            torch.from_numpy(users), torch.from_numpy(items), torch.from_numpy(weights)
        )
        loss = step.loss
        # Skipped (non-finite) views leave popularity and the published lists alone.
        users, items, weights = users[step.learned], items[step.learned], weights[step.learned]
        self.popularity.add(items, weights.astype(np.float64))
        self._count(EVENTS, len(users))
        learned = time.perf_counter()
        self._dirty_users.update(users.tolist())
        self._dirty_positives.update(items.tolist())
        self._dirty_items.update(items.tolist())
        self._dirty_items.update(step.negatives.tolist())
        room = MAX_PENDING_ARRIVALS - len(self._arrivals)
        times = [event.ts for event in events] if arrivals is None else list(arrivals)
        self._arrivals.extend(times[: max(room, 0)])
        due = self.clock() - self._published_at >= self.publish_interval_s
        return BatchResult(len(events), loss, learned - started, self.flush() if due else None)

    def flush(self) -> PublishResult | None:
        """Publish what changed since the last successful publish, unless backing off.

        When the store is down, learning goes on: the changed users and items
        stay pending and are retried with exponential backoff (capped). Once it
        is back, keys published before the outage are probed: if the store lost
        them (a restart without persistence), every user and item is published
        again at the next flush.
        """
        if not self.pending or self.clock() < self._retry_at:
            return None
        started = time.perf_counter()
        users = np.fromiter(sorted(self._dirty_users), dtype=np.int64)
        similar_due = self._similar_due()
        positives = sorted(self._dirty_positives) if similar_due else []
        probes = (
            [
                row
                for row in self.served.rows(LOSS_PROBE_KEYS + len(self._dirty_users)).tolist()
                if row not in self._dirty_users
            ][:LOSS_PROBE_KEYS]
            if self._outage
            else []
        )
        served = (
            self._publish(
                users,
                np.asarray(positives, dtype=np.int64),
                np.fromiter(sorted(self._dirty_items), dtype=np.int64),
            )
            if self._delete_doomed()
            else None
        )
        seconds = time.perf_counter() - started
        if served is None:
            self._outage = True
            self.publish_failures += 1
            self._retry_delay = min(max(2 * self._retry_delay, 0.5), MAX_RETRY_SECONDS)
            self._retry_at = self.clock() + self._retry_delay
            return PublishResult(False, 0, seconds, np.empty(0), self._store_error)
        published_at = self.clock()
        self._published_at = published_at
        self.served.update(served)
        freshness = published_at - np.asarray(self._arrivals)
        self._dirty_users.clear()
        self._dirty_items.clear()
        if similar_due:
            self._dirty_positives.clear()
            self._similar_at = published_at
        self._arrivals.clear()
        self._retry_delay = 0.0
        self._retry_at = 0.0
        if self._outage:
            self._outage = False
            if self._store_lost(probes):
                self._republish_everything()
        return PublishResult(True, len(users), seconds, freshness)

    def forget_user(self, raw: Id) -> None:
        """Drop everything about a user; their store keys go at the next flush."""
        row = self.model.forget_user(raw)
        if row is not None:
            self.served.pop(row)
            self._dirty_users.discard(row)
        keys = self.store.keys
        self._doomed_keys.update((keys.user_top(raw), keys.user_vector(raw)))

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON manifest that restore this recommender exactly."""
        served_rows, served_offsets, served_items = self.served.state()
        model_recent, model_totals = self.quality.state()
        popular_recent, popular_totals = self.popularity_quality.state()
        tensors = {
            **self.model.state(),
            **self.popularity.state(),
            "served_rows": served_rows,
            "served_offsets": served_offsets,
            "served_items": served_items,
            "dirty_users": torch.tensor(sorted(self._dirty_users), dtype=torch.long),
            "dirty_items": torch.tensor(sorted(self._dirty_items), dtype=torch.long),
            "dirty_positives": torch.tensor(sorted(self._dirty_positives), dtype=torch.long),
            "quality_recent": model_recent,
            "popularity_quality_recent": popular_recent,
        }
        manifest = {
            "model": self.model_name,
            "config": dataclasses.asdict(self.config),
            "version": self.version,
            "events": self.events,
            "doomed_keys": sorted(self._doomed_keys),
            "quality": model_totals,
            "popularity_quality": popular_totals,
        }
        return tensors, manifest

    @property
    def events(self) -> int:
        """Events learned (by every worker of the host, when totals are shared)."""
        return int(self._totals[EVENTS])

    @property
    def version(self) -> int:
        return int(self._totals[VERSION])

    def _count(self, which: int, amount: int) -> None:
        with self._totals_lock:
            self._totals[which] += amount

    def load_state(
        self, tensors: dict[str, torch.Tensor], manifest: dict[str, Any], shared: bool = True
    ) -> None:
        """Restore; `shared=False` leaves the host's shared state (tables, registries,
        popularity, totals) alone: it is restored once for every worker."""
        if manifest["config"] != dataclasses.asdict(self.config):
            raise ValueError(f"checkpoint was written with {manifest['config']}, not {self.config}")
        self.model.load_state(tensors, shared)
        if shared:
            self.popularity.load_state(tensors)
        self.served.load_state(
            tensors["served_rows"], tensors["served_offsets"], tensors["served_items"]
        )
        self._dirty_users = set(self._own_live_users(tensors["dirty_users"].numpy()))
        self._dirty_items = set(tensors["dirty_items"].tolist())
        self._dirty_positives = set(tensors["dirty_positives"].tolist())
        self.quality.load_state(tensors["quality_recent"], manifest["quality"])
        self.popularity_quality.load_state(
            tensors["popularity_quality_recent"], manifest["popularity_quality"]
        )
        self._doomed_keys = set(manifest["doomed_keys"])
        if shared:
            self._totals[VERSION], self._totals[EVENTS] = manifest["version"], manifest["events"]

    def _score_prequential(self, events: Sequence[ViewEvent]) -> None:
        """Before learning: was each event's item in what we were serving its user?"""
        scored = []
        for event in events:
            user = self.model.users.row(event.user)
            served = None if user is None else self.served.get(user)
            if user is not None and served is not None:
                scored.append((user, served, self.model.items.row(event.item)))
        if not scored:
            return
        history = self.model.history
        user_rows = np.fromiter((user for user, _, _ in scored), np.int64, len(scored))
        # The baseline needs no more of the ranking than K past the longest history.
        longest = int(history.counts(user_rows).max())
        ranking = self.popularity.ranking(QUALITY_K + longest, len(self.model.items))
        unwatched = ~history.watched(user_rows[:, None], ranking[None, :])
        for (_, served, item), allowed in zip(scored, unwatched, strict=True):
            item_row = -1 if item is None else item
            self.quality.observe(served, item_row)
            baseline = ranking[allowed][:QUALITY_K].tolist()
            self.popularity_quality.observe(baseline, item_row)

    def _store_lost(self, user_rows: list[int]) -> bool:
        """Whether any of these users' lists, published before an outage, is gone."""
        keys, users = self.store.keys, self.model.users
        raws = [raw for raw in map(users.raw, user_rows) if raw is not None]  # not forgotten
        try:
            return any(self.store.get(keys.user_top(raw)) is None for raw in raws)
        except StoreUnavailable:
            self._outage = True  # down again: probe after the next successful publish
            return False

    def _own_live_users(self, rows: np.ndarray) -> list[int]:
        """Those of these user rows that are not forgotten and are this worker's."""
        users = self.model.users
        rows = np.intersect1d(rows, users.live_rows())
        if self.owns is None:
            return rows.tolist()
        owns = self.owns
        return [row for row, raw in zip(rows.tolist(), users.raws(rows), strict=True) if owns(raw)]

    def _republish_everything(self) -> None:
        self._dirty_users.update(self._own_live_users(self.model.users.live_rows()))
        self._dirty_items.update(range(len(self.model.items)))
        self._dirty_positives.update(range(len(self.model.items)))

    def _delete_doomed(self) -> bool:
        try:
            self.store.delete(sorted(self._doomed_keys))
        except StoreUnavailable as error:
            self._store_error = str(error)
            return False
        self._doomed_keys.clear()
        return True

    def _ranked(
        self, rows: np.ndarray, scores: torch.Tensor, tops: torch.Tensor
    ) -> dict[int, tuple[list[int], np.ndarray]]:
        """Per row, its (item rows, float32 scores) best first, excluded (-inf) slots dropped."""
        kept = torch.isfinite(scores).sum(dim=1).tolist()
        score_rows, item_lists = scores.numpy(), tops.tolist()
        return {
            row: (item_lists[i][:n], score_rows[i, :n])
            for i, (row, n) in enumerate(zip(rows.tolist(), kept, strict=True))
        }

    def _as_list(self, ranked: tuple[list[int], np.ndarray]) -> RankedList:
        return RankedList(self.model.items.raws(ranked[0]), ranked[1])

    def _publish(
        self, user_rows: np.ndarray, positive_rows: np.ndarray, touched_items: np.ndarray
    ) -> dict[int, list[int]] | None:
        """Write one publication; the new served top-k per user row, or None on failure."""
        model = self.model
        n = self.config.top_n
        model.items_moved(touched_items.tolist())
        user_tops: dict[Id, RankedList] = {}
        served: dict[int, list[int]] = {}
        for row, ranked in self._ranked(
            user_rows, *model.recommend(torch.from_numpy(user_rows), n)
        ).items():
            served[row] = ranked[0][:QUALITY_K]
            user_tops[model.users.raw(row)] = self._as_list(ranked)
        similar = (
            {
                model.items.raw(row): self._as_list(ranked)
                for row, ranked in self._ranked(
                    positive_rows, *model.similar(torch.from_numpy(positive_rows), n)
                ).items()
            }
            if positive_rows.size  # none between similar-list refreshes
            else {}
        )
        user_vectors = model.user_table.weight[torch.from_numpy(user_rows)].numpy()
        item_vectors = model.item_table.weight[torch.from_numpy(touched_items)].numpy()
        popular_rows = self.popularity.top(n, self.popularity.ranking(n, len(model.items)))
        self._count(VERSION, 1)
        publication = Publication(
            model=self.model_name,
            version=self.version,
            updated_at=round(self.clock(), 3),
            user_tops=user_tops,
            user_vectors=dict(zip(model.users.raws(user_rows), user_vectors, strict=True)),
            item_vectors=dict(zip(model.items.raws(touched_items), item_vectors, strict=True)),
            item_similar=similar,
            popular=RankedList(
                model.items.raws(popular_rows), self.popularity.scores(popular_rows)
            ),
            meta={
                "model": self.model_name,
                "dim": self.config.dim,
                "version": self.version,
                "updated_at": round(self.clock(), 3),
                "users": len(model.users),
                "items": len(model.items),
                "events": self.events,
            },
        )
        try:
            self.store.publish(publication)
        except StoreUnavailable as error:
            self._store_error = str(error)
            return None
        return served
