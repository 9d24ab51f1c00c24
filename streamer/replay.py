"""Replay a stream of view events into a sink at a steady rate.

Pacing keeps a schedule anchored at the start: the k-th event is due `k / rate` seconds
after it, so sleeping too long or a slow `send` never accumulates drift. A sink that stalls
is caught up in a burst of at most `burst` events; beyond that the schedule restarts from
now, as a token bucket of `burst` tokens would.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Sized
from typing import Final

from tqdm import tqdm

from streamer.events import ViewEvent

DEFAULT_BURST_SECONDS: Final = 1.0


def replay(
    events: Iterable[ViewEvent],
    send: Callable[[ViewEvent], None],
    rate: float | None = None,
    limit: int | None = None,
    progress: bool = False,
    *,
    burst: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Send `events` in order, at most `rate` per second (None: as fast as `send` goes).

    Stops after `limit` events (None: all) without drawing more from `events`; shows a
    tqdm bar on stderr when `progress`. `burst` (default: one second of events) caps the
    catch-up after a stall. Returns how many events were sent.
    """
    if rate is not None and not rate > 0:
        raise ValueError("rate must be > 0 or None")
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0 or None")
    if burst is not None and burst < 1:
        raise ValueError("burst must be >= 1 or None")
    stream = events if limit is None else itertools.islice(events, limit)
    total = len(events) if isinstance(events, Sized) else None
    if limit is not None:
        total = limit if total is None else min(limit, total)
    with tqdm(total=total, disable=not progress, unit="ev", smoothing=0.1) as bar:
        if rate is None:
            return _unpaced(stream, send, bar)
        cap = burst if burst is not None else max(1, round(rate * DEFAULT_BURST_SECONDS))
        return _paced(stream, send, bar, rate, cap, clock, sleep)


def _unpaced(stream: Iterable[ViewEvent], send: Callable[[ViewEvent], None], bar: tqdm) -> int:
    count = 0
    for event in stream:
        send(event)
        count += 1
        bar.update()
    return count


def _paced(
    stream: Iterable[ViewEvent],
    send: Callable[[ViewEvent], None],
    bar: tqdm,
    rate: float,
    burst: int,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> int:
    count = 0
    anchor = clock()  # when the `due`-th event since the anchor is due: anchor + due / rate
    due = 0
    for event in stream:
        now = clock()
        wait = anchor + due / rate - now
        if wait > 0:
            sleep(wait)
        elif -wait * rate >= burst:  # over a burst behind: this and burst - 1 more go at once
            anchor, due = now - (burst - 1) / rate, 0
        send(event)
        count += 1
        due += 1
        bar.update()
    return count
