"""Temporal split: learn the first part, recommend once, compare with what came next.

Users present in both parts are evaluated. A user's truth is the items they watched in
the test part that exist in the training catalogue and that they had not watched in
training; candidates are every training item minus the user's own training items. The
test part is `[split, stop)`: the rest of the stream, or a validation stretch that ends
where the real test begins (peers are tuned on that, never on the test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.ranking import (
    catalog_coverage,
    hit_at_k,
    ndcg_at_k,
    recall_at_k,
    top_k,
)
from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import System

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class TemporalTruth:
    """Who is evaluated and against what, for one split point."""

    split: int
    n_catalog: int
    users: NDArray[np.int64]
    truth: list[set[int]]
    train_items: list[NDArray[np.int64]]
    dropped_new_items: int


def temporal_truth(stream: EncodedStream, split: int, stop: int | None = None) -> TemporalTruth:
    n_users, n_catalog = stream.users_before(split), stream.items_before(split)
    users: list[int] = []
    truth: list[set[int]] = []
    train_items: list[NDArray[np.int64]] = []
    dropped = 0
    for user in range(n_users):
        own = stream.user_items_before(user, split)
        later = stream.user_items[user][own.size :]
        if stop is not None:
            later = later[: stream.user_items_before(user, stop).size - own.size]
        fresh = set(later.tolist()) - set(own.tolist())
        known = {item for item in fresh if item < n_catalog}
        dropped += len(fresh) - len(known)
        if known:
            users.append(user)
            truth.append(known)
            train_items.append(own)
    return TemporalTruth(split, n_catalog, np.asarray(users, np.int64), truth, train_items, dropped)


@dataclass(frozen=True)
class TemporalResult:
    system: str
    users: NDArray[np.int64]
    recall: FloatArray
    hit: FloatArray
    ndcg: FloatArray
    coverage: float

    def summary(self) -> dict[str, float]:
        return {
            "recall@10": float(self.recall.mean()),
            "hr@10": float(self.hit.mean()),
            "ndcg@10": float(self.ndcg.mean()),
            "coverage@10": self.coverage,
        }


def evaluate_temporal(
    system: System, truth: TemporalTruth, k: int = 10, batch: int = 512
) -> TemporalResult:
    """Score `system` (already fit on `[0, truth.split)`) on the temporal test."""
    lists: list[list[int]] = []
    for a in range(0, truth.users.size, batch):
        users = truth.users[a : a + batch]
        scores = system.scores(users, truth.n_catalog)
        for row, own in zip(scores, truth.train_items[a : a + batch], strict=True):
            lists.append(top_k(row, k, own))
    recall = np.array([recall_at_k(r, t, k) for r, t in zip(lists, truth.truth, strict=True)])
    hit = np.array([hit_at_k(r, t, k) for r, t in zip(lists, truth.truth, strict=True)])
    ndcg = np.array([ndcg_at_k(r, t, k) for r, t in zip(lists, truth.truth, strict=True)])
    return TemporalResult(
        system.name, truth.users, recall, hit, ndcg, catalog_coverage(lists, truth.n_catalog, k)
    )
