"""Prequential (test-then-train) ranking quality: was the next item in the served list?"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

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
