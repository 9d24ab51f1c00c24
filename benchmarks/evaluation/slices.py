"""Cold-start slices of the prequential protocol: masks over the events `[start, len)`.

- cold items: the event's item had fewer than `threshold` earlier events;
- cold users: the event is among its user's first `threshold` events.

They are applied to the `common` set, so every system is scored on the same events;
that set already needs the user and the item seen before the event's chunk, so a cold
item there has 1 to `threshold - 1` earlier events (0 only in the chunk's own events,
which no batch peer can rank). A system's own set needs the user seen before its step,
so at micro-batch 512 it holds few cold users (17 of ML-100K's 964 test events: a new
user's first views mostly share a micro-batch); benchmarks/cold_users.py scores them
from their first view, where a system has a vector for the user from their features.
"""

from __future__ import annotations

import numpy as np

from benchmarks.evaluation.stream import BoolArray, EncodedStream, IntArray

COLD = 5


def earlier_events(ids: IntArray) -> IntArray:
    """For each position, how many earlier positions hold the same id."""
    order = np.argsort(ids, kind="stable")
    sorted_ids = ids[order]
    group_start = np.searchsorted(sorted_ids, sorted_ids, side="left")
    counts = np.empty(ids.size, dtype=np.int64)
    counts[order] = np.arange(ids.size) - group_start
    return counts


def cold_slices(stream: EncodedStream, start: int, threshold: int = COLD) -> dict[str, BoolArray]:
    """Named masks over `[start, len)`."""
    return {
        "cold items": earlier_events(stream.items)[start:] < threshold,
        "cold users": stream.history_len[start:] < threshold,
    }
