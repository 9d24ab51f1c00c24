"""Prequential (progressive validation) RMSE/MAE of rating predictors over a stream.

Each step of `step` events is first predicted with the state from before the step, then
learned; with `step=1` this is River's `progressive_val_score`, with the learner's
micro-batch it is the cadence our service learns at (River's models then predict a
micro-batch before learning its events one by one). Predictions are clipped to the
rating scale, as River's `PredClipper` does in its MovieLens benchmark. Errors are
summed over the whole stream and, apart, over its test part (from `test_start`: the
part no setting was chosen on).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from streamer.events import EntityFeatures, ViewEvent

FloatArray = NDArray[np.float64]
SCALE = (1.0, 5.0)


class RatingPredictor(Protocol):
    """Predicts the rating of `(user, item)` pairs, then learns them."""

    name: str
    step: int

    def predict(self, events: Sequence[ViewEvent]) -> FloatArray:
        """Predicted rating per event, from the state before these events."""

    def learn(self, events: Sequence[ViewEvent]) -> None:
        """Take in the events and their ratings."""


@dataclass(frozen=True)
class RatingResult:
    system: str
    step: int
    events: int
    rmse: float
    mae: float
    seconds: float
    test_events: int = 0
    test_rmse: float = math.nan
    test_mae: float = math.nan

    def as_dict(self) -> dict[str, float | int | str]:
        return self.__dict__.copy()


class _Errors:
    """Running sums of squared and absolute errors."""

    def __init__(self) -> None:
        self.squared = self.absolute = 0.0
        self.count = 0

    def add(self, errors: FloatArray) -> None:
        self.squared += float(errors @ errors)
        self.absolute += float(np.abs(errors).sum())
        self.count += errors.size

    @property
    def rmse(self) -> float:
        return math.sqrt(self.squared / self.count) if self.count else math.nan

    @property
    def mae(self) -> float:
        return self.absolute / self.count if self.count else math.nan


def progressive_errors(
    events: Sequence[ViewEvent],
    system: RatingPredictor,
    scale: tuple[float, float] = SCALE,
    test_start: int | None = None,
) -> RatingResult:
    """RMSE and MAE over every event that carries a rating, test-then-train per step;
    those of the events from position `test_start` on as well (none when None)."""
    start = len(events) if test_start is None else test_start
    everything, test = _Errors(), _Errors()
    began = time.perf_counter()
    for a in range(0, len(events), system.step):
        positions = [
            i for i in range(a, min(a + system.step, len(events))) if events[i].rating is not None
        ]
        if not positions:
            continue
        batch = [events[i] for i in positions]
        predicted = np.clip(system.predict(batch), *scale)
        errors = predicted - np.array([event.rating for event in batch], dtype=np.float64)
        everything.add(errors)
        test.add(errors[np.asarray(positions) >= start])
        system.learn(batch)
    return RatingResult(
        system.name,
        system.step,
        everything.count,
        everything.rmse,
        everything.mae,
        time.perf_counter() - began,
        test.count,
        test.rmse,
        test.mae,
    )


@dataclass(frozen=True)
class RatingJob:
    """Progressive validation of the rating predictor `kind`, updated every `step`
    events, over a whole stream whose last `test_fraction` is its test part."""

    stream: str
    kind: str
    step: int = 1
    seed: int = 0
    test_fraction: float = 0.2


OUR_RATING_MODEL = "recstream-rating"


def build_rating_system(
    kind: str, seed: int, step: int = 1, features: Iterable[EntityFeatures] = ()
) -> RatingPredictor:
    """River's `kind` (its features are ids only), or ours (`OUR_RATING_MODEL`) given `features`."""
    from benchmarks.evaluation.systems.river_rating import RIVER_MODELS, RiverRatingSystem

    if kind in RIVER_MODELS:
        return RiverRatingSystem(kind, seed, step)
    if kind == OUR_RATING_MODEL:
        from benchmarks.evaluation.systems.recstream_rating import RecstreamRatingSystem

        return RecstreamRatingSystem(step, features, seed)
    raise ValueError(f"unknown rating predictor {kind!r}")


def run_rating_job(job: RatingJob) -> RatingResult:
    from benchmarks.evaluation.jobs import StreamSpec, load_stream
    from benchmarks.evaluation.splits import split_point

    stream = load_stream(StreamSpec(job.stream))
    system = build_rating_system(job.kind, job.seed, job.step, stream.features)
    test_start = split_point(len(stream.events), 1.0 - job.test_fraction)
    return progressive_errors(stream.events, system, test_start=test_start)
