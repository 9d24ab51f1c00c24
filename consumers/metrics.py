"""Every Prometheus metric of a learner process, declared once on an injected registry.

Names follow the README, Contracts: Metrics (prefix `recstream_`); no label ever carries a
user or item id.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from streamer.events import INVALID_REASONS

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)


class LearnerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        # recstream_process_resident_memory_bytes, cpu seconds, open fds, ...
        ProcessCollector(namespace="recstream", registry=registry)
        self.events = Counter(
            "recstream_events",
            "Records consumed, by outcome (learned, invalid).",
            ["outcome"],
            registry=registry,
        )
        self.dead_letters = Counter(
            "recstream_dead_letters",
            "Records sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        for reason in INVALID_REASONS:  # at 0 from the start: "none yet", not "no data"
            self.dead_letters.labels(reason)
        self.consumer_lag = Gauge(
            "recstream_consumer_lag",
            "Records behind the end of the partition.",
            ["topic", "partition"],
            registry=registry,
        )
        self.train_batch_seconds = Histogram(
            "recstream_train_batch_seconds",
            "Time to score and learn one micro-batch.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.publish_seconds = Histogram(
            "recstream_publish_seconds",
            "Time to compute top-N and write one micro-batch to the store.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.freshness_seconds = Histogram(
            "recstream_freshness_seconds",
            "Publish time minus the record's event time, per learned event.",
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.loss = Gauge(
            "recstream_loss", "Moving average of the training loss.", registry=registry
        )
        self.online_hit_rate = Gauge(
            "recstream_online_hit_rate",
            "Prequential HR@k: the next item was in the list we were serving.",
            ["ranker", "k", "window"],
            registry=registry,
        )
        self.online_ndcg = Gauge(
            "recstream_online_ndcg",
            "Prequential NDCG@k of the list we were serving.",
            ["ranker", "k", "window"],
            registry=registry,
        )
        self.rating_rmse = Gauge(
            "recstream_rating_rmse",
            "Prequential RMSE of predicted ratings (rating model; 0 before any rated view).",
            registry=registry,
        )
        self.rating_mae = Gauge(
            "recstream_rating_mae",
            "Prequential MAE of predicted ratings (rating model; 0 before any rated view).",
            registry=registry,
        )
        self.embedding_rows = Gauge(
            "recstream_embedding_rows", "Rows in use per table.", ["table"], registry=registry
        )
        self.embedding_capacity = Gauge(
            "recstream_embedding_capacity_rows",
            "Rows allocated per table.",
            ["table"],
            registry=registry,
        )
        self.checkpoint_seconds = Histogram(
            "recstream_checkpoint_seconds",
            "Time to write one checkpoint.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.last_checkpoint_timestamp = Gauge(
            "recstream_last_checkpoint_timestamp_seconds",
            "When the newest durable checkpoint was written.",
            registry=registry,
        )
        self.records_since_checkpoint = Gauge(
            "recstream_records_since_checkpoint",
            "Records applied that no durable checkpoint covers yet (a restart reads them again).",
            registry=registry,
        )
        self.checkpoint_enabled = Gauge(
            "recstream_checkpoint_enabled",
            "1 when this learner writes checkpoints, 0 when they are off.",
            registry=registry,
        )
        self.skipped_events = Counter(
            "recstream_skipped_events",
            "Views not learned, by reason (non_finite: the update would leave a loss or row "
            "non-finite).",
            ["reason"],
            registry=registry,
        )
        self.redis_errors = Counter(
            "recstream_redis_errors", "Failed writes to the store.", registry=registry
        )
