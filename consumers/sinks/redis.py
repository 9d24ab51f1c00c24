"""The Redis store frontends read (DESIGN.md section 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import redis
from pydantic import SecretStr

from consumers.sinks.base import StoreUnavailable
from consumers.sinks.schema import Keys, Publication, string_writes

MSET_KEYS = 1000  # keys per MSET command: bounds how long one command holds Redis

# KEYS[1] the lease; ARGV: token, term in ms, a holder it may replace ("" for none).
HOLD_OWNER = """
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] and holder ~= ARGV[3] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
"""
RELEASE_OWNER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """Writes a publication in one pipelined round trip.

    Each key is replaced by a single write (MSET), so a reader never sees half a list.
    """

    def __init__(self, client: redis.Redis, prefix: str = Keys().prefix) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._hold_owner = client.register_script(HOLD_OWNER)
        self._release_owner = client.register_script(RELEASE_OWNER)

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = Keys().prefix,
        options: Mapping[str, Any] | None = None,
        password: SecretStr | None = None,
    ) -> RedisStore:
        """`url` may carry AUTH and TLS (rediss://user:pass@host:port/db); `options` go to
        redis-py as given (ssl_ca_certs, username, ...); `password` overrides the URL's."""
        config: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        config.update(options or {})
        if password is not None:
            config["password"] = password.get_secret_value()
        return cls(redis.Redis.from_url(url, **config), prefix)

    def publish(self, publication: Publication) -> None:
        pipe = self.client.pipeline(transaction=False)
        writes = list(string_writes(publication, self.keys).items())
        # MSET, not one SET per key: redis-py packs and parses per command, and that
        # (not Redis) is the cost of a publish (benchmarks/publish.py: ~3x users/s).
        # Each key is still replaced by one write.
        for start in range(0, len(writes), MSET_KEYS):
            pipe.mset(dict(writes[start : start + MSET_KEYS]))
        if publication.meta:
            pipe.hset(self.keys.meta, mapping=dict(publication.meta))
        try:
            pipe.execute()
        except redis.RedisError as error:
            raise StoreUnavailable(str(error)) from error

    def get(self, key: str) -> bytes | None:
        try:
            value = self.client.get(key)
        except redis.RedisError as error:
            raise StoreUnavailable(str(error)) from error
        return None if value is None else bytes(value)

    def get_hash(self, key: str) -> dict[str, str]:
        raw = self.client.hgetall(key)
        return {name.decode(): value.decode() for name, value in raw.items()}

    def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self.client.delete(*keys)
        except redis.RedisError as error:
            raise StoreUnavailable(str(error)) from error

    def hold_owner(self, token: str, term_s: float, replacing: str | None = None) -> str | None:
        term_ms = max(1, round(term_s * 1000))
        try:
            holder = self._hold_owner([self.keys.owner], [token, term_ms, replacing or ""])
        except redis.RedisError as error:
            raise StoreUnavailable(str(error)) from error
        if holder is None:
            return None
        return holder.decode() if isinstance(holder, bytes) else str(holder)

    def release_owner(self, token: str) -> None:
        try:
            self._release_owner([self.keys.owner], [token])
        except redis.RedisError as error:
            raise StoreUnavailable(str(error)) from error

    def close(self) -> None:
        self.client.close()
