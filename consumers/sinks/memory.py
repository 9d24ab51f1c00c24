"""An in-memory store with the semantics of the Redis one (demo and unit tests)."""

from __future__ import annotations

from consumers.sinks.schema import Keys, Publication, string_writes


class MemoryStore:
    def __init__(self, prefix: str = Keys().prefix) -> None:
        self.keys = Keys(prefix)
        self.strings: dict[str, bytes] = {}
        self.hashes: dict[str, dict[str, str]] = {}

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

    def close(self) -> None:
        """Nothing to release."""
