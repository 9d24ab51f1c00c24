"""Prometheus metrics of `recstream produce`, declared once on an injected registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, ProcessCollector


class ProducerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        ProcessCollector(namespace="recstream", registry=registry)
        self.produced = Counter(
            "recstream_produced",
            "View events handed to Kafka, by delivery outcome (sent, failed).",
            ["outcome"],
            registry=registry,
        )
        self.pending = Gauge(
            "recstream_produce_pending",
            "View events handed to the client and not yet acknowledged.",
            registry=registry,
        )
        self._seen = {"sent": 0, "failed": 0}

    def observe(self, sent: int, failed: int, pending: int) -> None:
        """Catch the counters up with the producer's running totals."""
        for outcome, total in (("sent", sent), ("failed", failed)):
            self.produced.labels(outcome).inc(total - self._seen[outcome])
            self._seen[outcome] = total
        self.pending.set(pending)
