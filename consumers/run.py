"""`recstream consume`: the learner as a service against Kafka and Redis."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import CollectorRegistry, start_http_server

from consumers.ingest.kafka_source import KafkaEventSource
from consumers.metrics import LearnerMetrics
from consumers.pipeline import OnlineRecommender
from consumers.service import LearnerService
from consumers.settings import ConsumeSettings
from consumers.sinks.redis import RedisStore

log = logging.getLogger("recstream.consume")


def run_consume(settings: ConsumeSettings, stop: threading.Event | None = None) -> None:
    """Consume until SIGINT/SIGTERM (or `stop`), then finish the batch, publish, commit."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, lambda *_: stop.set())
    registry = CollectorRegistry()
    metrics = LearnerMetrics(registry)
    server, _ = start_http_server(settings.metrics_port, settings.metrics_addr, registry)
    source = KafkaEventSource(
        settings.bootstrap, settings.topic, settings.group, settings.auto_offset_reset
    )
    store = RedisStore.from_url(settings.redis, settings.prefix)
    service = LearnerService(
        source,
        OnlineRecommender(settings.model(), store, settings.model_name),
        metrics,
        batch_size=settings.batch_size,
        max_wait_s=settings.max_wait_s,
    )
    log.info(
        "consuming %s as group %s; metrics on %s:%d",
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
