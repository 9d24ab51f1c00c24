"""The production event source: a Kafka consumer-group member with a dead-letter producer."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2
from kafka.structs import OffsetAndMetadata

from consumers.ingest.base import Record, RevokeHandler, SourceUnavailable
from consumers.ingest.base import TopicPartition as PartitionKey
from streamer.events import DEAD_LETTER_SUFFIX, REASON_HEADER

LAG_REFRESH_SECONDS = 5.0
DEAD_LETTER_TIMEOUT_S = 30.0
METADATA_WAIT_S = 10.0
ASSIGNMENT_REFRESH_S = 5.0

log = logging.getLogger(__name__)


def _accepted(client: type, config: dict[str, Any]) -> dict[str, Any]:
    """The options `client` knows (security options are shared; the rest belong to one)."""
    return {name: value for name, value in config.items() if name in client.DEFAULT_CONFIG}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks newly assigned partitions to checkpointed offsets; hands revocations on."""

    def __init__(self, source: KafkaEventSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        if self.source.revoke_handler and revoked:
            # This runs on kafka-python's IO thread, which must not block on itself:
            # commits made from the handler are sent asynchronously.
            self.source.in_rebalance = True
            try:
                self.source.revoke_handler([(tp.topic, tp.partition) for tp in revoked])
            finally:
                self.source.in_rebalance = False
        for tp in revoked:
            self.source.read_from.pop((tp.topic, tp.partition), None)

    def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.source.read_from.pop((tp.topic, tp.partition), None)
            offset = self.source.seek_offsets.pop((tp.topic, tp.partition), None)
            if offset is not None:
                self.source.consumer.seek(tp, offset)
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))


class KafkaEventSource:
    """Reads `topics` in consumer group `group` with manual offset commits.

    Dead letters are sent asynchronously and awaited before any commit, and a
    failed one is re-sent at the next attempt, so an offset is never committed
    past a bad record that did not reach its dead-letter topic.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: str | list[str],
        group: str,
        auto_offset_reset: str = "earliest",
        client_config: Mapping[str, Any] | None = None,
        worker: tuple[int, int] | None = None,
    ) -> None:
        """`worker=(i, n)`: worker i of a host's n reads the first topic's partitions p
        with p % n == i (fixed, so each user's state stays with one worker) and every
        partition of the other topics; offsets are still committed for `group`."""
        config = dict(client_config or {})
        unknown = (
            set(config) - set(KafkaConsumer.DEFAULT_CONFIG) - set(KafkaProducer.DEFAULT_CONFIG)
        )
        if unknown:
            raise ValueError(f"unknown kafka-python options: {sorted(unknown)}")
        self.topics = [topics] if isinstance(topics, str) else topics
        self.seek_offsets: dict[PartitionKey, int] = {}
        self.revoke_handler: RevokeHandler | None = None
        self.in_rebalance = False
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            **_accepted(KafkaConsumer, config),
        )
        self.worker = worker
        self._views_partitions: list[int] = []
        self._assigned_at = 0.0
        self._missing: set[str] = set()  # topics not found yet (worker mode)
        if worker is None:
            self.consumer.subscribe(self.topics, listener=_Rebalance(self))
            # Join with the topic's metadata at hand (fetched after subscribing, so the
            # group coordinator records it): a first join without it assigns nothing and
            # rejoins once it arrives, and kafka-python 3.0 can hang in that second join
            # (seen on a loaded machine: the member never gets partitions).
            deadline = time.monotonic() + METADATA_WAIT_S
            while not self.consumer.partitions_for_topic(self.topics[0]):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        else:
            for topic in self.topics:  # fills the metadata cache: known topics, at once
                self.consumer.partitions_for_topic(topic)
            self._refresh_assignment()
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, acks="all", linger_ms=5, **_accepted(KafkaProducer, config)
        )
        self._unsent: list[tuple[Record, list[tuple[str, bytes]]]] = []
        self._in_flight: list[tuple[Record, list[tuple[str, bytes]], Any]] = []
        self._ends: dict[PartitionKey, int] = {}
        self._ends_at = 0.0
        # Per partition, the first offset polled since it was (last) assigned: commits
        # below it, or for partitions not read since, are stale (see `commit`).
        self.read_from: dict[PartitionKey, int] = {}
        # Per partition, the offset after the last record handed out (see `poll`).
        self.delivered: dict[PartitionKey, int] = {}

    def _refresh_assignment(self) -> None:
        """Worker mode: assign this worker's partitions of the topics that exist now.

        Nothing is read before the views topic exists (which worker owns a user follows
        from its partitions); a missing topic is looked for again every few seconds,
        with all-topic metadata requests (these never auto-create a topic), sent in the
        background so that a poll never waits on them.
        """
        assert self.worker is not None
        index, count = self.worker
        self._assigned_at = time.monotonic()
        cluster = self.consumer._cluster  # kafka-python's metadata cache
        found = {topic: sorted(cluster.partitions_for_topic(topic) or ()) for topic in self.topics}
        missing = {topic for topic, partitions in found.items() if not partitions}
        for topic in sorted(missing - self._missing):
            log.warning("topic %s does not exist (yet): waiting for it", topic)
        for topic in sorted(self._missing - missing):
            log.info("topic %s exists now", topic)
        self._missing = missing
        cluster.need_all_topic_metadata = bool(missing)
        if missing:
            cluster.request_update()
        views, *others = self.topics
        if not found[views]:
            return
        self._views_partitions = found[views]
        wanted = {TopicPartition(views, p) for p in found[views] if p % count == index}
        wanted.update(TopicPartition(topic, p) for topic in others for p in found[topic])
        if wanted == self.consumer.assignment():
            return
        self.consumer.assign(sorted(wanted))
        self._seek_assigned()  # restored positions of partitions assigned only now
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in wanted))

    def owns(self, key: bytes) -> bool:
        """Whether the producers' partitioner (murmur2, as Kafka's Java client) sends
        `key` to one of this worker's partitions."""
        if self.worker is None:
            return True
        index, count = self.worker
        partition = (murmur2(key) & 0x7FFFFFFF) % len(self._views_partitions)
        return self._views_partitions[partition] % count == index

    def poll(self, max_records: int, timeout_s: float) -> list[Record]:
        """Records not handed out before: a member that lost its partitions without a
        revocation (its session expired, say while the broker restarted) gets them back
        at the group's last commit, behind what it already read; those records are
        dropped and the partition moved past them, so none is applied twice."""
        if self.worker is not None:
            if time.monotonic() - self._assigned_at > ASSIGNMENT_REFRESH_S:
                self._refresh_assignment()
            if not self.consumer.assignment():  # no views topic yet
                time.sleep(timeout_s)
                return []
        try:
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as error:  # the broker away (restarting, say): reconnects next poll
            log.warning("poll: %s", error)
            time.sleep(timeout_s)
            return []
        records = []
        for tp, messages in polled.items():
            key = (tp.topic, tp.partition)
            if messages:  # read, so ours (where the group had got to, or a seek)
                self.read_from.setdefault(key, messages[0].offset)
            delivered = self.delivered.get(key, 0)
            fresh = [message for message in messages if message.offset >= delivered]
            if len(fresh) < len(messages):
                log.warning(
                    "%s/%d read again from %d: skipped to %d", *key, messages[0].offset, delivered
                )
                if not fresh:
                    self.consumer.seek(tp, delivered)
            if not fresh:
                continue
            self.delivered[key] = fresh[-1].offset + 1
            records.extend(
                Record(
                    message.topic,
                    message.partition,
                    message.offset,
                    message.key,
                    message.value,
                    message.timestamp / 1000.0,
                )
                for message in fresh
            )
        return records

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        headers = [
            (REASON_HEADER, reason.encode()),
            ("recstream.detail", detail.encode("utf-8", "replace")[:1000]),
            ("recstream.source", f"{record.topic}/{record.partition}/{record.offset}".encode()),
        ]
        self._unsent.append((record, headers))

    def flush_dead_letters(self) -> None:
        unsent, self._unsent = self._unsent, []
        for record, headers in unsent:
            try:
                future = self.producer.send(
                    record.topic + DEAD_LETTER_SUFFIX,
                    key=record.key,
                    value=record.value,
                    headers=headers,
                )
            except KafkaError as error:  # no metadata for the topic in time: later
                log.warning("dead letter: %s", error)
                self._unsent.append((record, headers))
                continue
            self._in_flight.append((record, headers, future))
        if self._in_flight:
            try:
                self.producer.flush(timeout=DEAD_LETTER_TIMEOUT_S)
            except KafkaError as error:
                log.warning("dead-letter flush: %s", error)
            in_flight, self._in_flight = self._in_flight, []
            for record, headers, future in in_flight:
                if not future.succeeded():
                    self._unsent.append((record, headers))
        if self._unsent:
            raise SourceUnavailable(f"{len(self._unsent)} dead letters not delivered yet")

    def commit(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Commit the offsets of partitions read since their assignment, and only those.

        The caller's offsets cover every partition its state has applied, including
        ones a rebalance gave to another member (which commits them now) or gave back
        (read again from that member's commit): committing those would rewind the
        group and have their events applied twice.
        """
        self.flush_dead_letters()
        committed = {
            TopicPartition(topic, partition): OffsetAndMetadata(offset, "", -1)
            for (topic, partition), offset in offsets.items()
            if offset >= self.read_from.get((topic, partition), offset + 1)
        }
        if not committed:
            return
        try:
            if self.in_rebalance:
                self.consumer.commit_async(committed)
            else:
                self.consumer.commit(committed)
        except KafkaError as error:
            raise SourceUnavailable(f"offset commit failed: {error}") from error

    def seek(self, offsets: Mapping[PartitionKey, int]) -> None:
        """Seek now where assigned; elsewhere at the next assignment (once)."""
        self.seek_offsets.update(offsets)
        for key in offsets:  # asked for: read these again, whatever was handed out before
            self.delivered.pop(key, None)
            self.read_from.pop(key, None)
        self._seek_assigned()

    def _seek_assigned(self) -> None:
        for tp in self.consumer.assignment():
            offset = self.seek_offsets.pop((tp.topic, tp.partition), None)
            if offset is not None:
                self.consumer.seek(tp, offset)

    def on_revoke(self, handler: RevokeHandler) -> None:
        self.revoke_handler = handler

    def lag(self) -> dict[PartitionKey, int]:
        """End offset (from the broker, refreshed every few seconds) minus position."""
        assigned = list(self.consumer.assignment())
        if not assigned:
            return {}
        if time.monotonic() - self._ends_at > LAG_REFRESH_SECONDS:
            try:
                ends = self.consumer.end_offsets(assigned, timeout_ms=5000)
            except KafkaError as error:
                log.warning("end offsets: %s", error)
                return {}
            self._ends = {(tp.topic, tp.partition): end for tp, end in ends.items()}
            self._ends_at = time.monotonic()
        try:
            return {
                (tp.topic, tp.partition): max(
                    0, self._ends.get((tp.topic, tp.partition), 0) - self.consumer.position(tp)
                )
                for tp in assigned
                if (tp.topic, tp.partition) in self._ends
            }
        except KafkaError as error:  # a position unknown while the broker is away
            log.warning("positions: %s", error)
            return {}

    def close(self) -> None:
        self.producer.close(timeout=10)
        self.consumer.close(autocommit=False)
