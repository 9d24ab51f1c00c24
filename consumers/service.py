"""The learner's service loop: poll, decode, dead-letter, learn, publish, checkpoint, commit.

Durability has one order, written once here (`checkpoint`): flush the outputs
(dead letters, then the store), write the checkpoint, then commit its offsets.
With checkpoints, a restart restores the newest valid checkpoint and seeks to
its offsets, so every event affects the model exactly once. Without them the
model lives only in memory, so no offset is ever committed: a restart learns the
retained log again from where `auto_offset_reset` says.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from torch import Tensor

from consumers.durability.manifest import Offsets, WorkerManifest
from consumers.durability.policy import Checkpoints
from consumers.health import Health
from consumers.ingest.base import EventSource, Record, SourceUnavailable, TopicPartition
from consumers.learner import OnlineLearner
from consumers.metrics import LearnerMetrics
from consumers.publisher import Publisher, PublishResult
from streamer.events import EntityKind, InvalidRecord, ViewEvent, decode_features, decode_view

LOSS_SMOOTHING = 0.05
MAX_POLL_WAIT_S = 0.5

log = logging.getLogger(__name__)


class StopFlag(Protocol):
    """When to stop: a `threading.Event`, or a host's flag for its workers."""

    def is_set(self) -> bool: ...


@dataclass
class ConsumeService:
    """Drives an `OnlineLearner`, then its `Publisher`, from an `EventSource` in micro-batches.

    A batch is `batch_size` records, or fewer once `max_wait_s` has passed since
    its first record arrived: with a huge `max_wait_s`, batches are count-based
    and so identical across restarts.
    """

    source: EventSource
    learner: OnlineLearner
    publisher: Publisher
    metrics: LearnerMetrics
    batch_size: int = 512
    max_wait_s: float = 0.1
    checkpoints: Checkpoints | None = None
    users_topic: str | None = None
    items_topic: str | None = None
    clock: Callable[[], float] = time.monotonic
    health: Health = field(default_factory=Health)
    smoothed_loss: float | None = field(default=None, init=False)
    positions: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    applied: dict[TopicPartition, int] = field(default_factory=dict, init=False)
    _buffer: list[Record] = field(default_factory=list, init=False)
    _buffer_since: float = field(default=0.0, init=False)
    _records_since_checkpoint: int = field(default=0, init=False)
    _checkpointed_at: float = field(default=0.0, init=False)
    _skipped_seen: int = field(default=0, init=False)
    _lagging: set[TopicPartition] = field(default_factory=set, init=False)

    def __post_init__(self) -> None:
        self._checkpointed_at = self.clock()
        self.metrics.checkpoint_enabled.set(self.checkpoints is not None)
        self.source.on_revoke(self._on_revoke)

    def restore(self) -> bool:
        """Load the newest valid checkpoint and seek to its offsets; False if none."""
        if self.checkpoints is None:
            return False
        restored = self.checkpoints.read()
        if restored is None:
            return False
        load_process_state(
            self.learner,
            self.publisher,
            restored.tensors,
            restored.manifest.to_json(),
            restored.shared,
        )
        self.positions = _partition_map(restored.manifest.positions)
        self.applied = _partition_map(restored.manifest.applied)
        self.source.seek(self.positions)
        log.info("restored a checkpoint at %s", sorted(self.positions.items()))
        return True

    def step(self) -> int:
        """Poll once, learn a batch when it is full or old enough; returns records polled."""
        waited = self.clock() - self._buffer_since if self._buffer else 0.0
        timeout = min(max(self.max_wait_s - waited, 0.0), MAX_POLL_WAIT_S)
        records = self.source.poll(self.batch_size - len(self._buffer), timeout)
        self._observe_contact(len(records))
        if records and not self._buffer:
            self._buffer_since = self.clock()
        self._buffer.extend(records)
        full = len(self._buffer) >= self.batch_size
        if self._buffer and (full or self.clock() - self._buffer_since >= self.max_wait_s):
            self._apply_buffer()
        elif not records and self.publisher.pending:
            self._observe_publish(self.publisher.flush())
        if self._checkpoint_due():
            self.checkpoint()
        elif self.checkpoints is not None and not self._records_since_checkpoint:
            self.health.mark("checkpoint", True, "up to date")
        self._observe_state()
        return len(records)

    def run(self, stop: StopFlag) -> None:
        """Loop until `stop` is set; then learn what is buffered, publish, checkpoint, commit."""
        if self.checkpoints is not None:
            self.restore()
        while not stop.is_set():
            self.step()
        self.shutdown()

    def shutdown(self) -> None:
        self._apply_buffer()
        self._observe_publish(self.publisher.flush())
        if self.checkpoints is not None:
            self.checkpoints.finish(self.checkpoint)

    def checkpoint(self) -> bool:
        """Flush outputs, write a checkpoint, commit its offsets; False if it must wait."""
        if self.checkpoints is None:
            return False
        if self.checkpoints.closing:  # the last checkpoint covers every record held
            self._apply_buffer()
        started = time.perf_counter()
        ready = True
        try:
            self.source.flush_dead_letters()
        except SourceUnavailable as error:
            log.warning("checkpoint postponed: %s", error)
            self.health.mark("checkpoint", False, f"postponed: {error}")
            ready = False
        self._observe_publish(self.publisher.flush())
        try:
            if not self.checkpoints.write(self._snapshot, ready):
                return False
        except OSError as error:  # a full or read-only disk: keep learning, commit nothing
            log.error("checkpoint failed: %s", error)
            self.health.mark("checkpoint", False, str(error))
            return False
        self.metrics.checkpoint_seconds.observe(time.perf_counter() - started)
        self.metrics.last_checkpoint_timestamp.set(time.time())
        self.health.mark("checkpoint", True)
        self._records_since_checkpoint = 0
        self._checkpointed_at = self.clock()
        self._commit()
        return True

    def _snapshot(self) -> tuple[dict[str, Tensor], WorkerManifest]:
        tensors, entries = process_state(self.learner, self.publisher)
        entries.update(positions=_partition_list(self.positions))
        entries.update(applied=_partition_list(self.applied))
        return tensors, WorkerManifest.from_json(entries)

    def _checkpoint_due(self) -> bool:
        if self.checkpoints is None:
            return False
        policy = self.checkpoints.policy
        by_count = policy.every_events is not None and (
            self._records_since_checkpoint >= policy.every_events
        )
        by_time = policy.every_seconds is not None and (
            self.clock() - self._checkpointed_at >= policy.every_seconds
        )
        return self.checkpoints.due(self._records_since_checkpoint > 0 and (by_count or by_time))

    def _commit(self) -> None:
        try:
            self.source.commit(self.positions)
        except SourceUnavailable as error:
            log.warning("commit postponed: %s", error)

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Before a rebalance takes partitions away: learn what we hold, persist, commit.

        Positions stay: they describe what the model state has applied. An error here
        comes back out of `source.poll` (and `step`): the records stay buffered and
        uncommitted, to be read again after a restart.
        """
        self._apply_buffer()
        if self.checkpoints is not None and self._records_since_checkpoint:
            self.checkpoint()

    def _apply_buffer(self) -> None:
        """Learn the buffered records; they leave the buffer only once applied.

        Feature records are taken in before the batch's views (which may use them),
        tombstones after them (a user forgotten stays forgotten)."""
        records = self._buffer
        if not records:
            return
        entities: dict[str | None, EntityKind] = {
            self.users_topic: "user",
            self.items_topic: "item",
        }
        for record in records:
            kind = entities.get(record.topic)
            if kind is not None and record.value is not None:
                self._apply_feature_record(record, kind)
        views = [r for r in records if r.topic not in entities]
        events, arrivals = self._decode(views)
        if events:
            learned = self.learner.learn(events, self.publisher.served, arrivals)
            self.metrics.events.labels("learned").inc(len(events))
            self.metrics.train_batch_seconds.observe(learned.learn_seconds)
            if learned.loss == learned.loss:  # not NaN
                self._observe_loss(learned.loss)
            self._observe_publish(self.publisher.add(learned))
        for record in records:
            kind = entities.get(record.topic)
            if kind is not None and record.value is None:
                self._apply_tombstone(record, kind)
        skipped = self.learner.model.skipped_events
        if skipped > self._skipped_seen:
            self.metrics.skipped_events.labels("non_finite").inc(skipped - self._skipped_seen)
            self._skipped_seen = skipped
        self._buffer = []
        for record in records:
            key = (record.topic, record.partition)
            self.positions[key] = record.offset + 1
            self.applied[key] = self.applied.get(key, 0) + 1
        self._records_since_checkpoint += len(records)

    def _apply_feature_record(self, record: Record, kind: EntityKind) -> None:
        """A user's or item's features: kept by the learner (every worker of a host
        keeps all of them), bad ones dead-lettered."""
        decoded = decode_features(record.value, kind, record.key)
        if isinstance(decoded, InvalidRecord):
            self.source.dead_letter(record, decoded.reason, decoded.detail)
            self.metrics.dead_letters.labels(decoded.reason).inc()
            self.metrics.events.labels("invalid").inc()
            return
        self.metrics.events.labels(f"{kind}_features").inc()
        self._entity_changed(kind, self.learner.learn_features(decoded))

    def _apply_tombstone(self, record: Record, kind: EntityKind) -> None:
        """A tombstone forgets the features of the user or item keyed by it, and a user
        (by the worker that holds them) with everything learned about them."""
        if record.key is None:
            self.source.dead_letter(record, "missing_key", f"tombstone without a {kind} key")
            self.metrics.dead_letters.labels("missing_key").inc()
            return
        try:
            raw = record.key.decode("utf-8")
        except UnicodeDecodeError as error:
            self.source.dead_letter(record, "not_utf8", str(error))
            self.metrics.dead_letters.labels("not_utf8").inc()
            return
        row = self.learner.forget_features(kind, raw)
        if kind == "item":
            self._entity_changed(kind, row)
            self.metrics.events.labels("forgotten").inc()
        elif self.source.owns(record.key):  # else another worker of this host holds them
            self.publisher.forget_user(raw, self.learner.forget_user(raw))
            self.metrics.events.labels("forgotten").inc()

    def _entity_changed(self, kind: EntityKind, row: int | None) -> None:
        """An item whose features moved its vector is published again. A user's list is
        not: one published before their first view would stay as it was until then
        (frontends serve the popular list meanwhile); their first list uses them."""
        if kind == "item" and row is not None:
            self.publisher.item_changed(row)

    def _decode(self, records: list[Record]) -> tuple[list[ViewEvent], list[float]]:
        events: list[ViewEvent] = []
        arrivals: list[float] = []
        for record in records:
            decoded = decode_view(record.value, record.key, record.timestamp)
            if isinstance(decoded, InvalidRecord):
                self.source.dead_letter(record, decoded.reason, decoded.detail)
                self.metrics.dead_letters.labels(decoded.reason).inc()
                self.metrics.events.labels("invalid").inc()
            else:
                events.append(decoded)
                arrivals.append(record.timestamp)
        return events, arrivals

    def _observe_contact(self, polled: int) -> None:
        """Polls are healthy while the log answers them: an empty poll may come from an
        idle log or an unreachable one, and only the source can tell which."""
        contact = self.source.contact()
        if contact.silent_s <= self.health.policy.max_poll_age_s:
            self.health.mark("poll", True, f"{polled} records")
            return
        detail = f"no answer from the log for {contact.silent_s:.0f} s"
        if contact.problem:
            detail += f"; {contact.problem}"
        self.health.mark("poll", False, detail)

    def _observe_loss(self, loss: float) -> None:
        previous = self.smoothed_loss
        self.smoothed_loss = (
            loss if previous is None else (previous + LOSS_SMOOTHING * (loss - previous))
        )
        self.metrics.loss.labels(self.learner.model.name).set(self.smoothed_loss)

    def _observe_publish(self, result: PublishResult | None) -> None:
        self.health.pending(self.publisher.pending)
        if result is None:
            return
        self.health.mark("publish", result.ok, "" if result.ok else result.error or "failed")
        if not result.ok:  # retried with backoff, so logged at most every few seconds
            log.warning("publish failed: %s", result.error)
            self.metrics.redis_errors.inc()
            return
        self.metrics.publish_seconds.observe(result.seconds)
        for seconds in result.freshness.tolist():
            self.metrics.freshness_seconds.observe(seconds)

    def _observe_state(self) -> None:
        metrics, learner = self.metrics, self.learner
        model = learner.model.name
        metrics.records_since_checkpoint.set(self._records_since_checkpoint)
        for ranker, quality in (
            ("model", learner.quality),
            ("popularity", learner.popularity_quality),
        ):
            k = str(quality.k)
            metrics.online_hit_rate.labels(model, ranker, k, "all").set(quality.hit_rate)
            metrics.online_hit_rate.labels(model, ranker, k, "recent").set(quality.recent_hit_rate)
            metrics.online_ndcg.labels(model, ranker, k, "all").set(quality.ndcg)
            metrics.online_ndcg.labels(model, ranker, k, "recent").set(quality.recent_ndcg)
        metrics.rating_rmse.labels(model).set(learner.rating_quality.rmse)
        metrics.rating_mae.labels(model).set(learner.rating_quality.mae)
        for name, size in learner.model.table_sizes().items():
            metrics.embedding_rows.labels(name).set(size.rows)
            metrics.embedding_capacity.labels(name).set(size.capacity)
        lags = self.source.lag()
        for topic, partition in self._lagging - lags.keys():  # read by another member now
            metrics.consumer_lag.remove(topic, str(partition))
        for (topic, partition), lag in lags.items():
            metrics.consumer_lag.labels(topic, str(partition)).set(lag)
        self._lagging = set(lags)


def process_state(
    learner: OnlineLearner, publisher: Publisher
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """A process's state as a checkpoint holds it: its learner's and its publisher's parts."""
    learner_tensors, learner_entries = learner.state()
    publisher_tensors, publisher_entries = publisher.state()
    return {**learner_tensors, **publisher_tensors}, {**learner_entries, **publisher_entries}


def load_process_state(
    learner: OnlineLearner,
    publisher: Publisher,
    tensors: dict[str, Tensor],
    entries: dict[str, Any],
    shared: bool = True,
) -> None:
    """Restore what `process_state` gave: the learner first, then its publisher."""
    learner.load_state(tensors, entries, shared)
    publisher.load_state(tensors, entries, shared)


def _partition_list(offsets: dict[TopicPartition, int]) -> list[list[str | int]]:
    return [[topic, partition, offset] for (topic, partition), offset in sorted(offsets.items())]


def _partition_map(rows: Offsets) -> dict[TopicPartition, int]:
    return {(topic, partition): offset for topic, partition, offset in rows}
