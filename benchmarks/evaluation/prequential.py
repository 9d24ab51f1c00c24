"""Prequential (test-then-train) evaluation over the tail of a stream.

The system first learns `[0, start)`. The tail is cut into chunks of `chunk` events and
each chunk into the system's steps; for every step the system ranks the step's events
with its state from before the step, then takes the step in.

Two event sets:

- common: the event's user and item both appeared before the event's chunk (and it is
  not a re-watch). Every system ranks these among the items known before the chunk,
  minus what the user watched before the event: the same events, the same candidates.
- own: the user appeared before the system's step (not a re-watch). Candidates are the
  items known before the step minus the user's watched; an item new since then is a
  miss. For a batch peer this differs from `common` only by those misses; for an
  online learner it is the larger set it really serves.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.ranking import expected_hit_ndcg, rank_counts
from benchmarks.evaluation.splits import chunk_bounds, chunk_start, steps_within
from benchmarks.evaluation.stream import BoolArray, EncodedStream
from benchmarks.evaluation.systems.base import System

FloatArray = NDArray[np.float64]


def common_events(stream: EncodedStream, start: int, chunk: int) -> BoolArray:
    """Mask over events `[start, len)`: user and item seen before the event's chunk."""
    positions = np.arange(start, len(stream))
    chunk_starts = start + (positions - start) // chunk * chunk
    return (
        (stream.user_first[stream.users[start:]] < chunk_starts)
        & (stream.item_first[stream.items[start:]] < chunk_starts)
        & ~stream.rewatch[start:]
    )


@dataclass
class PrequentialTrace:
    """Per-event results over `[start, len)`; NaN where the event is not in the set."""

    system: str
    start: int
    chunk: int
    step: int
    common_hit: FloatArray
    common_ndcg: FloatArray
    own_hit: FloatArray
    own_ndcg: FloatArray
    own_new_item: BoolArray
    fit_seconds: float = 0.0
    update_seconds: list[float] = field(default_factory=list)
    update_events: list[int] = field(default_factory=list)
    score_seconds: float = 0.0

    def counts(self) -> dict[str, int]:
        """Sizes of the sets and the skips."""
        n = self.common_hit.size
        own = int(np.count_nonzero(~np.isnan(self.own_hit)))
        return {
            "events": n,
            "common_scored": int(np.count_nonzero(~np.isnan(self.common_hit))),
            "own_scored": own,
            "own_new_item_misses": int(np.count_nonzero(self.own_new_item)),
            "own_skipped": n - own,
        }


def _empty(size: int) -> FloatArray:
    return np.full(size, np.nan)


def run_prequential(
    stream: EncodedStream,
    system: System,
    start: int,
    chunk: int = 1000,
    k: int = 10,
    stop: int | None = None,
    fit: bool = True,
    learn: bool = True,
    step: int | None = None,
) -> PrequentialTrace:
    """Learn `[0, start)`, then test-then-train over `[start, stop)`.

    `fit=False`: the system has learned `[0, start)` already. `learn=False`: score with
    the state at `start` throughout; then `[start, stop)` must be one chunk and one step,
    so that no step asks for ids the system never saw. `step` overrides `system.step`.
    """
    stop = len(stream) if stop is None else stop
    step = system.step if step is None else step
    if not learn and min(step, chunk) < stop - start:
        raise ValueError("a frozen system is scored in one chunk and one step")
    size = stop - start
    trace = PrequentialTrace(
        system.name,
        start,
        chunk,
        step,
        _empty(size),
        _empty(size),
        _empty(size),
        _empty(size),
        np.zeros(size, dtype=bool),
    )
    if fit:
        began = time.perf_counter()
        system.fit(stream, start)
        trace.fit_seconds = time.perf_counter() - began
    common = common_events(stream, start, chunk)[:size]
    for a, b in steps_within(chunk_bounds(start, stop, chunk), step):
        began = time.perf_counter()
        _score_step(stream, system, trace, common, a, b, k)
        trace.score_seconds += time.perf_counter() - began
        if not learn:
            continue
        began = time.perf_counter()
        system.update(stream, a, b)
        trace.update_seconds.append(time.perf_counter() - began)
        trace.update_events.append(b - a)
    return trace


def _score_step(
    stream: EncodedStream,
    system: System,
    trace: PrequentialTrace,
    common: BoolArray,
    a: int,
    b: int,
    k: int,
) -> None:
    known_users, known_items = stream.users_before(a), stream.items_before(a)
    positions = np.arange(a, b)
    scored = positions[(stream.users[a:b] < known_users) & ~stream.rewatch[a:b]]
    if scored.size == 0:
        return
    scores = system.scores(stream.users[scored], known_items)
    first = chunk_start(a, trace.start, trace.chunk)
    candidates = stream.items_before(first)
    for row, position in zip(scores, scored.tolist(), strict=True):
        slot = position - trace.start
        item = int(stream.items[position])
        watched = stream.history(position)
        if item >= known_items:
            trace.own_hit[slot] = trace.own_ndcg[slot] = 0.0
            trace.own_new_item[slot] = True
        else:
            hit, gain = expected_hit_ndcg(*rank_counts(row, item, watched), k)
            trace.own_hit[slot], trace.own_ndcg[slot] = hit, gain
        if common[slot]:
            if candidates == known_items:
                trace.common_hit[slot] = trace.own_hit[slot]
                trace.common_ndcg[slot] = trace.own_ndcg[slot]
            else:
                counts = rank_counts(row[:candidates], item, watched)
                trace.common_hit[slot], trace.common_ndcg[slot] = expected_hit_ndcg(*counts, k)
