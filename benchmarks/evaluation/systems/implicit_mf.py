"""implicit's BPR and ALS (CPU), retrained from scratch on everything so far at each chunk."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import Scores
from benchmarks.evaluation.systems.matrix import interactions


def _factory(kind: str) -> Callable[..., Any]:
    if kind == "als":
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares
    if kind == "bpr":
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        return BayesianPersonalizedRanking
    raise ValueError(f"unknown implicit model {kind!r}")


class ImplicitRetrainSystem:
    """`implicit` model of `kind` ('als' or 'bpr'); `params` go to its constructor."""

    def __init__(
        self,
        kind: str,
        params: dict[str, Any],
        seed: int,
        factors: int = 64,
        step: int = 1000,
        name: str | None = None,
    ) -> None:
        self.name = name or f"implicit-{kind}"
        self.kind = kind
        self.step = step
        self.params = dict(params)
        self.seed = seed
        self.factors = factors
        self._new = _factory(kind)
        self._user_factors = np.zeros((0, factors), dtype=np.float32)
        self._item_factors = np.zeros((0, factors), dtype=np.float32)

    def fit(self, stream: EncodedStream, stop: int) -> None:
        model = self._new(
            factors=self.factors, random_state=self.seed, num_threads=1, **self.params
        )
        model.fit(interactions(stream, 0, stop), show_progress=False)
        self._user_factors = np.asarray(model.user_factors)
        self._item_factors = np.asarray(model.item_factors)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        self.fit(stream, stop)

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        return self._user_factors[users] @ self._item_factors[:n_items].T  # type: ignore[no-any-return]
