"""Streaming item popularity: the fallback list and the baseline to beat."""

from __future__ import annotations

import contextlib
from collections.abc import Collection

import numpy as np
import torch
from torch import Tensor

from consumers.model.shared import Lock


class Popularity:
    """View counts per item row, optionally decayed per event so trends move.

    `shared` is (counts, lock): an array shared by a host's workers (fixed size, no
    decay: the decay scale is per process) and the host's lock, held while adding (an
    unlocked read-add-write from two processes loses increments).
    """

    def __init__(
        self,
        half_life_events: float | None = None,
        shared: tuple[np.ndarray, Lock] | None = None,
    ) -> None:
        if shared is not None and half_life_events is not None:
            raise ValueError("decaying popularity needs counts private to one process")
        self._fixed = shared is not None
        self._counts = np.zeros(1024) if shared is None else shared[0]
        self._lock: Lock = contextlib.nullcontext() if shared is None else shared[1]
        self._scale = 1.0
        self._growth = 1.0 if half_life_events is None else 2.0 ** (1.0 / half_life_events)

    def add(self, item_rows: np.ndarray, weights: np.ndarray | None = None) -> None:
        if item_rows.size == 0:
            return
        needed = int(item_rows.max()) + 1
        if needed > self._counts.size:
            if self._fixed:
                raise ValueError(f"popularity counts hold {self._counts.size:,} items")
            grown = np.zeros(max(needed, int(self._counts.size * 1.5)))
            grown[: self._counts.size] = self._counts
            self._counts = grown
        increments = np.ones(item_rows.size) if weights is None else weights
        # Decay by growing the weight of new views instead of shrinking all counts.
        steps = self._scale * self._growth ** np.arange(1, item_rows.size + 1)
        with self._lock:
            np.add.at(self._counts, item_rows, increments * steps)
        self._scale = float(steps[-1])
        if self._scale > 1e100:
            self._counts /= self._scale
            self._scale = 1.0

    def state(self) -> dict[str, Tensor]:
        return {
            "popularity_counts": torch.from_numpy(self._counts.copy()),
            "popularity_scale": torch.tensor([self._scale, self._growth], dtype=torch.float64),
        }

    def load_state(self, tensors: dict[str, Tensor]) -> None:
        counts = tensors["popularity_counts"].numpy()
        if self._fixed:
            self._counts[:] = 0.0
            self._counts[: counts.size] = counts
        else:
            self._counts = counts.copy()
        self._scale, self._growth = tensors["popularity_scale"].tolist()

    def ranking(self, limit: int | None = None, rows: int | None = None) -> np.ndarray:
        """Item rows, most popular first (ties by row), items never seen left out;
        with `limit`, only the first `limit` of them (found without sorting them all);
        with `rows`, only rows below it are looked at (the items that exist)."""
        # A snapshot: a host's other workers add to shared counts meanwhile, and numpy's
        # nonzero raises when the array changes under it.
        counts = self._counts[:rows].copy()
        seen = np.flatnonzero(counts)
        if limit is not None and seen.size > limit:
            values = counts[seen]
            kth = np.partition(values, seen.size - limit)[seen.size - limit]
            seen = seen[values >= kth]  # every row that can be in the first `limit`
        order = np.lexsort((seen, -counts[seen]))
        return seen[order][:limit]

    def top(
        self, n: int, ranking: np.ndarray | list[int], exclude: Collection[int] = ()
    ) -> list[int]:
        """The first `n` rows of `ranking` not in `exclude`."""
        chosen: list[int] = []
        for row in ranking.tolist() if isinstance(ranking, np.ndarray) else ranking:
            if len(chosen) == n:
                break
            if row not in exclude:
                chosen.append(row)
        return chosen

    def scores(self, rows: list[int]) -> list[float]:
        return [float(self._counts[row] / self._scale) for row in rows]
