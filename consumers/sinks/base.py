"""The interface every recommendation store implements."""

from __future__ import annotations

from typing import Protocol

from consumers.sinks.schema import Keys, Publication


class StoreUnavailable(RuntimeError):
    """The store could not be written; the caller keeps the work and retries later."""


class RecommendationStore(Protocol):
    """Writes publications; reads back single keys (frontends, tests, the CLI)."""

    keys: Keys

    def publish(self, publication: Publication) -> None:
        """Write every key of `publication`; raises `StoreUnavailable` on failure."""

    def get(self, key: str) -> bytes | None:
        """The value of a string key (None if absent); raises `StoreUnavailable` on failure."""

    def get_hash(self, key: str) -> dict[str, str]: ...

    def delete(self, keys: list[str]) -> None:
        """Remove keys; raises `StoreUnavailable` on failure."""

    def hold_owner(self, token: str, term_s: float, replacing: str | None = None) -> str | None:
        """Take or extend the owner lease `keys.owner` for `term_s` when it is free, held by
        `token` or by `replacing`; else leave it and return its holder's token. Atomic;
        raises `StoreUnavailable` on failure."""

    def release_owner(self, token: str) -> None:
        """Delete the owner lease if `token` holds it; raises `StoreUnavailable` on failure."""

    def close(self) -> None: ...
