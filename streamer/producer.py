"""`ViewProducer`: the client library services use to publish view events to Kafka.

Each view goes to the views topic keyed by its user (so a user's views stay ordered on one
partition), valued by its wire JSON (`streamer.events`). Delivery is durable by default:
`acks="all"` with the idempotent producer of kafka-python 3.0, whose retries are unbounded
within `delivery_timeout_ms` (so `retries` is left to it; setting `retries=0`, or `acks` to
0 or 1, conflicts with idempotence and kafka-python then refuses the configuration).

Nothing is dropped silently: every send ends in the `sent` or the `failed` count (from
kafka-python's delivery callbacks), and `flush()` raises `DeliveryError` when any send
failed since the last flush. The record timestamp is the send time, not the view's `ts`:
replayed history must not fall out of the topic's retention at once.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Final, Protocol, Self

from kafka import KafkaProducer

from streamer.events import (
    VIEWS_TOPIC,
    EntityFeatures,
    ViewEvent,
    encode_features,
    encode_key,
    encode_view,
)
from streamer.preflight import check_kafka_options

log = logging.getLogger(__name__)

DEFAULT_CLIENT_CONFIG: Final[dict[str, Any]] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "batch_size": 128 * 1024,
    "max_in_flight_requests_per_connection": 5,
    "delivery_timeout_ms": 120_000,
}
KEPT_ERRORS: Final = 5


class DeliveryError(RuntimeError):
    """Some views handed to `ViewProducer.send` were not acknowledged by Kafka."""


class DeliveryFuture(Protocol):
    """What kafka-python's `send` returns: a future taking success and failure callbacks."""

    def add_callback(self, f: Any, /) -> Any: ...

    def add_errback(self, f: Any, /) -> Any: ...


class ProducerClient(Protocol):
    """The part of `kafka.KafkaProducer` used here; tests pass a fake."""

    def send(self, topic: str, *, value: bytes, key: bytes) -> DeliveryFuture: ...

    def flush(self, timeout: float | None = None) -> None: ...

    def close(self, timeout: float | None = None) -> None: ...


class ViewProducer:
    """Publishes `ViewEvent`s to Kafka and accounts for every one of them.

    `client_config` goes to `kafka.KafkaProducer` over `DEFAULT_CLIENT_CONFIG` (for SASL/SSL:
    `security_protocol`, `sasl_mechanism`, `sasl_plain_username`, `ssl_cafile`, ...);
    combinations that cannot work, or SASL over a plain connection to a host beyond
    loopback (unless `allow_plaintext_secrets`), raise `PreflightError` here.
    """

    def __init__(
        self,
        bootstrap_servers: str | Sequence[str],
        *,
        topic: str = VIEWS_TOPIC,
        compression_type: str | None = None,
        client: ProducerClient | None = None,
        allow_plaintext_secrets: bool = False,
        **client_config: Any,
    ) -> None:
        if client is not None and client_config:
            raise ValueError("pass either a client or client_config, not both")
        if client is None:
            config = {**DEFAULT_CLIENT_CONFIG, "compression_type": compression_type}
            config.update(client_config)
            check_kafka_options(bootstrap_servers, config, allow_plaintext_secrets)
            client = KafkaProducer(bootstrap_servers=bootstrap_servers, **config)
        self.topic = topic
        self._client: ProducerClient = client
        self._lock = threading.Lock()
        self._submitted = 0
        self._sent = 0
        self._failed = 0
        self._reported = 0
        self._errors: deque[BaseException] = deque(maxlen=KEPT_ERRORS)
        self._closed = False

    @property
    def sent(self) -> int:
        """Views acknowledged by Kafka."""
        return self._sent

    @property
    def failed(self) -> int:
        """Views that will never be delivered: refused by `send` or failed in delivery."""
        return self._failed

    @property
    def pending(self) -> int:
        """Views handed over and not yet acknowledged or failed."""
        with self._lock:
            return self._submitted - self._sent - self._failed

    @property
    def errors(self) -> tuple[BaseException, ...]:
        """The last few delivery errors, oldest first."""
        with self._lock:
            return tuple(self._errors)

    def _on_sent(self, _metadata: object) -> None:
        with self._lock:
            self._sent += 1

    def _on_failed(self, error: BaseException) -> None:
        with self._lock:
            self._failed += 1
            self._errors.append(error)
        log.warning("view delivery to %s failed: %r", self.topic, error)

    def send(self, event: ViewEvent) -> None:
        """Hand one view to the client; its outcome lands in `sent` or `failed`."""
        self._send(self.topic, encode_key(event.user), encode_view(event))

    def send_features(self, record: EntityFeatures, topic: str) -> None:
        """Hand one item's or user's feature record (keyed by its id) to the client for
        `topic`, counted with the views."""
        self._send(topic, encode_key(record.id), encode_features(record))

    def _send(self, topic: str, key: bytes, value: bytes) -> None:
        if self._closed:
            raise RuntimeError("ViewProducer is closed")
        with self._lock:
            self._submitted += 1
        try:
            future = self._client.send(topic, value=value, key=key)
        except Exception as error:
            self._on_failed(error)
            raise
        future.add_callback(self._on_sent)
        future.add_errback(self._on_failed)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every view handed over is delivered or failed.

        Raises `DeliveryError` if any view failed since the last flush, and kafka-python's
        `KafkaTimeoutError` if `timeout` (seconds) passes first.
        """
        self._client.flush(timeout)
        with self._lock:
            new_failures = self._failed - self._reported
            self._reported = self._failed
            last = self._errors[-1] if self._errors else None
        if new_failures:
            raise DeliveryError(
                f"{new_failures} view(s) to {self.topic} failed since the last flush "
                f"({self._sent} sent, {self._failed} failed in all); last error: {last!r}"
            )

    def close(self, timeout: float | None = None) -> None:
        """Flush, then close the client, even when the flush raises."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush(timeout)
        finally:
            self._client.close(timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        try:
            self.close()
        except DeliveryError as error:  # keep the exception already on its way out
            log.error("while leaving on %r: %s", exc, error)
