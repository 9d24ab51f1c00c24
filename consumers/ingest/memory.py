"""An in-memory partitioned log with consumer groups: Kafka's semantics, no broker.

Used by the embedded demo and by unit tests; it implements the same
`EventSource` interface as `KafkaEventSource`.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping

from consumers.ingest.base import Contact, Record, RevokeHandler, TopicPartition
from streamer.events import (
    DEAD_LETTER_SUFFIX,
    REASON_HEADER,
    EntityFeatures,
    ViewEvent,
    encode_features,
    encode_key,
    encode_view,
)


class MemoryEventLog:
    """Topics of partitions of records, and committed offsets per group."""

    def __init__(self, partitions: int = 4) -> None:
        self.partitions = partitions
        self.topics: dict[str, list[list[Record]]] = {}
        self.headers: dict[tuple[str, int, int], dict[str, str]] = {}
        self.committed: dict[tuple[str, str, int], int] = {}

    def partitions_of(self, topic: str) -> list[list[Record]]:
        return self.topics.setdefault(topic, [[] for _ in range(self.partitions)])

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        timestamp: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Record:
        partitions = self.partitions_of(topic)
        # A stable hash keeps each key's records on one partition, in order.
        index = zlib.crc32(key) % len(partitions) if key is not None else 0
        partition = partitions[index]
        record = Record(
            topic,
            index,
            len(partition),
            key,
            value,
            time.time() if timestamp is None else timestamp,
        )
        partition.append(record)
        if headers:
            self.headers[(topic, index, record.offset)] = dict(headers)
        return record

    def send(self, event: ViewEvent, topic: str) -> Record:
        """Publish one view as a producer would (key = user id)."""
        return self.append(topic, encode_key(event.user), encode_view(event))

    def send_features(self, record: EntityFeatures, topic: str) -> Record:
        """Publish one item's or user's features as a producer would (key = its id)."""
        return self.append(topic, encode_key(record.id), encode_features(record))

    def end_offsets(self, topic: str) -> dict[TopicPartition, int]:
        return {(topic, i): len(p) for i, p in enumerate(self.partitions_of(topic))}


class MemoryEventSource:
    """The only member of `group` on `topics`: it owns every partition."""

    def __init__(self, log: MemoryEventLog, topics: str | list[str], group: str) -> None:
        self.log = log
        self.topics = [topics] if isinstance(topics, str) else topics
        self.group = group
        self._position = {
            (topic, partition): log.committed.get((group, topic, partition), 0)
            for topic in self.topics
            for partition in range(len(log.partitions_of(topic)))
        }

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Up to `max_records`, taken round-robin across partitions; never blocks."""
        records: list[Record] = []
        while len(records) < max_records:
            before = len(records)
            for (topic, index), position in self._position.items():
                partition = self.log.partitions_of(topic)[index]
                if position < len(partition) and len(records) < max_records:
                    records.append(partition[position])
                    self._position[(topic, index)] = position + 1
            if len(records) == before:
                break
        return records

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.log.append(
            record.topic + DEAD_LETTER_SUFFIX,
            record.key,
            record.value,
            record.timestamp,
            {REASON_HEADER: reason, "recstream.detail": detail},
        )

    def flush_dead_letters(self) -> None:
        """Dead letters are appended at once."""

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        for key, offset in offsets.items():
            if key in self._position:
                self._position[key] = offset

    def on_revoke(self, handler: RevokeHandler) -> None:
        """The only member never has partitions taken away."""

    def owns(self, key: bytes) -> bool:
        return True

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        for (topic, partition), offset in offsets.items():
            self.log.committed[(self.group, topic, partition)] = offset

    def lag(self) -> dict[TopicPartition, int]:
        return {
            (topic, p): len(self.log.partitions_of(topic)[p]) - position
            for (topic, p), position in self._position.items()
        }

    def contact(self) -> Contact:
        """The log is in this process: always reached."""
        return Contact(0.0)

    def close(self) -> None:
        """Nothing to release."""
