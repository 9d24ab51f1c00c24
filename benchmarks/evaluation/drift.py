"""HR over the stream as a moving window, and how fast a system recovers after a drift."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]


def trailing_mean(values: NDArray[np.floating], window: int) -> FloatArray:
    """Mean of the last `window` values at each index (fewer at the start)."""
    values = np.asarray(values, dtype=np.float64)
    if window < 1:
        raise ValueError("window must be >= 1")
    sums = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, values.size + 1)
    starts = np.maximum(ends - window, 0)
    return (sums[ends] - sums[starts]) / (ends - starts)


def recovery(
    positions: NDArray[np.int64],
    hits: NDArray[np.floating],
    drift: int,
    window: int,
    thresholds: Sequence[float] = (0.9, 1.0),
) -> dict[str, Any]:
    """Events after `drift` until the moving HR is back to a share of its pre-drift level.

    `positions` (increasing) are the stream positions of the scored events, `hits`
    their HR@k. The pre-drift level is the mean over the last `window` scored events
    before the drift; after it, the trailing window holds post-drift events only, so
    no answer comes before `window` scored events. None: never recovered.
    """
    positions = np.asarray(positions)
    hits = np.asarray(hits, dtype=np.float64)
    before = hits[positions < drift][-window:]
    after_mask = positions >= drift
    after, after_positions = hits[after_mask], positions[after_mask]
    result: dict[str, Any] = {
        "window": window,
        "pre_drift_hr": float(before.mean()) if before.size else None,
        "post_drift_scored": int(after.size),
    }
    if not before.size or after.size < window:
        result.update({f"events_to_{t:g}": None for t in thresholds} | {"dip_hr": None})
        return result
    moving = trailing_mean(after, window)[window - 1 :]
    ends = after_positions[window - 1 :]
    result["dip_hr"] = float(moving.min())
    level = float(before.mean())
    for share in thresholds:
        reached = np.flatnonzero(moving >= share * level)
        result[f"events_to_{share:g}"] = int(ends[reached[0]] - drift + 1) if reached.size else None
    return result
