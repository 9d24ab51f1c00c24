"""`/health` says whether the work works, not just whether the process is alive."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from consumers.health import Health, HealthPolicy
from consumers.http import serve
from consumers.metrics import LearnerMetrics


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_healthy_while_starting_then_stale_polls_turn_it_unhealthy() -> None:
    clock = Clock()
    health = Health(HealthPolicy(max_poll_age_s=30), clock)
    assert health.report()[0]
    clock.now += 31
    healthy, body = health.report()
    assert not healthy and body["checks"]["poll"]["detail"] == "never"
    health.mark("poll", True)
    assert health.report()[0]
    clock.now += 31
    assert not health.report()[0]


def test_a_failed_publish_or_changes_waiting_too_long_are_unhealthy() -> None:
    clock = Clock()
    health = Health(HealthPolicy(max_publish_delay_s=60), clock)
    health.mark("poll", True)
    health.mark("publish", False, "store unavailable")
    assert health.report()[1]["checks"]["publish"] == {
        "ok": False,
        "age_s": 0.0,
        "detail": "store unavailable",
    }
    health.mark("publish", True)
    health.pending(True)
    clock.now += 30
    health.mark("poll", True)
    assert health.report()[0]
    clock.now += 31
    health.mark("poll", True)
    assert not health.report()[0]
    health.pending(False)
    assert health.report()[0]


def test_checkpoints_must_succeed_and_stay_recent() -> None:
    clock = Clock()
    health = Health(HealthPolicy(max_checkpoint_age_s=100), clock)
    health.mark("poll", True)
    health.mark("checkpoint", False, "disk full")
    assert not health.report()[0]
    health.mark("checkpoint", True)
    assert health.report()[0]
    clock.now += 101
    health.mark("poll", True)
    assert health.report()[1]["checks"]["checkpoint"]["ok"] is False


def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture
def endpoint() -> tuple[str, Health]:
    registry = CollectorRegistry()
    LearnerMetrics(registry).events.labels("learned").inc(3)
    clock = Clock()
    health = Health(HealthPolicy(max_poll_age_s=5), clock)
    server = serve("127.0.0.1", 0, registry, health)
    return f"http://127.0.0.1:{server.server_port}", health


def test_the_endpoint_serves_metrics_and_health(endpoint: tuple[str, Health]) -> None:
    url, health = endpoint
    status, body = fetch(url + "/metrics")
    assert status == 200 and b'recstream_events_total{outcome="learned"} 3.0' in body
    status, body = fetch(url + "/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    health.mark("publish", False, "store unavailable")
    status, body = fetch(url + "/health")
    assert status == 503
    assert json.loads(body)["checks"]["publish"]["detail"] == "store unavailable"
