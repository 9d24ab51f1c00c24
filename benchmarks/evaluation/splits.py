"""Cutting a stream: time order with ties kept in arrival order, fractions, chunks."""

from __future__ import annotations

from collections.abc import Sequence

from streamer.events import ViewEvent


def by_time(events: Sequence[ViewEvent]) -> list[ViewEvent]:
    """Events sorted by timestamp; events with equal timestamps keep their given order."""
    return sorted(events, key=lambda event: event.ts)


def split_point(n_events: int, fraction: float) -> int:
    """The position where the first `fraction` of `n_events` ends (floor)."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError("fraction must be in [0, 1]")
    return int(n_events * fraction)


def chunk_bounds(start: int, stop: int, size: int) -> list[tuple[int, int]]:
    """`[start, stop)` cut into consecutive `[a, b)` of `size` events (the last may be short)."""
    if size < 1:
        raise ValueError("size must be >= 1")
    return [(a, min(a + size, stop)) for a in range(start, stop, size)]


def steps_within(chunks: Sequence[tuple[int, int]], size: int) -> list[tuple[int, int]]:
    """Each chunk cut into steps of at most `size` events; no step crosses a chunk boundary."""
    return [step for a, b in chunks for step in chunk_bounds(a, b, size)]


def chunk_start(position: int, start: int, size: int) -> int:
    """The first position of the chunk (of `chunk_bounds(start, ., size)`) holding `position`."""
    return start + (position - start) // size * size
