"""The service loop under faults, without processes: a dead-letter topic that cannot take
records, batches that turn non-finite, a store that comes back empty."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from consumers.consume import missing_topic_is_a_warning
from consumers.durability.host import latest_checkpoint
from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.ingest.base import Contact, Record, SourceUnavailable
from consumers.ingest.kafka_source import KafkaEventSource
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.metrics import LearnerMetrics
from consumers.model.config import ModelConfig
from consumers.model.mf import MatrixFactorization
from consumers.service import ConsumeService
from consumers.sinks.memory import MemoryStore
from consumers.sinks.schema import Publication, decode_vector, string_writes
from streamer.events import (
    DEAD_LETTER_SUFFIX,
    REASON_HEADER,
    VIEWS_TOPIC,
    ViewEvent,
    encode_key,
    encode_view,
)
from tests.learners import online, wait_for

DLQ = VIEWS_TOPIC + DEAD_LETTER_SUFFIX


class DeadLetterOutage(MemoryEventSource):
    """Dead letters are queued and delivered before any commit, as by KafkaEventSource;
    while `down`, delivering them fails."""

    def __init__(self, log: MemoryEventLog) -> None:
        super().__init__(log, VIEWS_TOPIC, "learners")
        self.down = False
        self.queued: list[tuple[Record, str, str]] = []

    def dead_letter(self, record: Record, reason: str, detail: str) -> None:
        self.queued.append((record, reason, detail))

    def flush_dead_letters(self) -> None:
        if self.down and self.queued:
            raise SourceUnavailable("the dead-letter topic is unavailable")
        for record, reason, detail in self.queued:
            super().dead_letter(record, reason, detail)
        self.queued.clear()

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        self.flush_dead_letters()
        super().commit(offsets)


def service(
    source: MemoryEventSource, directory: Path | None, batch_size: int = 100
) -> ConsumeService:
    return ConsumeService(
        source,
        *online(ModelConfig(dim=8, seed=1), MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=batch_size,
        max_wait_s=1e9,
        checkpoints=None
        if directory is None
        else LocalCheckpoints(CheckpointPolicy(directory, every_events=100, every_seconds=None)),
    )


def stream_with_one_bad_record(log: MemoryEventLog) -> int:
    """300 views with a bad record at offset 150 (one partition); returns its offset."""
    for i in range(300):
        if i == 150:
            log.append(VIEWS_TOPIC, b"u1", b"not json")
        log.send(ViewEvent(f"u{i % 17}", f"i{i % 23}", 1.0), VIEWS_TOPIC)
    return 150


def drain(learner: ConsumeService) -> None:
    while learner.step():
        pass


def committed(log: MemoryEventLog) -> int | None:
    return log.committed.get(("learners", VIEWS_TOPIC, 0))


def test_dead_letter_topic_down_nothing_is_checkpointed_or_committed_past_the_bad_record(
    tmp_path: Path,
) -> None:
    log = MemoryEventLog(partitions=1)
    stream_with_one_bad_record(log)
    source = DeadLetterOutage(log)
    source.down = True
    learner = service(source, tmp_path)
    drain(learner)  # 301 records: 3 batches, checkpoints due after each
    assert learner.learner.events == 299  # learning goes on (one view still buffered)
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None and checkpoint.manifest.applied == ((VIEWS_TOPIC, 0, 100),)
    assert committed(log) == 100  # before the bad record, never past it
    assert not log.partitions_of(DLQ)[0]

    # A crash now: the dead letter dies with the process, but its offset was never
    # committed, so the restarted learner reads the bad record again.
    source = DeadLetterOutage(log)
    restarted = service(source, tmp_path)
    assert restarted.restore()
    drain(restarted)
    restarted.shutdown()
    letters = log.partitions_of(DLQ)[0]
    assert [letter.value for letter in letters] == [b"not json"]
    assert log.headers[(DLQ, 0, 0)][REASON_HEADER] == "not_json"
    assert committed(log) == 301
    assert restarted.learner.events == 300


def test_dead_letters_are_delivered_and_committed_once_the_topic_is_back(tmp_path: Path) -> None:
    log = MemoryEventLog(partitions=1)
    stream_with_one_bad_record(log)
    source = DeadLetterOutage(log)
    source.down = True
    learner = service(source, tmp_path)
    drain(learner)
    assert not learner.checkpoint()  # postponed, not lost
    source.down = False
    assert learner.checkpoint()
    assert [letter.value for letter in log.partitions_of(DLQ)[0]] == [b"not json"]
    assert committed(log) == 300  # past the bad record now (one view is still buffered)


def test_without_checkpoints_nothing_is_committed_so_a_restart_learns_it_all_again() -> None:
    """The model dies with the process: so do its offsets, and the log is read again."""
    log = MemoryEventLog(partitions=1)
    stream_with_one_bad_record(log)
    for _ in range(2):
        learner = service(MemoryEventSource(log, VIEWS_TOPIC, "learners"), None)
        drain(learner)
        learner.shutdown()
        assert learner.learner.events == 300
        assert committed(log) is None
    assert len(log.partitions_of(DLQ)[0]) == 2  # the bad record, dead-lettered by each run


class _FailedSend:
    def succeeded(self) -> bool:
        return False


class UnreachableProducer:
    """A dead-letter producer whose topic cannot be reached."""

    def send(self, *args: Any, **kwargs: Any) -> _FailedSend:
        return _FailedSend()

    def flush(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("dead-letter topic unreachable")

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""


class MetadataTimeoutProducer(UnreachableProducer):
    """A dead-letter producer that cannot even get the topic's metadata (send blocks, then
    raises, as kafka-python's does after `max_block_ms` with the broker away)."""

    def send(self, *args: Any, **kwargs: Any) -> _FailedSend:
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")


@pytest.mark.parametrize("unreachable", [UnreachableProducer, MetadataTimeoutProducer])
def test_kafka_source_keeps_undelivered_dead_letters_and_refuses_to_commit(
    kafka_bootstrap: str,
    kafka_topic: str,
    kafka_admin: KafkaAdminClient,
    unreachable: type[UnreachableProducer],
) -> None:
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    producer.send(kafka_topic, key=b"u1", value=b"not json", partition=0).get(timeout=30)
    producer.close()
    group = f"{kafka_topic}.learners"
    source = KafkaEventSource(kafka_bootstrap, kafka_topic, group)
    try:
        polled: list[Record] = []
        wait_for(lambda: bool(polled.extend(source.poll(10, 0.5)) or polled), 60, "the record")
        real = source.producer
        source.producer = unreachable()
        source.dead_letter(polled[0], "not_json", "test")
        offsets = {(kafka_topic, 0): 1}
        with pytest.raises(SourceUnavailable):
            source.commit(offsets)
        with pytest.raises(SourceUnavailable):
            source.commit(offsets)  # re-sent and failed again: still not committed
        assert kafka_admin.list_group_offsets(group)[group] == {}
        source.producer = real
        source.commit(offsets)
        found = kafka_admin.list_group_offsets(group)[group]
        assert found[TopicPartition(kafka_topic, 0)].offset == 1
    finally:
        source.close()
    dead = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=3000)
    dead.assign([TopicPartition(f"{kafka_topic}{DEAD_LETTER_SUFFIX}", 0)])
    dead.seek_to_beginning()
    letters = [(m.value, dict(m.headers)[REASON_HEADER]) for m in dead]
    dead.close()
    assert letters == [(b"not json", b"not_json")]


@pytest.mark.parametrize("weight", [1e308, 3e38])  # over float32's range; in range, overflowing
def test_a_view_that_would_go_non_finite_is_skipped_counted_and_the_rest_learned(
    weight: float,
) -> None:
    log = MemoryEventLog(partitions=1)
    learner = service(MemoryEventSource(log, VIEWS_TOPIC, "learners"), None, batch_size=10)
    for i in range(20):
        log.send(ViewEvent(f"u{i % 4}", f"i{i % 6}", 1.0), VIEWS_TOPIC)
    drain(learner)
    model = learner.learner.model
    assert isinstance(model, MatrixFactorization)
    fine = [ViewEvent(f"u{i % 4}", f"i{i % 6 + 1}", 1.0) for i in range(9)]
    for event in [*fine, ViewEvent("u0", "i9", 1.0, weight=weight)]:
        log.send(event, VIEWS_TOPIC)
    drain(learner)

    registry = learner.metrics.registry
    labels = {"reason": "non_finite"}
    assert registry.get_sample_value("recstream_skipped_events_total", labels) == 1
    assert model.skipped_events == 1
    for table in (model.user_table, model.item_table):
        assert torch.isfinite(table.weight).all() and torch.isfinite(table.accumulator).all()
    u0, i9 = model.users.row("u0"), model.items.row("i9")
    assert u0 is not None and i9 is not None
    assert not model.history.watched(np.array([u0]), np.array([i9])).any()  # no trace of it
    assert all(model.history.watched(*_rows(model, fine)))  # the rest were learned
    assert learner.learner.popularity.scores([i9]) == [0.0]
    store = learner.publisher.store
    assert isinstance(store, MemoryStore)
    assert store.get_hash("rs:meta")["events"] == "29"
    popular = json.loads(store.get("rs:popular") or b"null")
    assert all(isinstance(s, float) and math.isfinite(s) for s in popular["scores"])
    for user in ("u0", "u1", "u2", "u3"):
        assert np.isfinite(decode_vector(store.get(f"rs:user:{user}:vec") or b"")).all()

    for i in range(10):  # and learning goes on
        log.send(ViewEvent(f"u{i % 4}", f"i{i % 6}", 1.0), VIEWS_TOPIC)
    drain(learner)
    assert model.skipped_events == 1 and learner.smoothed_loss is not None
    assert math.isfinite(learner.smoothed_loss)


def _rows(model: MatrixFactorization, events: list[ViewEvent]) -> tuple[np.ndarray, np.ndarray]:
    users = np.array([model.users.row(event.user) for event in events], dtype=np.int64)
    items = np.array([model.items.row(event.item) for event in events], dtype=np.int64)
    return users, items


class WipedStore(MemoryStore):
    """Fails while `down`; `restart()` brings it back empty (Redis without persistence)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.published_users: list[int] = []

    def publish(self, publication: Publication) -> None:
        from consumers.sinks.base import StoreUnavailable

        if self.down:
            raise StoreUnavailable("down for the test")
        tops = string_writes(publication, self.keys)
        self.published_users.append(sum(key.endswith(":top") for key in tops if ":user:" in key))
        super().publish(publication)

    def restart(self, empty: bool) -> None:
        if empty:
            self.strings.clear()
            self.hashes.clear()
        self.down = False


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("empty", [True, False])
def test_after_an_outage_a_store_that_lost_its_keys_gets_everything_again(empty: bool) -> None:
    store, clock = WipedStore(), Clock()
    pair = online(ModelConfig(dim=8, top_n=5), store, clock=clock)
    users = [f"u{n}" for n in range(30)]
    pair.process([ViewEvent(user, n % 7, 1.0) for n, user in enumerate(users)])
    store.down = True
    assert pair.process([ViewEvent("u0", 3, 1.0)])[1] is not None
    store.restart(empty)
    clock.now += 60  # past the backoff
    pair.process([ViewEvent("u1", 4, 1.0)])
    assert store.published_users[-1] == 2  # the pending changes first
    while pair.publisher.pending:
        pair.publisher.flush()
    if empty:
        assert store.published_users[-1] == 30  # then everyone: the store had lost them
    else:
        assert store.published_users[-1] == 2  # nothing lost, nothing more to send
    for user in users:
        assert store.get(f"rs:user:{user}:top") is not None
        assert store.get(f"rs:user:{user}:vec") is not None
    assert all(store.get(f"rs:item:{item}:vec") for item in range(7))
    assert store.get("rs:popular") is not None


# -- faults that must show in /health, and records that must not be lost ------------------


class FadingLog(MemoryEventSource):
    """A log whose answers stop while `silence` says so (as KafkaEventSource measures it)."""

    def __init__(self, log: MemoryEventLog) -> None:
        super().__init__(log, VIEWS_TOPIC, "learners")
        self.silence = Contact(0.0)

    def contact(self) -> Contact:
        return self.silence


def test_a_log_that_stops_answering_turns_health_red_with_the_reason_then_green() -> None:
    source = FadingLog(MemoryEventLog(partitions=1))
    learner = service(source, None)
    window = learner.health.policy.max_poll_age_s
    problem = "Kafka at 127.0.0.1:9: end offsets: KafkaTimeoutError()"
    for silent_s, healthy in ((0.0, True), (window, True), (window + 1, False), (0.0, True)):
        source.silence = Contact(silent_s, problem if silent_s else "")
        assert learner.step() == 0  # an empty poll, whatever the log's state
        assert learner.health.report()[0] is healthy, silent_s
    source.silence = Contact(window + 1, problem)
    learner.step()
    poll = learner.health.report()[1]["checks"]["poll"]
    assert poll["detail"] == f"no answer from the log for {window + 1:.0f} s; {problem}"


def test_a_failure_applying_a_batch_keeps_its_records_and_a_restart_applies_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = MemoryEventLog(partitions=2)
    for i in range(250):
        log.send(ViewEvent(f"u{i % 13}", f"i{i % 17}", 1.0), VIEWS_TOPIC)
    learner = service(MemoryEventSource(log, VIEWS_TOPIC, "learners"), tmp_path)
    learner.step()  # the first batch of 100, checkpointed and committed
    monkeypatch.setattr(learner.learner, "learn", _fail)
    with pytest.raises(RuntimeError, match="injected"):
        learner.step()
    assert len(learner._buffer) == 100  # kept, and not committed

    restarted = service(MemoryEventSource(log, VIEWS_TOPIC, "learners"), tmp_path)
    assert restarted.restore()
    drain(restarted)
    restarted.shutdown()
    assert restarted.learner.events == 250
    assert applied(tmp_path) == 250


def _fail(*args: object, **kwargs: object) -> None:
    raise RuntimeError("injected: learning failed")


def applied(directory: Path) -> int:
    """Records applied, as the newest checkpoint in `directory` says."""
    checkpoint = latest_checkpoint(directory)
    assert checkpoint is not None
    return sum(int(n) for _, _, n in checkpoint.manifest.applied)


def step_until_polled(learner: ConsumeService, records: int) -> None:
    deadline = time.monotonic() + 60
    while records > 0:
        assert time.monotonic() < deadline, f"{records} records left unpolled after 60 s"
        records -= learner.step()


def kafka_learner(bootstrap: str, topic: str, directory: Path, batch_size: int) -> ConsumeService:
    return ConsumeService(
        KafkaEventSource(bootstrap, topic, f"{topic}.learners"),
        *online(ModelConfig(dim=8, seed=1), MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=batch_size,
        max_wait_s=1e9,
        checkpoints=LocalCheckpoints(CheckpointPolicy(directory, None, None)),
    )


def produce(bootstrap: str, topic: str, first: int, count: int) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(first, first + count):
        event = ViewEvent(f"u{i % 7}", f"i{i % 11}", 1.0)
        producer.send(topic, key=encode_key(event.user), value=encode_view(event))
    producer.flush()
    producer.close()


def test_a_failing_revoke_handler_is_raised_from_poll_and_its_records_are_read_again(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second member joins while the first holds 40 records unlearned; learning them in
    the revoke handler fails. The error comes out of `step` (not swallowed by the poll
    with the records), nothing is committed, and a restart learns every event once."""
    produce(kafka_bootstrap, kafka_topic, 0, 40)
    first = kafka_learner(kafka_bootstrap, kafka_topic, tmp_path, batch_size=1000)
    step_until_polled(first, 40)
    monkeypatch.setattr(first.learner, "learn", _fail)
    joined = threading.Event()
    second = KafkaConsumer(
        bootstrap_servers=kafka_bootstrap, group_id=f"{kafka_topic}.learners",
        enable_auto_commit=False,
    )  # fmt: skip
    second.subscribe([kafka_topic])
    member = threading.Thread(target=lambda: [second.poll(200) for _ in iter(joined.is_set, True)])
    member.start()
    try:
        with pytest.raises(RuntimeError, match="injected"):
            wait_for(lambda: first.step() < 0, 30, "the revoke handler's error")
        assert len(first._buffer) == 40 and first.learner.events == 0
    finally:
        first.source.close()  # as if the process died: nothing more is committed
        joined.set()
        member.join()
        second.close()

    produce(kafka_bootstrap, kafka_topic, 40, 20)
    again = kafka_learner(kafka_bootstrap, kafka_topic, tmp_path, batch_size=1000)
    assert not again.restore()  # no checkpoint: nothing had been learned
    step_until_polled(again, 60)
    again.shutdown()
    again.source.close()
    assert again.learner.events == 60 and applied(tmp_path) == 60


def test_consumer_lag_counts_records_waiting_unread_then_zero(
    kafka_bootstrap: str, kafka_topic: str, tmp_path: Path
) -> None:
    produce(kafka_bootstrap, kafka_topic, 0, 40)
    learner = kafka_learner(kafka_bootstrap, kafka_topic, tmp_path, batch_size=5)
    registry = learner.metrics.registry

    def lags() -> dict[int, float]:
        return {
            p: registry.get_sample_value(
                "recstream_consumer_lag", {"topic": kafka_topic, "partition": str(p)}
            )
            or 0.0
            for p in range(4)
        }

    step_until_polled(learner, 5)
    assert learner.learner.events == 5
    assert sum(learner.source.lag().values()) == sum(lags().values()) == 35
    step_until_polled(learner, 35)
    learner.step()
    assert learner.source.lag() == {(kafka_topic, p): 0 for p in range(4)}
    assert lags() == {p: 0.0 for p in range(4)}
    learner.source.close()


class HandedOver(MemoryEventSource):
    """Partition 1 goes to another group member once `handed_over` is set."""

    handed_over = False

    def lag(self) -> dict[tuple[str, int], int]:
        lags = super().lag()
        return {key: lag for key, lag in lags.items() if key[1] != 1 or not self.handed_over}


def test_the_lag_of_a_partition_read_by_another_member_is_no_longer_reported() -> None:
    log = MemoryEventLog(partitions=2)
    for i in range(300):
        log.send(ViewEvent(f"u{i}", "i1", 1.0), VIEWS_TOPIC)
    source = HandedOver(log, VIEWS_TOPIC, "learners")
    learner = service(source, None)
    registry = learner.metrics.registry

    def lag(partition: int) -> float | None:
        labels = {"topic": VIEWS_TOPIC, "partition": str(partition)}
        return registry.get_sample_value("recstream_consumer_lag", labels)

    learner.step()  # 100 of 300 read
    assert (lag(1) or 0) > 0
    source.handed_over = True
    learner.step()
    assert lag(1) is None and (lag(0) or 0) > 0


def test_a_topic_not_there_yet_is_a_warning_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    cluster = logging.getLogger("kafka.cluster")
    cluster.addFilter(missing_topic_is_a_warning)
    try:
        with caplog.at_level(logging.INFO, "kafka.cluster"):
            cluster.error("Topic %s not found in cluster metadata", "recstream.users")
            cluster.error("something else")
    finally:
        cluster.removeFilter(missing_topic_is_a_warning)
    assert [r.levelname for r in caplog.records] == ["WARNING", "ERROR"]


@dataclass(frozen=True)
class ClosingCheckpoints(LocalCheckpoints):
    """A host's final epoch, as it reaches a worker inside `step`."""

    @property
    def closing(self) -> bool:
        return True


def test_the_last_checkpoint_covers_the_records_held_when_it_came(tmp_path: Path) -> None:
    """Seen: workers stopped under load learned their buffers after the host's final
    checkpoint, so it covered 84,732 of the 84,844 events they had learned."""
    log = MemoryEventLog(partitions=1)
    for user in range(50):
        log.send(ViewEvent(f"u{user}", user % 7, 1.0), VIEWS_TOPIC)
    learner = service(MemoryEventSource(log, VIEWS_TOPIC, "learners"), None)
    learner.checkpoints = ClosingCheckpoints(CheckpointPolicy(tmp_path))
    learner.step()  # 50 records held: fewer than a batch, and not old enough
    assert learner.checkpoint()
    restored = service(MemoryEventSource(log, VIEWS_TOPIC, "learners"), tmp_path)
    assert restored.restore() and restored.applied == {(VIEWS_TOPIC, 0): 50}
