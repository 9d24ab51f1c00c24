"""The frontend read path: a user's top-N (with the popular fallback), vectors, similar items.

Built on the `RecommendationStore` protocol, so it reads a `MemoryStore` and a
`RedisStore` alike; key names and encodings come from `consumers.sinks.schema`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import numpy as np

from consumers.sinks.base import RecommendationStore, StoreUnavailable
from consumers.sinks.redis import RedisStore, display_url
from consumers.sinks.schema import DEFAULT_PREFIX, Keys, decode_ranked, decode_vector
from streamer.events import Id, id_text
from streamer.preflight import PreflightError

Source = Literal["personal", "popular", "similar"]


@dataclass(frozen=True, slots=True)
class Recommendations:
    """A ranked list as read from the store, best first, and where it came from.

    `source` is "personal" (the user's own list), "popular" (the fallback: the user has
    no list, or an empty one) or "similar" (an item's neighbours). `model`, `version`
    and `updated_at` are those of the publication that wrote the list; an empty list
    read from a missing key has model "", version 0 and updated_at 0.0.
    """

    items: list[Id]
    scores: list[float]
    source: Source
    model: str = ""
    version: int = 0
    updated_at: float = 0.0


class RecommendationClient:
    """Reads what the learners publish (README, Contracts: Redis keys) under one key prefix."""

    def __init__(self, store: RecommendationStore, prefix: str = DEFAULT_PREFIX) -> None:
        self.store = store
        self.keys = Keys(prefix)

    @classmethod
    def from_url(
        cls, url: str, prefix: str = DEFAULT_PREFIX, **redis_config: Any
    ) -> RecommendationClient:
        """A client over Redis at `url` (redis://host:port/db); see `RedisStore.from_url`."""
        return cls(RedisStore.from_url(url, prefix, **redis_config), prefix)

    def top_n(self, user: Id, n: int = 10) -> Recommendations:
        """The user's list, at most `n` items; the popular list when the user has none."""
        _check_n(n)
        personal = self._ranked(self.keys.user_top(user), n, "personal")
        if personal is not None and personal.items:
            return personal
        return self.popular(n)

    def popular(self, n: int = 10) -> Recommendations:
        """The trending list (empty when nothing has been published yet)."""
        _check_n(n)
        return self._ranked(self.keys.popular, n, "popular") or Recommendations([], [], "popular")

    def similar(self, item: Id, n: int = 10) -> Recommendations:
        """Items like `item`, at most `n`; empty when the item is unknown."""
        _check_n(n)
        return self._ranked(self.keys.item_similar(item), n, "similar") or Recommendations(
            [], [], "similar"
        )

    def user_vector(self, user: Id) -> np.ndarray | None:
        """The user's embedding (float32), or None when the user is unknown."""
        return self._vector(self.keys.user_vector(user))

    def item_vector(self, item: Id) -> np.ndarray | None:
        """The item's embedding (float32), or None when the item is unknown."""
        return self._vector(self.keys.item_vector(item))

    def meta(self) -> dict[str, str]:
        """The `meta` hash as stored (model, dim, version, updated_at, users, items, events)."""
        return self.store.get_hash(self.keys.meta)

    def close(self) -> None:
        self.store.close()

    def _ranked(self, key: str, n: int, source: Source) -> Recommendations | None:
        value = self.store.get(key)
        if value is None:
            return None
        body: dict[str, Any] = decode_ranked(value)
        return Recommendations(
            items=list(body.get("items", []))[:n],
            scores=[float(score) for score in body.get("scores", [])][:n],
            source=source,
            model=str(body.get("model", "")),
            version=int(body.get("version", 0)),
            updated_at=float(body.get("updated_at", 0.0)),
        )

    def _vector(self, key: str) -> np.ndarray | None:
        value = self.store.get(key)
        return None if value is None else decode_vector(value).copy()


def _check_n(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")


def run_recommend(
    redis_url: str, prefix: str, user: str, n: int, out: TextIO, **redis_config: Any
) -> int:
    """Print `user`'s top-`n` from Redis: a `#` header, then `rank<TAB>item<TAB>score` lines.

    Exit status: 0 when a list was printed (the user's own or the popular fallback),
    1 when there is nothing to show (no list under `prefix`) or Redis cannot be read;
    the reason goes to stderr.
    """
    where = display_url(redis_url)
    try:
        client = RecommendationClient.from_url(redis_url, prefix, **redis_config)
    except PreflightError as error:
        print(f"recstream recommend: {error}", file=sys.stderr)
        return 1
    try:
        result = client.top_n(user, n)
    except StoreUnavailable as error:
        print(f"recstream recommend: cannot read {where}: {error}", file=sys.stderr)
        return 1
    finally:
        client.close()
    if not result.items:
        print(
            f"recstream recommend: no list for user {user!r} and no popular list under "
            f"prefix {prefix!r}: is a learner publishing to {where}?",
            file=sys.stderr,
        )
        return 1
    key = client.keys.user_top(user) if result.source == "personal" else client.keys.popular
    origin = (
        "personal list"
        if result.source == "personal"
        else "fallback: popular items (the user has no list yet)"
    )
    published = datetime.fromtimestamp(result.updated_at, UTC).isoformat(timespec="seconds")
    print(
        f"# user {user}: {origin}; {key}, model {result.model} version {result.version}, "
        f"published {published}",
        file=out,
    )
    for rank, (item, score) in enumerate(zip(result.items, result.scores, strict=False), 1):
        print(f"{rank}\t{id_text(item)}\t{score:.6g}", file=out)
    return 0
