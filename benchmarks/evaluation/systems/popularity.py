"""Popularity: view counts before the step; the same list for everyone."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import Scores


class PopularityPeer:
    """Counts every view so far; `step` sets how often the counts are refreshed."""

    def __init__(self, name: str = "popularity", step: int = 1000) -> None:
        self.name = name
        self.step = step
        self._counts = np.zeros(0)

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self._counts = np.bincount(stream.items[:stop], minlength=stream.n_items).astype(float)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        self._counts += np.bincount(stream.items[start:stop], minlength=stream.n_items)

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        return np.broadcast_to(self._counts[:n_items], (len(users), n_items))
