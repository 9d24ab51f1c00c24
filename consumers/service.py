"""The learner's service loop: poll, decode, dead-letter, learn, publish, commit."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from consumers.ingest.base import EventSource, Record, next_offsets
from consumers.metrics import LearnerMetrics
from consumers.pipeline import OnlineRecommender, PublishResult
from streamer.events import InvalidRecord, ViewEvent, decode_view

LOSS_SMOOTHING = 0.05


@dataclass
class LearnerService:
    """Drives an `OnlineRecommender` from an `EventSource` in micro-batches."""

    source: EventSource
    recommender: OnlineRecommender
    metrics: LearnerMetrics
    batch_size: int = 512
    max_wait_s: float = 0.1
    smoothed_loss: float | None = field(default=None, init=False)

    def step(self) -> int:
        """Handle one micro-batch; returns the number of records consumed."""
        records = self.source.poll(self.batch_size, self.max_wait_s)
        events, arrivals = self._decode(records)
        if events:
            result = self.recommender.process(events, arrivals)
            self.metrics.events.labels("learned").inc(len(events))
            self.metrics.train_batch_seconds.observe(result.learn_seconds)
            if result.loss == result.loss:  # not NaN
                self._observe_loss(result.loss)
            self._observe_publish(result.publish)
        elif self.recommender.pending:
            self._observe_publish(self.recommender.flush())
        if records:
            self.source.commit(next_offsets(records))
        self._observe_state()
        return len(records)

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set, then publish what is pending and commit."""
        while not stop.is_set():
            self.step()
        self._observe_publish(self.recommender.flush())

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

    def _observe_loss(self, loss: float) -> None:
        previous = self.smoothed_loss
        self.smoothed_loss = (
            loss if previous is None else (previous + LOSS_SMOOTHING * (loss - previous))
        )
        self.metrics.loss.set(self.smoothed_loss)

    def _observe_publish(self, result: PublishResult | None) -> None:
        if result is None:
            return
        if not result.ok:
            self.metrics.redis_errors.inc()
            return
        self.metrics.publish_seconds.observe(result.seconds)
        for seconds in result.freshness.tolist():
            self.metrics.freshness_seconds.observe(seconds)

    def _observe_state(self) -> None:
        metrics, recommender = self.metrics, self.recommender
        for ranker, quality in (
            ("model", recommender.quality),
            ("popularity", recommender.popularity_quality),
        ):
            k = str(quality.k)
            metrics.online_hit_rate.labels(ranker, k, "all").set(quality.hit_rate)
            metrics.online_hit_rate.labels(ranker, k, "recent").set(quality.recent_hit_rate)
            metrics.online_ndcg.labels(ranker, k, "all").set(quality.ndcg)
            metrics.online_ndcg.labels(ranker, k, "recent").set(quality.recent_ndcg)
        model = recommender.model
        for name, table in (("user", model.user_table), ("item", model.item_table)):
            metrics.embedding_rows.labels(name).set(table.rows)
            metrics.embedding_capacity.labels(name).set(table.capacity)
        for (topic, partition), lag in self.source.lag().items():
            metrics.consumer_lag.labels(topic, str(partition)).set(lag)
