"""`recstream produce`: replay a synthetic or MovieLens stream into Kafka."""

from __future__ import annotations

import sys

from streamer.producer import ViewProducer
from streamer.replay import replay
from streamer.settings import ProduceSettings
from streamer.sources import open_source


def run_produce(settings: ProduceSettings) -> int:
    """Publish the source (paced to `rate`, at most `events`); returns the count sent."""
    with ViewProducer(settings.bootstrap, topic=settings.topic) as producer:
        sent = replay(
            open_source(settings.source),
            producer.send,
            rate=settings.rate,
            limit=settings.events,
            progress=settings.progress,
        )
        producer.flush()
    print(f"recstream produce: {sent:,} events to {settings.topic}", file=sys.stderr)
    return sent
