"""`consume`'s start-up checks: both services reachable, the credentials accepted, and the
learner allowed to do its work, before anything is learned (and before any worker starts).

The metrics ports: free, one per process. Kafka: logged in, the views (and users) topic
readable, the group usable, the dead-letter topic writable (streamer.preflight). Redis: the
options fit the URL, no password sent in clear (RedisStore.from_url), logged in, and this
user may write keys under the prefix (a probe key is written and deleted). A failure is
one `PreflightError` naming the cause and the setting to change.
"""

from __future__ import annotations

import dataclasses
import socket
import uuid
from pathlib import Path

import redis
from redis.exceptions import NoPermissionError

from consumers.durability.host import newest_settings
from consumers.settings import ConsumeSettings
from consumers.sinks.redis import RedisStore
from streamer.events import DEAD_LETTER_SUFFIX
from streamer.preflight import PreflightError, check_kafka
from streamer.settings import kafka_client_options

PASSWORD_SETTING = "RECSTREAM_REDIS_PASSWORD"


def check_consume(settings: ConsumeSettings) -> None:
    """Raises `PreflightError` unless the learner can serve, read, write and publish, and
    restore its checkpoint."""
    check_checkpoint(settings)
    check_metrics_ports(settings.metrics_addr, settings.metrics_port, settings.workers)
    topics = settings.topics()
    check_kafka(
        settings.bootstrap,
        kafka_client_options(settings.kafka_options, settings.kafka_password),
        read=topics,
        write=[topic + DEAD_LETTER_SUFFIX for topic in topics],
        group=settings.group,
        allow_plaintext_secrets=settings.allow_plaintext_secrets,
    )
    store = RedisStore.from_url(
        settings.redis,
        settings.prefix,
        settings.redis_options,
        settings.redis_password,
        settings.allow_plaintext_secrets,
    )
    try:
        check_redis(store)
    finally:
        store.close()


def check_checkpoint(settings: ConsumeSettings) -> None:
    """Raises `PreflightError` when the newest checkpoint was written with other model
    settings (another `--model`, `--dim`, ..., or another release's defaults): restoring
    it would fail, and starting afresh in the same group would skip what it covered."""
    if settings.checkpoint_dir is None:
        return
    directory = Path(settings.checkpoint_dir)
    written = newest_settings(directory)
    wanted = dataclasses.asdict(settings.hyper_parameters())
    if written is None or dict(written) == wanted:
        return
    differ = sorted(
        key for key in written.keys() | wanted.keys() if written.get(key) != wanted.get(key)
    )
    changes = ", ".join(
        f"{key} {written.get(key, '(none)')} -> {wanted.get(key, '(none)')}" for key in differ
    )
    raise PreflightError(
        f"the checkpoint in {directory} was written with other model settings ({changes}): "
        "start with the settings it was written with (their flags, or --model-options for "
        "those without one), or learn the log again under a new "
        "--group (its own checkpoint directory)"
    )


def check_metrics_ports(address: str, first: int, workers: int) -> None:
    """Process i of `workers` serves /metrics on `first + i` (0: each picks a free port); a
    port it cannot bind would stop it, and with it every worker of the host."""
    if not first:
        return
    for index in range(workers):
        port = first + index
        which = f" (worker {index}'s: --metrics-port + {index})" if workers > 1 else ""
        with socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except (OSError, OverflowError) as error:
                raise PreflightError(
                    f"cannot serve /metrics on {address}:{port}{which}: "
                    f"{getattr(error, 'strerror', None) or error}: choose another "
                    "--metrics-port (or 0 for free ports) or --metrics-addr"
                ) from None


def check_redis(store: RedisStore) -> None:
    """Logged in, and allowed the writes a publication makes, under the store's prefix."""
    kwargs = store.client.connection_pool.connection_kwargs
    where = f"Redis at {kwargs.get('host', kwargs.get('path'))}:{kwargs.get('port', '')}"
    user = kwargs.get("username") or "default"
    try:
        store.client.ping()
    except redis.AuthenticationError as error:
        raise PreflightError(
            f"{where} rejected the credentials of user {user!r} ({error}): check"
            f" {PASSWORD_SETTING}, or the user in --redis / redis_options.username"
        ) from error
    except NoPermissionError as error:
        raise PreflightError(f"{where}: user {user!r} may not even PING ({error})") from error
    except redis.RedisError as error:
        raise PreflightError(f"cannot use {where} ({error}): check --redis") from error
    probe = f"{store.keys.prefix}preflight:{uuid.uuid4().hex}"
    pipe = store.client.pipeline(transaction=False)
    pipe.mset({probe: b"1"})
    pipe.hset(probe + ":meta", mapping={"probe": "1"})
    pipe.get(probe)
    pipe.delete(probe, probe + ":meta")
    try:
        pipe.execute()
    except redis.RedisError as error:
        raise PreflightError(
            f"{where}: user {user!r} may not write keys under {store.keys.prefix!r} ({error}):"
            f" grant it ~{store.keys.prefix}* +mset +hset +get +del in the Redis ACL, or"
            " change --prefix"
        ) from error
