"""River's rating regressors, with the settings of River's own MovieLens-100K benchmark
("Matrix Factorization for Recommender Systems"): the bias-only `Baseline`, `BiasedMF`
and `FMRegressor` over the user and item ids. River learns one event at a time; `step`
is how many events are predicted (with the state from before them) before they are
learned in order: 1 is River's own progressive validation, a micro-batch's size is our
learner's cadence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.evaluation.rating import FloatArray
from streamer.events import ViewEvent, id_text

RIVER_MODELS = ("river-baseline", "river-biasedmf", "river-fm")


def _model(kind: str, seed: int) -> Any:
    from river import facto, optim, reco

    if kind == "river-baseline":
        return reco.Baseline(
            optimizer=optim.SGD(0.025), l2=0.0, initializer=optim.initializers.Zeros()
        )
    if kind == "river-biasedmf":
        return reco.BiasedMF(
            n_factors=10,
            bias_optimizer=optim.SGD(0.025),
            latent_optimizer=optim.SGD(0.05),
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73 + seed),
            l2_bias=0.0,
            l2_latent=0.0,
        )
    if kind == "river-fm":
        return facto.FMRegressor(
            n_factors=10,
            weight_optimizer=optim.SGD(0.025),
            latent_optimizer=optim.SGD(0.05),
            sample_normalization=False,
            l1_weight=0.0,
            l2_weight=0.0,
            l1_latent=0.0,
            l2_latent=0.0,
            intercept=3,
            intercept_lr=0.01,
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73 + seed),
        )
    raise ValueError(f"unknown River model {kind!r}")


class RiverRatingSystem:
    """A River model learning one event at a time, predicting `step` at a time; FM sees
    `{user, item}` one-hot."""

    def __init__(self, kind: str, seed: int = 0, step: int = 1) -> None:
        self.name = kind if step == 1 else f"{kind}@{step}"
        self.step = step
        self._model = _model(kind, seed)
        self._features = kind == "river-fm"

    def _x(self, event: ViewEvent) -> dict[str, str]:
        return {"user": id_text(event.user), "item": id_text(event.item)}

    def predict(self, events: Sequence[ViewEvent]) -> FloatArray:
        if self._features:
            return np.array([self._model.predict_one(self._x(e)) for e in events], np.float64)
        return np.array(
            [self._model.predict_one(id_text(e.user), id_text(e.item)) for e in events],
            np.float64,
        )

    def learn(self, events: Sequence[ViewEvent]) -> None:
        for event in events:
            if self._features:
                self._model.learn_one(self._x(event), event.rating)
            else:
                self._model.learn_one(id_text(event.user), id_text(event.item), event.rating)
