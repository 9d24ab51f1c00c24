"""One model per prefix: the owner lease `<prefix>owner` in the store.

Two learners publishing under one prefix mix two embedding spaces (a frontend
would score one model's user vector against the other's item vectors). So a
learner claims its prefix before it learns: `OwnerLease.claim` sets the lease
to this process's token with an expiry (only where it is free: one atomic script
in Redis), `kept` renews it every third of its term while the process lives and
releases it when the process stops. The supervisor
of `--workers N` holds it for all of its workers: one token per host.

A claim that finds the lease held waits at most one term: a live holder renews
it, and the claim fails with `OwnerConflict` naming the prefix and the holder;
a dead holder's lease lapses within that time (at once when the holder ran in
this pid namespace and its pid is gone, as after a kill -9 on this host), and
the claim takes it over.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from consumers.sinks.base import RecommendationStore, StoreUnavailable

DEFAULT_TERM_S = 15.0
POLL_S = 0.2  # how often a waiting claim looks again

log = logging.getLogger(__name__)


class OwnerConflict(RuntimeError):
    """Another live model publishes under this prefix."""


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a lease: the token names the process, and where its pid means something."""

    host: str
    pid: int
    namespace: str  # boot id and pid namespace ("" where unknown)
    since: float  # wall clock of the claim
    nonce: str

    @classmethod
    def this_process(cls) -> Owner:
        return cls(
            socket.gethostname(), os.getpid(), _pid_namespace(), time.time(), uuid.uuid4().hex[:12]
        )

    @property
    def token(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def parse(cls, token: str) -> Owner | None:
        try:
            return cls(**json.loads(token))
        except (ValueError, TypeError):
            return None

    def describe(self) -> str:
        since = datetime.fromtimestamp(self.since, UTC).isoformat(timespec="seconds")
        return f"host {self.host}, pid {self.pid}, since {since}"

    def gone(self, viewer: Owner) -> bool:
        """Provably dead, seen from `viewer`: in its pid namespace, with its pid gone or
        now the viewer's own (a previous life of a restarted container)."""
        if not self.namespace or self.namespace != viewer.namespace:
            return False
        return self.pid == viewer.pid or not _alive(self.pid)


@dataclass
class OwnerLease:
    store: RecommendationStore
    term_s: float = DEFAULT_TERM_S
    owner: Owner = field(default_factory=Owner.this_process)
    clock: Callable[[], float] = time.monotonic
    lost: bool = field(default=False, init=False)

    @property
    def _where(self) -> str:
        keys = self.store.keys
        return f"prefix {keys.prefix!r} (owner key {keys.owner})"

    def claim(self) -> None:
        """Take the lease, waiting up to one term for a dead holder's to lapse; raises
        `OwnerConflict` while another model holds it, `StoreUnavailable` without a store."""
        deadline = self.clock() + self.term_s
        replacing: str | None = None  # a holder known to be dead
        waiting_for: str | None = None
        while (
            holder := self.store.hold_owner(self.owner.token, self.term_s, replacing)
        ) is not None:
            other = Owner.parse(holder)
            named = other.describe() if other else holder
            if other is not None and other.gone(self.owner):
                log.warning("%s: taking over from %s, which is gone", self._where, named)
                replacing = holder
                continue
            if self.clock() >= deadline:
                raise OwnerConflict(
                    f"another live model publishes under {self._where}: {named}. One model "
                    "per prefix: stop that one, or give this learner its own --prefix"
                )
            if waiting_for != holder:
                log.warning(
                    "%s is held by %s: waiting up to %.0f s for it to lapse",
                    self._where,
                    named,
                    self.term_s,
                )
                waiting_for = holder
            time.sleep(POLL_S)
        log.info("%s claimed for %.0f s terms", self._where, self.term_s)

    def renew(self) -> bool:
        """Extend the lease; False once another model holds it. A store outage keeps
        it (the next renewal tries again; it lapses after one term without one)."""
        try:
            holder = self.store.hold_owner(self.owner.token, self.term_s)
        except StoreUnavailable as error:
            log.warning("%s not renewed: %s", self._where, error)
            return True
        if holder is None:
            return True
        other = Owner.parse(holder)
        self.lost = True
        log.error("%s lost to %s: stopping", self._where, other.describe() if other else holder)
        return False

    def release(self) -> None:
        try:
            self.store.release_owner(self.owner.token)
        except StoreUnavailable as error:
            log.warning(
                "%s not released (it lapses in %.0f s): %s", self._where, self.term_s, error
            )

    @contextmanager
    def kept(self, on_lost: Callable[[], None]) -> Iterator[OwnerLease]:
        """Renew every third of a term until the block ends, then release. `on_lost`
        runs (in the renewing thread) when another model has taken the lease."""
        done = threading.Event()

        def renew() -> None:
            while not done.wait(self.term_s / 3):
                if not self.renew():
                    on_lost()
                    return

        thread = threading.Thread(target=renew, name="owner-lease", daemon=True)
        thread.start()
        try:
            yield self
        finally:
            done.set()
            thread.join()
            self.release()


def _pid_namespace() -> str:
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has exited: its parent just has not reaped it
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True
