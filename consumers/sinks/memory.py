"""An in-memory store with the semantics of the Redis one (demo and unit tests)."""

from __future__ import annotations

import time
from collections.abc import Callable

from consumers.sinks.schema import Keys, Publication, string_writes


class MemoryStore:
    def __init__(
        self, prefix: str = Keys().prefix, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.keys = Keys(prefix)
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[str, str]] = {}
        self.clock = clock  # when owner leases lapse
        self.owner: tuple[str, float] | None = None  # token, lapses at

    def publish(self, publication: Publication) -> None:
        self.strings.update(string_writes(publication, self.keys))
        meta = self.hashes.setdefault(self.keys.meta, {})
        meta.update({name: str(value) for name, value in publication.meta.items()})

    def get(self, key: str) -> bytes | None:
        return self.strings.get(key)

    def get_hash(self, key: str) -> dict[str, str]:
        return dict(self.hashes.get(key, {}))

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self.strings.pop(key, None)
            self.hashes.pop(key, None)

    def hold_owner(self, token: str, term_s: float, replacing: str | None = None) -> str | None:
        now = self.clock()
        if (
            self.owner is not None
            and self.owner[1] > now
            and self.owner[0] not in (token, replacing)
        ):
            return self.owner[0]
        self.owner = (token, now + term_s)
        return None

    def release_owner(self, token: str) -> None:
        if self.owner is not None and self.owner[0] == token:
            self.owner = None

    def close(self) -> None:
        """Nothing to release."""
