"""One suite for every event source: the in-memory log and a real Kafka consumer group."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.ingest.base import EventSource, Record, next_offsets
from consumers.ingest.kafka_source import KafkaEventSource
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from streamer.events import REASON_HEADER

DEADLINE_S = 30.0


@dataclass
class Backend:
    """A log plus ways to write it, join its group and read its dead letters."""

    append: Callable[[bytes, bytes], None]
    source: Callable[[str], EventSource]
    dead_letters: Callable[[int], list[tuple[bytes | None, dict[str, bytes]]]]


def memory_backend() -> Backend:
    log = MemoryEventLog(partitions=4)

    def dead_letters(expected: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
        records = [r for p in log.partitions_of("views.dlq") for r in p]
        return [
            (
                r.value,
                {k: v.encode() for k, v in log.headers[(r.topic, r.partition, r.offset)].items()},
            )
            for r in records
        ]

    return Backend(
        append=lambda key, value: log.append("views", key, value) and None,
        source=lambda group: MemoryEventSource(log, "views", group),
        dead_letters=dead_letters,
    )


def kafka_backend(bootstrap: str, topic: str) -> Iterator[Backend]:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    opened: list[EventSource] = []

    def append(key: bytes, value: bytes) -> None:
        producer.send(topic, key=key, value=value).get(timeout=10)

    def source(group: str) -> EventSource:
        opened.append(KafkaEventSource(bootstrap, topic, group))
        return opened[-1]

    def dead_letters(expected: int) -> list[tuple[bytes | None, dict[str, bytes]]]:
        consumer = KafkaConsumer(bootstrap_servers=bootstrap, consumer_timeout_ms=1000)
        consumer.assign([TopicPartition(f"{topic}.dlq", 0)])
        consumer.seek_to_beginning()
        found: list[tuple[bytes | None, dict[str, bytes]]] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(found) < expected and time.monotonic() < deadline:
            for messages in consumer.poll(timeout_ms=500).values():
                found.extend((m.value, dict(m.headers)) for m in messages)
        consumer.close()
        return found

    yield Backend(append, source, dead_letters)
    for opened_source in opened:
        opened_source.close()
    producer.close()


@pytest.fixture(params=["memory", "kafka"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        yield memory_backend()
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    topic = request.getfixturevalue("kafka_topic")
    yield from kafka_backend(bootstrap, topic)


def poll_until(source: EventSource, count: int) -> list[Record]:
    records: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    while len(records) < count and time.monotonic() < deadline:
        records.extend(source.poll(100, 0.5))
    return records


def test_records_come_back_in_order_per_partition(backend: Backend) -> None:
    for i in range(40):
        backend.append(f"user{i % 5}".encode(), f"v{i}".encode())
    records = poll_until(backend.source("g1"), 40)
    assert len(records) == 40
    by_user: dict[bytes | None, list[int]] = {}
    for record in records:
        by_user.setdefault(record.key, []).append(int(record.value[1:]))  # type: ignore[index]
    assert all(values == sorted(values) for values in by_user.values())
    assert {key: len(values) for key, values in by_user.items()} == {
        f"user{i}".encode(): 8 for i in range(5)
    }


def test_a_new_group_member_resumes_after_the_committed_offsets(backend: Backend) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    for i in range(20):
        backend.append(f"user{i % 4}".encode(), f"first{i}".encode())
    first = backend.source(group)
    records = poll_until(first, 20)
    first.commit(next_offsets(records))
    first.close()
    for i in range(10):
        backend.append(f"user{i % 4}".encode(), f"second{i}".encode())
    again = poll_until(backend.source(group), 10)
    assert sorted(r.value for r in again) == sorted(f"second{i}".encode() for i in range(10))  # type: ignore[type-var]


def test_dead_letters_carry_the_reason(backend: Backend) -> None:
    backend.append(b"u", b"garbage")
    source = backend.source("g-dlq")
    [record] = poll_until(source, 1)
    source.dead_letter(record, "not_json", "Expecting value")
    source.commit(next_offsets([record]))
    [(value, headers)] = backend.dead_letters(1)
    assert value == b"garbage"
    assert headers[REASON_HEADER] == b"not_json"


def test_lag_counts_unread_records_then_zero(backend: Backend) -> None:
    for i in range(12):
        backend.append(b"k", f"{i}".encode())  # one key: one partition
    source = backend.source("g-lag")
    first: list[Record] = []
    deadline = time.monotonic() + DEADLINE_S
    while not first and time.monotonic() < deadline:
        first = source.poll(5, 0.5)
    waiting = {key: lag for key, lag in source.lag().items() if lag}
    assert len(waiting) == 1 and sum(waiting.values()) == 12 - len(first) > 0
    assert len(poll_until(source, 12 - len(first))) == 12 - len(first)
    lags = source.lag()
    assert sorted(partition for _, partition in lags) == [0, 1, 2, 3]
    assert not any(lags.values())


def test_a_source_that_polled_its_log_is_in_contact(backend: Backend) -> None:
    backend.append(b"k", b"v")
    source = backend.source("g-contact")
    assert len(poll_until(source, 1)) == 1
    contact = source.contact()
    assert contact.silent_s < DEADLINE_S and contact.problem == ""
