"""`recstream produce`: replay a synthetic or MovieLens stream into Kafka."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, start_http_server

from streamer.events import ViewEvent
from streamer.metrics import ProducerMetrics
from streamer.producer import ViewProducer
from streamer.replay import replay
from streamer.settings import ProduceSettings, kafka_client_options

OBSERVE_EVERY = 1000


def run_produce(settings: ProduceSettings) -> int:
    """Publish the source (paced to `rate`, at most `events`); returns the count sent."""
    from streamer.sources import open_source

    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry)
    server, _ = start_http_server(settings.metrics_port, settings.metrics_addr, registry)
    try:
        with ViewProducer(
            settings.bootstrap,
            topic=settings.topic,
            **kafka_client_options(settings.kafka_options, settings.kafka_password),
        ) as producer:

            def send(event: ViewEvent) -> None:
                producer.send(event)
                if (producer.sent + producer.failed + producer.pending) % OBSERVE_EVERY == 0:
                    metrics.observe(producer.sent, producer.failed, producer.pending)

            handed = replay(
                open_source(settings.source),
                send,
                rate=settings.rate,
                limit=settings.events,
                progress=settings.progress,
            )
            try:
                producer.flush()
            finally:
                metrics.observe(producer.sent, producer.failed, producer.pending)
    finally:
        server.shutdown()
    print(f"recstream produce: {handed:,} events to {settings.topic}", file=sys.stderr)
    return handed
