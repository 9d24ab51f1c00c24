"""Prequential (progressive validation) RMSE/MAE of rating predictors over a stream.

Each step of `step` events is first predicted with the state from before the step, then
learned; with `step=1` this is River's `progressive_val_score`. Predictions are clipped
to the rating scale, as River's `PredClipper` does in its MovieLens benchmark.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from streamer.events import ViewEvent

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

    def as_dict(self) -> dict[str, float | int | str]:
        return self.__dict__.copy()


def progressive_errors(
    events: Sequence[ViewEvent], system: RatingPredictor, scale: tuple[float, float] = SCALE
) -> RatingResult:
    """RMSE and MAE over every event that carries a rating, test-then-train per step."""
    squared = absolute = 0.0
    scored = 0
    began = time.perf_counter()
    for a in range(0, len(events), system.step):
        batch = [event for event in events[a : a + system.step] if event.rating is not None]
        if not batch:
            continue
        predicted = np.clip(system.predict(batch), *scale)
        truth = np.array([event.rating for event in batch], dtype=np.float64)
        errors = predicted - truth
        squared += float(errors @ errors)
        absolute += float(np.abs(errors).sum())
        scored += len(batch)
        system.learn(batch)
    return RatingResult(
        system.name,
        system.step,
        scored,
        math.sqrt(squared / max(scored, 1)),
        absolute / max(scored, 1),
        time.perf_counter() - began,
    )


@dataclass(frozen=True)
class RatingJob:
    """Progressive validation of the rating predictor `kind` over a whole stream."""

    stream: str
    kind: str
    seed: int = 0


def build_rating_system(kind: str, seed: int) -> RatingPredictor:
    from benchmarks.evaluation.systems.river_rating import RIVER_MODELS, RiverRatingSystem

    if kind in RIVER_MODELS:
        return RiverRatingSystem(kind, seed)
    raise ValueError(f"unknown rating predictor {kind!r}")


def run_rating_job(job: RatingJob) -> RatingResult:
    from benchmarks.evaluation.jobs import StreamSpec, load_stream

    events = load_stream(StreamSpec(job.stream)).events
    return progressive_errors(events, build_rating_system(job.kind, job.seed))
