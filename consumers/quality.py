"""Prequential (test-then-train) ranking quality: was the next item in the served list?"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor


def hit_and_ndcg(served: Sequence[int], item: int, k: int) -> tuple[float, float]:
    """HR@k and NDCG@k of one event against the list that was being served."""
    for rank, candidate in enumerate(served[:k]):
        if candidate == item:
            return 1.0, 1.0 / math.log2(rank + 2)
    return 0.0, 0.0


@dataclass
class OnlineQuality:
    """Running HR@k and NDCG@k, overall and over the last `window` scored events."""

    k: int = 10
    window: int = 5000
    scored: int = 0
    hits: float = 0.0
    gains: float = 0.0
    _recent: deque[tuple[float, float]] = field(default_factory=deque, repr=False)
    _recent_hits: float = 0.0
    _recent_gains: float = 0.0

    def observe(self, served: Sequence[int], item: int) -> None:
        hit, gain = hit_and_ndcg(served, item, self.k)
        self.scored += 1
        self.hits += hit
        self.gains += gain
        self._recent.append((hit, gain))
        self._recent_hits += hit
        self._recent_gains += gain
        if len(self._recent) > self.window:
            old_hit, old_gain = self._recent.popleft()
            self._recent_hits -= old_hit
            self._recent_gains -= old_gain

    @property
    def hit_rate(self) -> float:
        return self.hits / self.scored if self.scored else 0.0

    @property
    def ndcg(self) -> float:
        return self.gains / self.scored if self.scored else 0.0

    @property
    def recent_hit_rate(self) -> float:
        return self._recent_hits / len(self._recent) if self._recent else 0.0

    @property
    def recent_ndcg(self) -> float:
        return self._recent_gains / len(self._recent) if self._recent else 0.0

    def summary(self) -> dict[str, float]:
        return {
            f"hr@{self.k}": round(self.hit_rate, 4),
            f"ndcg@{self.k}": round(self.ndcg, 4),
            "scored": self.scored,
        }

    def state(self) -> tuple[Tensor, dict[str, Any]]:
        """The recent window as a tensor, the running totals as JSON."""
        recent = torch.tensor(list(self._recent), dtype=torch.float64).reshape(-1, 2)
        return recent, {"scored": self.scored, "hits": self.hits, "gains": self.gains}

    def load_state(self, recent: Tensor, totals: dict[str, Any]) -> None:
        self.scored, self.hits, self.gains = totals["scored"], totals["hits"], totals["gains"]
        self._recent = deque((hit, gain) for hit, gain in recent.tolist())
        self._recent_hits = sum(hit for hit, _ in self._recent)
        self._recent_gains = sum(gain for _, gain in self._recent)


@dataclass
class RatingQuality:
    """Prequential RMSE and MAE of predicted ratings (each predicted before it was learned)."""

    rated: int = 0
    squared_errors: float = 0.0
    absolute_errors: float = 0.0

    def observe(self, errors: np.ndarray) -> None:
        self.rated += int(errors.size)
        self.squared_errors += float(np.square(errors, dtype=np.float64).sum())
        self.absolute_errors += float(np.abs(errors).astype(np.float64).sum())

    @property
    def rmse(self) -> float:
        return math.sqrt(self.squared_errors / self.rated) if self.rated else 0.0

    @property
    def mae(self) -> float:
        return self.absolute_errors / self.rated if self.rated else 0.0

    def summary(self) -> dict[str, float]:
        return {"rmse": round(self.rmse, 4), "mae": round(self.mae, 4), "rated": self.rated}

    def state(self) -> Tensor:
        """(rated, squared errors, absolute errors) as one float64 tensor."""
        totals = (self.rated, self.squared_errors, self.absolute_errors)
        return torch.tensor(totals, dtype=torch.float64)

    def load_state(self, totals: Tensor) -> None:
        rated, self.squared_errors, self.absolute_errors = totals.tolist()
        self.rated = int(rated)


class ServedLists:
    """The top-k item rows last published per user row, in flat arrays.

    4k + 2 bytes per user row (42 at k = 10), the user table's growth, where a dict
    of Python lists cost ~500: what a stream of constant users holds stays flat, and a
    churning one adds a tenth of what its table rows add. Lists keep their order.
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self._clear()

    def _clear(self) -> None:
        self._items = np.zeros((0, self.k), dtype=np.int32)
        self._lengths = np.zeros(0, dtype=np.int16)  # length + 1; 0: no list
        self._count = 0

    def __len__(self) -> int:
        """Users with a list."""
        return self._count

    @property
    def nbytes(self) -> int:
        return self._items.nbytes + self._lengths.nbytes

    def get(self, row: int) -> list[int] | None:
        if row >= self._lengths.shape[0] or self._lengths[row] == 0:
            return None
        return self._items[row, : self._lengths[row] - 1].tolist()

    def __getitem__(self, row: int) -> list[int]:
        found = self.get(row)
        if found is None:
            raise KeyError(row)
        return found

    def _grow_to(self, rows: int) -> None:
        if rows > self._lengths.shape[0]:
            size, old = max(rows, 2 * self._lengths.shape[0], 1024), self._lengths.shape[0]
            items, lengths = np.zeros((size, self.k), np.int32), np.zeros(size, np.int16)
            items[:old], lengths[:old] = self._items, self._lengths
            self._items, self._lengths = items, lengths

    def update(self, lists: Mapping[int, Sequence[int]]) -> None:
        """Replace these users' lists (at most k items each)."""
        if lists:
            self._grow_to(max(lists) + 1)
        for row, items in lists.items():
            self._count += int(self._lengths[row] == 0)
            self._items[row, : len(items)] = items
            self._lengths[row] = len(items) + 1

    def pop(self, row: int) -> None:
        if row < self._lengths.shape[0] and self._lengths[row]:
            self._lengths[row] = 0
            self._count -= 1

    def rows(self, limit: int | None = None) -> np.ndarray:
        """User rows with a list, ascending (the first `limit` of them)."""
        return np.flatnonzero(self._lengths)[:limit]

    def state(self) -> tuple[Tensor, Tensor, Tensor]:
        """(rows, offsets, items): the CSR form checkpoints hold."""
        rows = self.rows()
        lengths = self._lengths[rows].astype(np.int64) - 1
        offsets = np.concatenate(([0], np.cumsum(lengths)))
        keep = np.arange(self.k)[None, :] < lengths[:, None]
        items = self._items[rows][keep].astype(np.int64)
        return torch.from_numpy(rows), torch.from_numpy(offsets), torch.from_numpy(items)

    def load_state(self, rows: Tensor, offsets: Tensor, items: Tensor) -> None:
        self._clear()
        bounds, flat = offsets.tolist(), items.tolist()
        self.update({row: flat[bounds[i] : bounds[i + 1]] for i, row in enumerate(rows.tolist())})
