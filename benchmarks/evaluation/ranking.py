"""Ranking metrics: one event against a full ranking, and top-k lists against a truth set.

Ties: a ranked item's position among tied candidates is taken as uniform, and the
metric is its expectation, so a constant scorer earns the chance level, not a hit.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def discounts(k: int) -> FloatArray:
    """`1 / log2(rank + 2)` for ranks `0..k-1` (rank 0 is the top slot)."""
    return 1.0 / np.log2(np.arange(k) + 2.0)


def rank_counts(
    scores: NDArray[np.floating], target: int, exclude: NDArray[np.int64]
) -> tuple[int, int]:
    """(candidates scoring above the target, other candidates tied with it).

    Candidates are every index of `scores` except `exclude` (which must not hold the
    target; repeats and indices past the end are ignored). NaN scores count as -inf.
    """
    row = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    exclude = np.unique(exclude[exclude < row.size])
    value = row[target]
    greater = int(np.count_nonzero(row > value))
    ties = int(np.count_nonzero(row == value)) - 1
    if exclude.size:
        excluded = row[exclude]
        greater -= int(np.count_nonzero(excluded > value))
        ties -= int(np.count_nonzero(excluded == value))
    return greater, ties


def expected_hit_ndcg(greater: int, ties: int, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k of one relevant item ranked uniformly in `[greater, greater + ties]`."""
    if greater >= k:
        return 0.0, 0.0
    last = min(greater + ties + 1, k)  # one past the last position that still counts
    gains = discounts(k)[greater:last]
    return (last - greater) / (ties + 1), float(gains.sum()) / (ties + 1)


def hit_at_k(recommended: Sequence[int], truth: Collection[int], k: int) -> float:
    return float(any(item in truth for item in recommended[:k]))


def recall_at_k(recommended: Sequence[int], truth: Collection[int], k: int) -> float:
    """Share of the truth found in the top `k` (0 for an empty truth)."""
    if not truth:
        return 0.0
    return sum(item in truth for item in recommended[:k]) / len(truth)


def ndcg_at_k(recommended: Sequence[int], truth: Collection[int], k: int) -> float:
    """Binary-gain NDCG@k; the ideal list puts `min(|truth|, k)` relevant items on top."""
    ideal = min(len(truth), k)
    if ideal == 0:
        return 0.0
    gains = discounts(k)
    dcg = sum(gains[rank] for rank, item in enumerate(recommended[:k]) if item in truth)
    return float(dcg / gains[:ideal].sum())


def catalog_coverage(lists: Sequence[Sequence[int]], n_catalog: int, k: int) -> float:
    """Share of the catalog that appears in at least one top-`k` list."""
    if n_catalog <= 0:
        return 0.0
    shown = {item for recommended in lists for item in recommended[:k]}
    return len(shown) / n_catalog


def top_k(scores: NDArray[np.floating], k: int, exclude: NDArray[np.int64]) -> list[int]:
    """The `k` best indices of `scores` minus `exclude`, best first, ties by lower index."""
    row = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    allowed = np.ones(row.size, dtype=bool)
    allowed[exclude[exclude < row.size]] = False
    candidates = np.flatnonzero(allowed)
    order = np.argsort(-row[candidates], kind="stable")
    return [int(item) for item in candidates[order[:k]]]
