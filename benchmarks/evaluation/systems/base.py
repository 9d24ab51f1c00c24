"""What the protocols need from a recommender: learn a prefix, learn more, score."""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream

Scores = NDArray[np.floating]


class System(Protocol):
    """A recommender driven over an `EncodedStream` in stream order.

    `step` is how many events it takes per update during the test: the chunk size
    for batch peers, the micro-batch size for online learners. The protocols never
    let a step cross a chunk boundary.
    """

    name: str
    step: int

    def fit(self, stream: EncodedStream, stop: int) -> None:
        """Learn events `[0, stop)` from a fresh state."""

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        """Take in events `[start, stop)`, having learned `[0, start)` already."""

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        """Scores `(len(users), n_items)` of items `[0, n_items)` for users already learned.

        Every user and item passed in appeared before the last fit/update's end.
        """
