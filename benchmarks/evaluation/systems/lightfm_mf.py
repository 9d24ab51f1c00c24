"""LightFM (WARP or BPR loss) updated with `fit_partial` per step.

LightFM needs its matrix shape up front, so the model is sized to the whole stream's
users and items; rows of ids that have not appeared yet are never positives and never
candidates. With `features`, users and items also carry the stream's side information
(`side_features.py`: the tokens our feature models embed), so cold ones are scored by
their tokens. The first
fit takes the training prefix for `epochs`; each later step (a chunk, or a micro-batch
at the learner's cadence) is fed to `fit_partial` for `chunk_epochs` (the step alone:
no replay).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import Scores
from benchmarks.evaluation.systems.matrix import interactions


class LightFMPartialSystem:
    def __init__(
        self,
        loss: str,
        params: dict[str, Any],
        seed: int,
        epochs: int,
        chunk_epochs: int,
        factors: int = 64,
        step: int = 1000,
        name: str | None = None,
        features: bool = False,
    ) -> None:
        self.name = name or f"lightfm-{loss}"
        self.features = features
        self._user_features: Any = None
        self._item_features: Any = None
        self.loss = loss
        self.params = dict(params)
        self.seed = seed
        self.epochs = epochs
        self.chunk_epochs = chunk_epochs
        self.factors = factors
        self.step = step
        self._model: Any = None
        self._shape = (0, 0)

    def fit(self, stream: EncodedStream, stop: int) -> None:
        from lightfm import LightFM

        self._model = LightFM(
            no_components=self.factors, loss=self.loss, random_state=self.seed, **self.params
        )
        self._shape = (stream.n_users, stream.n_items)
        if self.features:
            from benchmarks.evaluation.side_features import stream_feature_matrices

            self._user_features, self._item_features = stream_feature_matrices(stream)
        self._partial(stream, 0, stop, self.epochs)

    def update(self, stream: EncodedStream, start: int, stop: int) -> None:
        self._partial(stream, start, stop, self.chunk_epochs)

    def train_more(self, stream: EncodedStream, start: int, stop: int, epochs: int) -> None:
        """More epochs over events `[start, stop)` (used to search the epoch count)."""
        self._partial(stream, start, stop, epochs)

    def _partial(self, stream: EncodedStream, start: int, stop: int, epochs: int) -> None:
        if epochs > 0 and stop > start:
            matrix = interactions(stream, start, stop, self._shape).tocoo()
            self._model.fit_partial(
                matrix,
                user_features=self._user_features,
                item_features=self._item_features,
                epochs=epochs,
                num_threads=1,
            )

    def scores(self, users: NDArray[np.int64], n_items: int) -> Scores:
        _, user_vectors = self._model.get_user_representations(self._user_features)
        item_bias, item_vectors = self._model.get_item_representations(self._item_features)
        scores = user_vectors[users] @ item_vectors[:n_items].T + item_bias[:n_items]
        return np.nan_to_num(scores, nan=-np.inf)  # type: ignore[no-any-return]
