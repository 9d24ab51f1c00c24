"""ViewProducer's accounting over a fake kafka-python client (the real broker: integration)."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from streamer import producer as producer_module
from streamer.events import VIEWS_TOPIC, ViewEvent, decode_view
from streamer.producer import DEFAULT_CLIENT_CONFIG, DeliveryError, ViewProducer

EVENT = ViewEvent(user="u1", item="i2", ts=10.0)


class FakeClient:
    """Keeps each send's future open until `settle` (kafka-python's sender thread's role)."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes, Future]] = []
        self.refuse: Exception | None = None
        self.closed = False

    def send(self, topic: str, *, value: bytes, key: bytes) -> Future:
        if self.refuse is not None:
            raise self.refuse
        future = Future()
        self.records.append((topic, value, key, future))
        return future

    def settle(self, *outcomes: Exception | None) -> None:
        """Complete the open futures in order: None succeeds, an exception fails."""
        open_futures = [f for *_, f in self.records if not f.is_done]
        for future, outcome in zip(open_futures, outcomes, strict=False):
            if outcome is None:
                future.success("metadata")
            else:
                future.failure(outcome)

    def flush(self, timeout: float | None = None) -> None:
        pass

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def test_send_keys_by_user_and_encodes_the_view() -> None:
    client = FakeClient()
    views = ViewProducer("unused", client=client, topic="t")
    views.send(EVENT)
    [(topic, value, key, _)] = client.records
    assert (topic, key) == ("t", b"u1")
    assert decode_view(value, key=key) == EVENT
    assert ViewProducer("unused", client=client).topic == VIEWS_TOPIC


def test_every_send_ends_up_sent_or_failed() -> None:
    client = FakeClient()
    views = ViewProducer("unused", client=client)
    for _ in range(4):
        views.send(EVENT)
    assert (views.sent, views.failed, views.pending) == (0, 0, 4)
    client.settle(None, KafkaTimeoutError("expired"), None, None)
    assert (views.sent, views.failed, views.pending) == (3, 1, 0)
    assert [type(e) for e in views.errors] == [KafkaTimeoutError]


def test_flush_raises_once_for_failures_since_the_last_flush() -> None:
    client = FakeClient()
    views = ViewProducer("unused", client=client)
    views.send(EVENT)
    views.send(EVENT)
    client.settle(None, KafkaTimeoutError("expired"))
    with pytest.raises(DeliveryError, match="1 view"):
        views.flush()
    views.flush()  # nothing new
    views.send(EVENT)
    client.settle(None)
    views.flush()
    assert (views.sent, views.failed) == (2, 1)


def test_a_send_refused_at_once_is_counted_and_raised() -> None:
    client = FakeClient()
    views = ViewProducer("unused", client=client)
    client.refuse = KafkaTimeoutError("no metadata")
    with pytest.raises(KafkaTimeoutError):
        views.send(EVENT)
    assert (views.failed, views.pending) == (1, 0)
    with pytest.raises(DeliveryError):
        views.flush()


def test_close_closes_the_client_even_when_the_flush_raises() -> None:
    client = FakeClient()
    views = ViewProducer("unused", client=client)
    views.send(EVENT)
    client.settle(KafkaTimeoutError("expired"))
    with pytest.raises(DeliveryError):
        views.close()
    assert client.closed
    views.close()  # once is enough
    with pytest.raises(RuntimeError, match="closed"):
        views.send(EVENT)


def test_the_context_manager_closes_and_keeps_the_first_error() -> None:
    client = FakeClient()
    with pytest.raises(KeyError), ViewProducer("unused", client=client) as views:
        views.send(EVENT)
        client.settle(KafkaTimeoutError("expired"))
        raise KeyError("the caller's own error")
    assert client.closed
    client = FakeClient()
    with ViewProducer("unused", client=client) as views:
        views.send(EVENT)
        client.settle(None)
    assert client.closed and views.sent == 1


def test_kafka_config_defaults_and_passthrough(monkeypatch: pytest.MonkeyPatch) -> None:
    made: dict[str, Any] = {}

    def fake_kafka_producer(**config: Any) -> FakeClient:
        made.update(config)
        return FakeClient()

    monkeypatch.setattr(producer_module, "KafkaProducer", fake_kafka_producer)
    ViewProducer("b:9092", compression_type="gzip", security_protocol="SSL", linger_ms=20)
    assert made["bootstrap_servers"] == "b:9092"
    assert made["acks"] == "all" and made["enable_idempotence"] is True
    assert (made["compression_type"], made["security_protocol"], made["linger_ms"]) == (
        "gzip",
        "SSL",
        20,
    )
    assert made["batch_size"] == DEFAULT_CLIENT_CONFIG["batch_size"]
    with pytest.raises(ValueError, match="either"):
        ViewProducer("b:9092", client=FakeClient(), linger_ms=1)
