"""Our rating model as a `RatingPredictor`: driven as the service drives it
(`OnlineLearner.learn` per micro-batch of `step`), each micro-batch predicted with the
model as it stood before it (`BiasedRating.predict`; ids first seen in the batch count
as unknown). The stream's feature records are learned first, as `produce` publishes
them before the views."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from benchmarks.evaluation.rating import FloatArray
from consumers.learner import QUALITY_K, OnlineLearner
from consumers.model.factory import make_config, make_model
from consumers.model.rating import BiasedRating
from consumers.quality import ServedLists
from streamer.events import EntityFeatures, ViewEvent


class RecstreamRatingSystem:
    """`--model rating` at `step` events per update; `overrides` change its config
    (validation grids only: a reported row runs the defaults)."""

    def __init__(
        self,
        step: int,
        features: Iterable[EntityFeatures] = (),
        seed: int = 0,
        overrides: dict[str, object] | None = None,
    ) -> None:
        self.name = f"recstream-rating@{step}"
        self.step = step
        model = make_model("rating", make_config("rating", {**(overrides or {}), "seed": seed}))
        assert isinstance(model, BiasedRating)
        self.model = model
        self.learner = OnlineLearner(model)
        self._served = ServedLists(QUALITY_K)
        for record in features:
            self.learner.learn_features(record)

    def _rows(self, registry_rows: list[int | None]) -> np.ndarray:
        return np.array([-1 if row is None else row for row in registry_rows], dtype=np.int64)

    def predict(self, events: Sequence[ViewEvent]) -> FloatArray:
        users = self._rows([self.model.users.row(event.user) for event in events])
        items = self._rows([self.model.items.row(event.item) for event in events])
        return self.model.predict(users, items).astype(np.float64)

    def learn(self, events: Sequence[ViewEvent]) -> None:
        self.learner.learn(events, self._served)
