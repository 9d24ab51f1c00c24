"""The Redis store frontends read (README, Contracts: Redis keys)."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import redis
from pydantic import SecretStr

from consumers.sinks.base import StoreUnavailable
from consumers.sinks.schema import Keys, Publication, string_writes
from streamer.preflight import PreflightError, is_loopback

MSET_KEYS = 1000  # keys per MSET command: bounds how long one command holds Redis
PROBE_TIMEOUT_S = 5.0
PING = b"*1\r\n$4\r\nPING\r\n"

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
    """Writes a publication in one round trip, on a connection of its own (the one
    publishing thread's), packed here.

    Each key is replaced by a single write (MSET), so a reader never sees half a list.
    """

    def __init__(self, client: redis.Redis, prefix: str = Keys().prefix) -> None:
        self.client = client
        self.keys = Keys(prefix)
        self._hold_owner = client.register_script(HOLD_OWNER)
        self._release_owner = client.register_script(RELEASE_OWNER)
        self._publishing: Any = None  # a connection, made on first use

    @classmethod
    def from_url(
        cls,
        url: str,
        prefix: str = Keys().prefix,
        options: Mapping[str, Any] | None = None,
        password: SecretStr | None = None,
        allow_plaintext_secrets: bool = False,
    ) -> RedisStore:
        """`url` may carry AUTH and TLS (rediss://user:pass@host:port/db); `options` go to
        redis-py as given (ssl_ca_certs, username, ...); `password` overrides the URL's.

        Raises `PreflightError` for options that cannot work together, and before a
        password would travel in clear: to a host other than loopback (unless
        `allow_plaintext_secrets`), or to a port that does not answer plain Redis."""
        config: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5}
        config.update(options or {})
        if password is not None:
            config["password"] = password.get_secret_value()
        client = _client(url, config)
        kwargs = client.connection_pool.connection_kwargs
        if kwargs.get("password") and client.connection_pool.connection_class is redis.Connection:
            where = f"Redis at {kwargs.get('host')}:{kwargs.get('port')}"
            if not (allow_plaintext_secrets or is_loopback(str(kwargs.get("host")))):
                raise PreflightError(
                    f"refusing to send the password to {where} in clear: use rediss:// (TLS),"
                    " or allow_plaintext_secrets = true on a trusted network"
                )
            plain_probe(str(kwargs.get("host")), int(kwargs.get("port", 6379)))
        return cls(client, prefix)

    def publish(self, publication: Publication) -> None:
        writes = [
            (key.encode(), value) for key, value in string_writes(publication, self.keys).items()
        ]
        # MSET, not one SET per key, packed here rather than by redis-py, whose packing
        # and parsing per command (not Redis) is the cost of a publish
        # (benchmarks/publish.py). Each key is still replaced by one write.
        commands = [
            pack_mset(writes[start : start + MSET_KEYS])
            for start in range(0, len(writes), MSET_KEYS)
        ]
        if publication.meta:
            fields = [str(part).encode() for item in publication.meta.items() for part in item]
            commands.append(pack_command(b"HSET", self.keys.meta.encode(), *fields))
        connection: Any = self._publishing or self.client.connection_pool.make_connection()
        self._publishing = connection
        for retry in (True, False):
            try:
                connection.send_packed_command(commands)
                for _ in commands:
                    connection.read_response()
                return
            except redis.RedisError as error:
                connection.disconnect()  # replies may be left unread: reconnect next time
                # Once more on a fresh connection when the kept one was closed meanwhile
                # (a Redis restart, an idle timeout): every write here is idempotent.
                if not (retry and isinstance(error, redis.ConnectionError)):
                    raise StoreUnavailable(f"redis: {error}") from error

    def get(self, key: str) -> bytes | None:
        try:
            value: bytes | None = self.client.get(key)  # type: ignore[assignment]
        except redis.RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error
        return None if value is None else bytes(value)

    def get_hash(self, key: str) -> dict[str, str]:
        try:
            raw: dict[bytes, bytes] = self.client.hgetall(key)  # type: ignore[assignment]
        except redis.RedisError as error:
            raise StoreUnavailable(str(error)) from error
        return {name.decode(): value.decode() for name, value in raw.items()}

    def delete(self, keys: list[str]) -> None:
        if not keys:
            return
        try:
            self.client.delete(*keys)
        except redis.RedisError as error:
            raise StoreUnavailable(f"redis: {error}") from error

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
        if self._publishing is not None:
            self._publishing.disconnect()
        self.client.close()


def pack_command(*arguments: bytes) -> bytes:
    """One command in RESP, as Redis reads it."""
    parts = [b"*%d\r\n" % len(arguments)]
    for argument in arguments:
        parts += (b"$%d\r\n" % len(argument), argument, b"\r\n")
    return b"".join(parts)


def pack_mset(writes: list[tuple[bytes, bytes]]) -> bytes:
    """`pack_command(b"MSET", key, value, ...)` of these (key, value) pairs."""
    parts = [b"*%d\r\n$4\r\nMSET\r\n" % (2 * len(writes) + 1)]
    for key, value in writes:
        parts += (b"$%d\r\n%b\r\n$%d\r\n" % (len(key), key, len(value)), value, b"\r\n")
    return b"".join(parts)


def display_url(url: str) -> str:
    """`url` without the password it may carry (for messages)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username or ''}:***@{host}").geturl()


def _client(url: str, config: dict[str, Any]) -> redis.Redis:
    """A client whose options fit its URL: TLS options need rediss://, and an option
    redis-py does not know fails here rather than at the first publish."""
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise PreflightError(f"--redis {scheme}://... is not redis://, rediss:// or unix://")
    tls_options = sorted(name for name in config if name.startswith("ssl"))
    if tls_options and scheme != "rediss":
        raise PreflightError(
            f"redis_options carry TLS options ({', '.join(tls_options)}) but --redis is a"
            f" {scheme}:// URL: use rediss://host:port/db for TLS, or drop those options"
        )
    try:
        client = redis.Redis.from_url(url, **config)
        client.connection_pool.make_connection()  # builds, does not connect
    except (TypeError, ValueError) as error:
        raise PreflightError(f"--redis / redis_options: {error}") from error
    return client


def plain_probe(host: str, port: int) -> None:
    """Whether `host:port` answers an unauthenticated PING in plain Redis (any reply:
    PONG, or NOAUTH), before a password is sent there; else a `PreflightError`."""
    where = f"Redis at {host}:{port}"
    try:
        with socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock:
            sock.sendall(PING)
            try:
                reply = sock.recv(64)
            except OSError:  # reset: a TLS server gives up on what is not a handshake
                reply = b""
    except OSError as error:
        raise PreflightError(f"cannot reach {where} ({error}): check --redis") from error
    if reply[:1] in (b"+", b"-"):
        return
    if _speaks_tls(host, port):
        raise PreflightError(f"{where}: that port speaks TLS: use rediss:// (no password was sent)")
    raise PreflightError(f"{where} does not answer plain Redis (got {reply[:16]!r}): check --redis")


def _speaks_tls(host: str, port: int) -> bool:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # only asking whether it is TLS; nothing is sent
    try:
        with (
            socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return True
    except ssl.SSLError as error:  # an alert (a client certificate wanted, say) is TLS
        return "ALERT" in str(error.reason)
    except OSError:
        return False
