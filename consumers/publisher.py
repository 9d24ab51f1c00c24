"""The publisher: what the learner changed, turned into store writes.

It owns every store failure: while the store is down, learning goes on and the
changed users and items stay pending, retried with exponential backoff (capped);
once it is back, keys published before the outage are probed, and if the store lost
them (a restart without persistence) everything is published again. A forgotten
user's keys are deleted before anything else is written. The lists it publishes are
the served lists the learner scores the next views against. A batch's lists and vectors
are encoded together (`BatchEncoder`), not one Python object per user.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from consumers.learner import QUALITY_K, LearnedBatch, OnlineLearner
from consumers.model.base import ListKind, Ranking, Staged
from consumers.quality import ServedLists
from consumers.sinks.base import RecommendationStore, StoreUnavailable
from consumers.sinks.schema import (
    BatchEncoder,
    Publication,
    RankedList,
    RankedRows,
    Stamp,
    VectorRows,
)
from streamer.events import Id

MAX_RETRY_SECONDS = 30.0
MAX_PENDING_ARRIVALS = 100_000
LOSS_PROBE_KEYS = 8


@dataclass(frozen=True, slots=True)
class PublishResult:
    """One publish; `freshness` holds publish minus arrival time per published event."""

    ok: bool
    users: int
    seconds: float
    freshness: np.ndarray
    error: str = ""  # why the store refused, when not ok


class Publisher:
    """Publishes the learner's model, popularity and served lists to a store."""

    def __init__(
        self,
        learner: OnlineLearner,
        store: RecommendationStore,
        clock: Callable[[], float] = time.time,
        publish_interval_s: float = 0.0,
        similar_interval_s: float = 0.0,
        owns: Callable[[Id], bool] | None = None,
    ) -> None:
        """`owns` says which users are this worker's (their views, tombstones and lists
        are its alone: it never publishes another's users, whose watched items it may
        not know). With `publish_interval_s` > 0, `add` publishes at most once per
        interval: a user updated by several batches in it is written once (`flush`,
        called by the service when idle and before checkpoints, always publishes).
        Similar-item lists (as costly to compute as users' lists, and slower to change)
        of the items watched meanwhile are recomputed at most once per
        `similar_interval_s`."""
        self.learner = learner
        self.store = store
        self.clock = clock
        self.publish_interval_s = publish_interval_s
        self.similar_interval_s = similar_interval_s
        self.owns = owns
        self.served = ServedLists(QUALITY_K)
        self.encoder = BatchEncoder(store.keys, self._item_ids)
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

    @property
    def version(self) -> int:
        """Publications written (by every worker of the host, when totals are shared)."""
        return self.learner.totals.version

    def _similar_due(self) -> bool:
        return bool(self._dirty_positives) and (
            self.clock() - self._similar_at >= self.similar_interval_s
        )

    def add(self, learned: LearnedBatch) -> PublishResult | None:
        """Take in what a batch changed; publish if the publish interval has passed."""
        self._dirty_users.update(learned.users.tolist())
        self._dirty_positives.update(learned.items.tolist())
        self._dirty_items.update(learned.items.tolist())
        self._dirty_items.update(learned.negatives.tolist())
        room = MAX_PENDING_ARRIVALS - len(self._arrivals)
        self._arrivals.extend(learned.arrivals[: max(room, 0)])
        due = self.clock() - self._published_at >= self.publish_interval_s
        return self.flush() if due else None

    def flush(self) -> PublishResult | None:
        """Publish what changed since the last successful publish, unless backing off."""
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
        ranking = (
            self._publish(
                users,
                np.asarray(positives, dtype=np.int64),
                np.fromiter(sorted(self._dirty_items), dtype=np.int64),
            )
            if self._delete_doomed()
            else None
        )
        seconds = time.perf_counter() - started
        if ranking is None:
            self._outage = True
            self.publish_failures += 1
            self._retry_delay = min(max(2 * self._retry_delay, 0.5), MAX_RETRY_SECONDS)
            self._retry_at = self.clock() + self._retry_delay
            return PublishResult(False, 0, seconds, np.empty(0), self._store_error)
        published_at = self.clock()
        self._published_at = published_at
        self.served.replace(users, ranking.items, np.isfinite(ranking.scores).sum(axis=1))
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

    def item_changed(self, row: int) -> None:
        """An item's features moved its vector: publish it and its similar list at the
        next flush (a new item's too, before its first view)."""
        self._dirty_items.add(row)
        self._dirty_positives.add(row)

    def forget_user(self, raw: Id, row: int | None) -> None:
        """A user the learner forgot (at `row`, if they had one): their served list goes
        now, their store keys at the next flush."""
        if row is not None:
            self.served.pop(row)
            self._dirty_users.discard(row)
        keys = self.store.keys
        self._doomed_keys.update((keys.user_top(raw), keys.user_vector(raw)))

    def state(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON manifest of the served lists, what is pending and the version."""
        served_rows, served_offsets, served_items = self.served.state()
        tensors = {
            "served_rows": served_rows,
            "served_offsets": served_offsets,
            "served_items": served_items,
            "dirty_users": torch.tensor(sorted(self._dirty_users), dtype=torch.long),
            "dirty_items": torch.tensor(sorted(self._dirty_items), dtype=torch.long),
            "dirty_positives": torch.tensor(sorted(self._dirty_positives), dtype=torch.long),
        }
        manifest = {"version": self.version, "doomed_keys": sorted(self._doomed_keys)}
        return tensors, manifest

    def load_state(
        self, tensors: dict[str, torch.Tensor], manifest: dict[str, Any], shared: bool = True
    ) -> None:
        """Restore, after the learner (pending users are checked against its registry);
        `shared=False` leaves the host's version alone (restored once for every worker)."""
        self.served.load_state(
            tensors["served_rows"], tensors["served_offsets"], tensors["served_items"]
        )
        self._dirty_users = set(self._own_live_users(tensors["dirty_users"].numpy()))
        self._dirty_items = set(tensors["dirty_items"].tolist())
        self._dirty_positives = set(tensors["dirty_positives"].tolist())
        self._doomed_keys = set(manifest["doomed_keys"])
        self.encoder = BatchEncoder(self.store.keys, self._item_ids)  # the restored ids
        if shared:
            self.learner.totals.load_version(manifest["version"])

    def _item_ids(self, rows: list[int]) -> list[Id]:
        return self.learner.model.items.raws(rows)

    def _store_lost(self, user_rows: list[int]) -> bool:
        """Whether any of these users' lists, published before an outage, is gone."""
        keys, users = self.store.keys, self.learner.model.users
        raws = [raw for raw in map(users.raw, user_rows) if raw is not None]  # not forgotten
        try:
            return any(self.store.get(keys.user_top(raw)) is None for raw in raws)
        except StoreUnavailable:
            self._outage = True  # down again: probe after the next successful publish
            return False

    def _own_live_users(self, rows: np.ndarray) -> list[int]:
        """Those of these user rows that are not forgotten and are this worker's."""
        users = self.learner.model.users
        rows = np.intersect1d(rows, users.live_rows())
        if self.owns is None:
            every: list[int] = rows.tolist()
            return every
        owns = self.owns
        return [row for row, raw in zip(rows.tolist(), users.raws(rows), strict=True) if owns(raw)]

    def _republish_everything(self) -> None:
        items = len(self.learner.model.items)
        self._dirty_users.update(self._own_live_users(self.learner.model.users.live_rows()))
        self._dirty_items.update(range(items))
        self._dirty_positives.update(range(items))

    def _delete_doomed(self) -> bool:
        try:
            self.store.delete(sorted(self._doomed_keys))
        except StoreUnavailable as error:
            self._store_error = str(error)
            return False
        self._doomed_keys.clear()
        return True

    def _stages(self, kind: ListKind) -> tuple[str, ...]:
        """The stages that made the model's lists of `kind` (none for one-stage models)."""
        model = self.learner.model
        return model.stages(kind) if isinstance(model, Staged) else ()

    def _publish(
        self, user_rows: np.ndarray, positive_rows: np.ndarray, touched_items: np.ndarray
    ) -> Ranking | None:
        """Write one publication; the users' new ranking, or None on failure."""
        model, popularity = self.learner.model, self.learner.popularity
        n = model.config.top_n
        model.items_moved(touched_items.tolist())
        user_ranking = model.recommend(user_rows, n)
        similar = (
            model.similar(positive_rows, n)
            if positive_rows.size  # none between similar-list refreshes
            else Ranking(np.empty((0, n), np.float32), np.empty((0, n), np.int64))
        )
        user_ids = model.users.raws(user_rows.tolist())
        popular_rows = popularity.top(n, popularity.ranking(n, len(model.items)))
        self.learner.totals.add_version()
        stamp = Stamp(model.name, self.version, round(self.clock(), 3))
        encoded = self.encoder.strings(
            stamp,
            RankedRows(user_ids, *user_ranking, self._stages("recommend")),
            VectorRows(user_ids, model.user_vectors(user_rows)),
            VectorRows(model.items.raws(touched_items.tolist()), model.item_vectors(touched_items)),
            RankedRows(model.items.raws(positive_rows.tolist()), *similar, self._stages("similar")),
        )
        publication = Publication(
            *stamp,
            popular=RankedList(model.items.raws(popular_rows), popularity.scores(popular_rows)),
            meta={
                "model": model.name,
                "dim": model.config.dim,
                "version": self.version,
                "updated_at": stamp.updated_at,
                "users": len(model.users),
                "items": len(model.items),
                "events": self.learner.events,
            },
            encoded=encoded,
        )
        try:
            self.store.publish(publication)
        except StoreUnavailable as error:
            self._store_error = str(error)
            return None
        return user_ranking
