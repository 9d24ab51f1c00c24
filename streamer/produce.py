"""`recstream produce`: replay a synthetic or MovieLens stream into Kafka."""

from __future__ import annotations

import sys

from prometheus_client import CollectorRegistry, start_http_server

from streamer.events import ViewEvent
from streamer.metrics import ProducerMetrics
from streamer.preflight import PreflightError, check_kafka
from streamer.producer import ViewProducer
from streamer.replay import replay
from streamer.settings import ProduceSettings, kafka_client_options

OBSERVE_EVERY = 1000


def run_produce(settings: ProduceSettings) -> int:
    """Publish the source (paced to `rate`, at most `events`); returns the count sent.
    Exits at once when Kafka refuses the credentials or the topic (`check_kafka`)."""
    from streamer.datasets import open_dataset, open_features

    options = kafka_client_options(settings.kafka_options, settings.kafka_password)
    try:
        check_kafka(
            settings.bootstrap,
            options,
            write=[settings.topic]
            + ([settings.items_topic, settings.users_topic] if settings.features else []),
            allow_plaintext_secrets=settings.allow_plaintext_secrets,
        )
    except PreflightError as error:  # one line on stderr, exit status 1
        raise SystemExit(f"recstream produce: {error}") from error
    registry = CollectorRegistry()
    metrics = ProducerMetrics(registry)
    server, _ = start_http_server(settings.metrics_port, settings.metrics_addr, registry)
    try:
        with ViewProducer(
            settings.bootstrap,
            topic=settings.topic,
            allow_plaintext_secrets=settings.allow_plaintext_secrets,
            **options,
        ) as producer:

            def send(event: ViewEvent) -> None:
                producer.send(event)
                if (producer.sent + producer.failed + producer.pending) % OBSERVE_EVERY == 0:
                    metrics.observe(producer.sent, producer.failed, producer.pending)

            described = 0
            if settings.features:
                topics = {"item": settings.items_topic, "user": settings.users_topic}
                for record in open_features(settings.source):
                    producer.send_features(record, topics[record.kind])
                    described += 1
            handed = replay(
                open_dataset(settings.source),
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
    print(
        f"recstream produce: {described:,} feature records to {settings.items_topic} and "
        f"{settings.users_topic}, {handed:,} events to {settings.topic}",
        file=sys.stderr,
    )
    return handed
