"""implicit's BPR and ALS (CPU): retrained from scratch on everything so far each
`retrain` events; ALS also refreshes, between retrains, the factors of the users and
items of each step with `partial_fit_users`/`partial_fit_items` (BPR has no partial fit).
"""

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
    """`implicit` model of `kind` ('als' or 'bpr'); `params` go to its constructor.

    `step`: events per update; `retrain`: events between full retrains (the chunk).
    With `step < retrain` (ALS only) the updates in between are partial fits.
    """

    def __init__(
        self,
        kind: str,
        params: dict[str, Any],
        seed: int,
        factors: int = 64,
        step: int = 1000,
        name: str | None = None,
        retrain: int | None = None,
    ) -> None:
        if kind != "als" and retrain is not None and step < retrain:
            raise ValueError(f"implicit {kind} has no partial fit: step must be the retrain")
        self.name = name or f"implicit-{kind}"
        self.kind = kind
        self.step = step
        self.retrain = step if retrain is None else retrain
        self.params = dict(params)
        self.seed = seed
        self.factors = factors
        self._new = _factory(kind)
        self._model: Any = None
        self._since_fit = 0

    def fit(self, stream: EncodedStream, stop: int) -> None:
        self._model = self._new(
            factors=self.factors, random_state=self.seed, num_threads=1, **self.params
        )
        # ALS is sized to the whole stream so that partial fits can take ids new since
        # the retrain: ids not seen yet have no events and get zero factors
        shape = (stream.n_users, stream.n_items) if self.kind == "als" else None
        self._model.fit(interactions(stream, 0, stop, shape), show_progress=False)
        self._since_fit = 0

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        self._since_fit += stop - start
        if self.step >= self.retrain or self._since_fit >= self.retrain:
            self.fit(stream, stop)
            return
        seen = interactions(stream, 0, stop, (stream.n_users, stream.n_items))
        items = np.unique(stream.items[start:stop])
        users = np.unique(stream.users[start:stop])
        self._model.partial_fit_items(items, seen.T.tocsr()[items])
        self._model.partial_fit_users(users, seen[users])

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        user_factors = np.asarray(self._model.user_factors)
        item_factors = np.asarray(self._model.item_factors)
        return user_factors[users] @ item_factors[:n_items].T  # type: ignore[no-any-return]
