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

from consumers.ingest.base import Contact, Record, RevokeHandler, SourceUnavailable
from consumers.ingest.base import TopicPartition as PartitionKey
from streamer.events import DEAD_LETTER_SUFFIX, REASON_HEADER

PROBE_EVERY_S = 5.0  # end offsets asked of the broker: the lag, and proof of contact
PROBE_TIMEOUT_S = 5.0
COMMIT_TIMEOUT_S = 10.0  # kafka-python's default, 30 s, would stall the loop past /health's window
DEAD_LETTER_TIMEOUT_S = 30.0
DEAD_LETTER_BLOCK_MS = 5000
METADATA_WAIT_S = 10.0
ASSIGNMENT_REFRESH_S = 5.0

log = logging.getLogger(__name__)


def _accepted(known: Mapping[str, object], config: dict[str, Any]) -> dict[str, Any]:
    """The options among `known` (security options are shared; the rest belong to one client)."""
    return {name: value for name, value in config.items() if name in known}


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks newly assigned partitions to checkpointed offsets; hands revocations on."""

    def __init__(self, source: KafkaEventSource) -> None:
        self.source = source

    def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        try:
            if self.source.revoke_handler and revoked:
                # This runs on kafka-python's IO thread, which must not block on itself:
                # commits made from the handler are sent asynchronously.
                self.source.in_rebalance = True
                self.source.revoke_handler([(tp.topic, tp.partition) for tp in revoked])
        except Exception as error:
            # kafka-python logs it and raises a bare KafkaError from `poll`, which `poll`
            # must not mistake for the broker being away: it raises this one instead.
            self.source.revoke_failure = error
            raise
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
        self.revoke_failure: Exception | None = None
        self.in_rebalance = False
        self.bootstrap = bootstrap
        self.consumer = KafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset=auto_offset_reset,
            **_accepted(KafkaConsumer.DEFAULT_CONFIG, config),
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
            while True:
                self._views_partitions = sorted(self.consumer.partitions_for_topic(self.topics[0]))
                if self._views_partitions or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        else:
            for topic in self.topics:  # fills the metadata cache: known topics, at once
                self.consumer.partitions_for_topic(topic)
            self._refresh_assignment()
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=5,
            # A dead letter waits for the topic's metadata at most this long, not the
            # client's 60 s: with the broker away it is re-sent later, the loop goes on.
            max_block_ms=DEAD_LETTER_BLOCK_MS,
            **_accepted(KafkaProducer.DEFAULT_CONFIG, config),
        )
        self._unsent: list[tuple[Record, list[tuple[str, bytes]]]] = []
        self._in_flight: list[tuple[Record, list[tuple[str, bytes]], Any]] = []
        # Contact with the broker: `poll` mostly returns nothing, raising nothing, while the
        # broker is away, so it asks for end offsets every PROBE_EVERY_S (see `contact`).
        self._ends: dict[PartitionKey, int] = {}
        self._probed_at = -PROBE_EVERY_S
        self._reached_at = time.monotonic()  # the last answer (at start: a grace period)
        self._failing_since: float | None = None  # polls raising since then
        self._problem = ""
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
        assigned = self.consumer.assignment()
        if wanted == assigned:
            return
        added = wanted - assigned
        self.consumer.assign(sorted(wanted))
        # Every worker reads the other topics in full, so the group's committed offset of
        # such a partition (moved by whichever worker committed last) is not this worker's
        # position: without a restored one, it reads the partition from its start.
        own = [
            tp
            for tp in added
            if tp.topic != views and (tp.topic, tp.partition) not in self.seek_offsets
        ]
        if own:
            self.consumer.seek_to_beginning(*own)
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
        self._probe()
        if self.worker is not None:
            if time.monotonic() - self._assigned_at > ASSIGNMENT_REFRESH_S:
                self._refresh_assignment()
            if not self.consumer.assignment():  # no views topic yet
                time.sleep(timeout_s)
                return []
        try:
            polled = self.consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        except KafkaError as error:
            if self.revoke_failure is None:  # the broker away (restarting, say): reconnects
                log.warning("poll: %s", error)
                self._problem = f"poll: {error!r}"
                if self._failing_since is None:
                    self._failing_since = time.monotonic()
                time.sleep(timeout_s)
                return []
            polled = {}
        if self.revoke_failure is not None:  # the caller's own error, raised as itself
            failure, self.revoke_failure = self.revoke_failure, None
            raise failure
        self._failing_since = None
        records: list[Record] = []
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
                self.consumer.commit(committed, timeout_ms=int(COMMIT_TIMEOUT_S * 1000))
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
        """End offset (from the last answered probe) minus position, per assigned partition."""
        lags: dict[PartitionKey, int] = {}
        for tp in self.consumer.assignment():
            key = (tp.topic, tp.partition)
            if key not in self._ends:
                continue
            try:  # the next offset to hand out (a round trip only when it is unknown)
                position = self.consumer.position(tp, timeout_ms=1000)
            except KafkaError as error:
                log.warning("position of %s/%d: %s", *key, error)
                continue
            if position is not None:
                lags[key] = max(0, self._ends[key] - position)
        return lags

    def contact(self) -> Contact:
        """Silent since the last answered probe, or since polls began to fail."""
        since = self._reached_at
        if self._failing_since is not None:
            since = min(since, self._failing_since)
        problem = f"Kafka at {self.bootstrap}: {self._problem}" if self._problem else ""
        return Contact(time.monotonic() - since, problem)

    def _probe(self) -> None:
        """Ask the leaders for the end offsets of our partitions (or, with none assigned,
        of the first topic's) every PROBE_EVERY_S: an answer proves contact."""
        if time.monotonic() - self._probed_at < PROBE_EVERY_S:
            return
        self._probed_at = time.monotonic()
        partitions = list(self.consumer.assignment()) or [
            TopicPartition(self.topics[0], p) for p in self._views_partitions
        ]
        if not partitions:
            self._problem = f"topic {self.topics[0]} has no partitions (does it exist?)"
            return
        try:
            ends = self.consumer.end_offsets(partitions, timeout_ms=int(PROBE_TIMEOUT_S * 1000))
        except KafkaError as error:
            log.warning("end offsets: %s", error)
            self._problem = f"end offsets: {error!r}"
            return
        self._ends = {(tp.topic, tp.partition): end for tp, end in ends.items()}
        self._reached_at = time.monotonic()
        self._problem = ""

    def close(self) -> None:
        """Leave the group without calling the revoke handler (kafka-python revokes on
        close): the caller has persisted what it meant to, and after a failure must not."""
        self.revoke_handler = None
        self.producer.close(timeout=10)
        self.consumer.close(autocommit=False)
