"""The interface every event source implements, and the record it yields."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

TopicPartition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Record:
    """One raw record as read from the log; `timestamp` in seconds since the epoch."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: float


class EventSource(Protocol):
    """A consumer-group member: poll records, dead-letter bad ones, commit progress."""

    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        """Send `record` to the dead-letter topic; raises if it cannot be delivered."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Record `offsets` (the next offset to read, per partition) for the group."""

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each assigned partition."""

    def close(self) -> None: ...


def next_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition in `records`."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
