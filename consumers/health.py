"""Whether the work works: the last poll, publish and checkpoint, each recent and good.

A process that is alive but stuck (no poll for a while), cut off from its log (silent
for as long: an empty poll may be an idle topic or a broker away), or from its store
(publishing keeps failing, or changes wait too long) or unable to persist (the
last checkpoint failed, or is too old while events arrive) reports unhealthy.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    max_poll_age_s: float = 30.0  # also how long the log may stay silent
    max_publish_delay_s: float = 60.0
    max_checkpoint_age_s: float | None = None  # None: checkpoints are off


@dataclass(slots=True)
class _Mark:
    at: float
    ok: bool
    detail: str


@dataclass
class Health:
    """Marks set by the service loop, read by the HTTP server's thread."""

    policy: HealthPolicy = field(default_factory=HealthPolicy)
    clock: Callable[[], float] = time.time
    _marks: dict[str, _Mark] = field(default_factory=dict, init=False)
    _pending_since: float | None = field(default=None, init=False)
    _started: float = field(default=0.0, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self._started = self.clock()

    def mark(self, check: str, ok: bool, detail: str = "") -> None:
        with self._lock:
            self._marks[check] = _Mark(self.clock(), ok, detail)

    def pending(self, waiting: bool) -> None:
        """Whether learned changes wait to be published (and since when)."""
        with self._lock:
            if not waiting:
                self._pending_since = None
            elif self._pending_since is None:
                self._pending_since = self.clock()

    def report(self) -> tuple[bool, dict[str, Any]]:
        """(healthy, a JSON-able account of every check)."""
        now = self.clock()
        with self._lock:
            marks = dict(self._marks)
            pending_since = self._pending_since
        policy = self.policy
        checks = {
            "poll": self._check(marks.get("poll"), now, policy.max_poll_age_s),
            "publish": self._check(marks.get("publish"), now, None),
            "checkpoint": self._check(marks.get("checkpoint"), now, policy.max_checkpoint_age_s),
        }
        if pending_since is not None and now - pending_since > policy.max_publish_delay_s:
            checks["publish"].update(
                ok=False, detail=f"changes unpublished for {now - pending_since:.0f} s"
            )
        healthy = all(check["ok"] for check in checks.values())
        return healthy, {"status": "ok" if healthy else "unhealthy", "checks": checks}

    def _check(self, mark: _Mark | None, now: float, max_age: float | None) -> dict[str, Any]:
        if mark is None:
            # Not yet done: fine during a start-up grace period of one max age.
            grace = max_age is None or now - self._started <= max_age
            return {"ok": grace, "age_s": None, "detail": "not yet" if grace else "never"}
        age = round(now - mark.at, 3)
        if not mark.ok:
            return {"ok": False, "age_s": age, "detail": mark.detail or "failed"}
        if max_age is not None and age > max_age:
            return {"ok": False, "age_s": age, "detail": f"older than {max_age:.0f} s"}
        return {"ok": True, "age_s": age, "detail": mark.detail}
