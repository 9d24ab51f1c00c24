"""`recstream consume`: the learner as a service against Kafka and Redis."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from consumers.health import Health, HealthPolicy
from consumers.http import serve
from consumers.ingest.kafka_source import KafkaEventSource
from consumers.metrics import LearnerMetrics
from consumers.pipeline import OnlineRecommender
from consumers.service import CheckpointPolicy, LearnerService
from consumers.settings import ConsumeSettings
from consumers.sinks.redis import RedisStore
from streamer.settings import kafka_client_options

log = logging.getLogger("recstream.consume")


def run_consume(settings: ConsumeSettings, stop: threading.Event | None = None) -> None:
    """Consume until SIGINT/SIGTERM (or `stop`), then finish the batch, publish, commit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    settings.pin_threads()
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry)
    health = Health(
        HealthPolicy(
            max_checkpoint_age_s=None
            if settings.checkpoint_dir is None or settings.checkpoint_every_seconds is None
            else 3 * settings.checkpoint_every_seconds + 60
        )
    )
    server = serve(settings.metrics_addr, settings.metrics_port, registry, health)
    topics = [settings.topic] + ([settings.users_topic] if settings.users_topic else [])
    source = KafkaEventSource(
        settings.bootstrap,
        topics,
        settings.group,
        settings.auto_offset_reset,
        kafka_client_options(settings.kafka_options, settings.kafka_password),
    )
    store = RedisStore.from_url(
        settings.redis, settings.prefix, settings.redis_options, settings.redis_password
    )
    checkpoints = (
        None
        if settings.checkpoint_dir is None
        else CheckpointPolicy(
            Path(settings.checkpoint_dir),
            settings.checkpoint_every_events,
            settings.checkpoint_every_seconds,
            settings.checkpoint_keep,
        )
    )
    service = LearnerService(
        source,
        OnlineRecommender(settings.model(), store, settings.model_name),
        metrics,
        batch_size=settings.batch_size,
        max_wait_s=settings.max_wait_s,
        checkpoints=checkpoints,
        users_topic=settings.users_topic,
        health=health,
    )
    log.info(
        "consuming %s as group %s; metrics and health on %s:%d",
        settings.topic,
        settings.group,
        settings.metrics_addr,
        server.server_port,
    )
    try:
        service.run(stop)
    finally:
        source.close()
        store.close()
        server.shutdown()
        log.info("stopped after %d events", service.recommender.events)
