"""The interface every event source implements, and the record it yields."""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


@dataclass(frozen=True, slots=True)
class Contact:
    """How long the log has not answered this reader (0 while it does), and the last
    error seen since it last did ("" if none)."""

    silent_s: float
    problem: str = ""


class SourceUnavailable(RuntimeError):
    """The log could not take a commit or a dead letter now; retry later, lose nothing."""


RevokeHandler = Callable[[list[TopicPartition]], None]


class EventSource(Protocol):
    """A consumer-group member: poll records, dead-letter bad ones, commit progress."""

    def poll(self, max_records: int, timeout_s: float) -> list[Record]: ...

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        """Queue `record` for the dead-letter topic (delivered by `flush_dead_letters`)."""

    def flush_dead_letters(self) -> None:
        """Deliver every queued dead letter; raises `SourceUnavailable` if any is not."""

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Flush dead letters, then record `offsets` (the next offset to read) for the group.

        Raises `SourceUnavailable` when either cannot be done now.
        """

    def seek(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Read each of these partitions from the given offset once it is assigned."""

    def on_revoke(self, handler: RevokeHandler) -> None:
        """Call `handler` with the partitions a rebalance takes away, before it does."""

    def owns(self, key: bytes) -> bool:
        """Whether views keyed `key` come to this reader (always, unless a host's
        workers split the partitions among themselves)."""

    def lag(self) -> dict[TopicPartition, int]:
        """Records behind the end of each assigned partition."""

    def contact(self) -> Contact:
        """Whether polls reach the log: a poll that returns nothing may be an idle log or
        an unreachable one, and only the source can tell them apart."""

    def close(self) -> None: ...


def next_offsets(records: list[Record]) -> dict[TopicPartition, int]:
    """The offset after the last record of each partition in `records`."""
    offsets: dict[TopicPartition, int] = {}
    for record in records:
        key = (record.topic, record.partition)
        offsets[key] = max(offsets.get(key, 0), record.offset + 1)
    return offsets
