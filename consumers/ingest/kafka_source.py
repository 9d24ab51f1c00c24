"""The production event source: a Kafka consumer-group member with a dead-letter producer."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from consumers.ingest.base import Record
from consumers.ingest.base import TopicPartition as PartitionKey
from streamer.events import DEAD_LETTER_SUFFIX, REASON_HEADER

LAG_REFRESH_SECONDS = 5.0


class DeadLetterError(RuntimeError):
    """A dead letter could not be delivered: the batch must not be committed."""


class KafkaEventSource:
    """Reads `topic` in consumer group `group` with manual offset commits.

    Dead letters are sent asynchronously and awaited in `commit`, so an offset
    is never committed past a bad record that did not reach the dead-letter topic.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        group: str,
        auto_offset_reset: str = "earliest",
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        config = dict(client_config or {})
        self.topic = topic
        self.dead_letter_topic = topic + DEAD_LETTER_SUFFIX
        self.consumer = KafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            **config,
        )
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, **config
        )
        self._pending: list[Future[Any]] = []
        self._ends: dict[PartitionKey, int] = {}
        self._ends_at = 0.0

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        return [
            Record(
                message.topic,
                message.partition,
                message.offset,
                message.key,
                message.value,
                message.timestamp / 1000.0,
            )
            for messages in polled.values()
            for message in messages
        ]

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        headers = [
            (REASON_HEADER, reason.encode()),
            ("recstream.detail", detail.encode("utf-8", "replace")[:1000]),
            ("recstream.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        self._pending.append(
            self.producer.send(
                self.dead_letter_topic, key=record.key, value=record.value, headers=headers
            )
        )

    def commit(self, offsets: Mapping[PartitionKey, int]) -> None:
        pending, self._pending = self._pending, []
        if pending:
            self.producer.flush(timeout=30)
            failed = [future.exception() for future in pending if future.exception()]
            if failed:
                raise DeadLetterError(f"{len(failed)} dead letters not delivered: {failed[0]}")
        if offsets:
            self.consumer.commit(
                {
                    TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
                    for (topic, partition), offset in offsets.items()
                }
            )

    def lag(self) -> dict[PartitionKey, int]:
        """End offset (from the broker, refreshed every few seconds) minus position."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        if time.monotonic() - self._ends_at > LAG_REFRESH_SECONDS:
            ends = self.consumer.end_offsets(assigned, timeout_ms=5000)
            self._ends = {(tp.topic, tp.partition): end for tp, end in ends.items()}
            self._ends_at = time.monotonic()
        return {
            (tp.topic, tp.partition): max(
                0, self._ends.get((tp.topic, tp.partition), 0) - self.consumer.position(tp)
            )
            for tp in assigned
        }

    def close(self) -> None:
        self.producer.close(timeout=10)
        self.consumer.close(autocommit=False)
