"""Shared fixtures: the real Kafka broker and Redis that ``bash ops/test`` starts.

ops/test exports RECSTREAM_TEST_BOOTSTRAP and RECSTREAM_TEST_REDIS. Without them the
integration tests are skipped (plain ``pytest``), except under CI, where they fail.
Every test that uses one of these fixtures is marked ``integration``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, settings

with warnings.catch_warnings():
    # kafka-python 3.0 reads its protocol schemas at import time with importlib.resources
    # calls that Python 3.11 deprecates (~200 warnings): import it once here, quietly.
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.admin import KafkaAdminClient

INTEGRATION_FIXTURES = {"kafka_bootstrap", "kafka_admin", "kafka_topic", "redis_url", "redis_db"}

# Redis db 0 is left alone; each test takes the next of 1..63 (ops/test starts 64 dbs).
_redis_dbs = itertools.cycle(range(1, 64))


# Two shared cores: generation speed and run time vary with load, so time-based checks
# would make property tests flaky without saying anything about the code.
settings.register_profile(
    "shared-cores", deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile("shared-cores")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "dataset: downloads a public dataset (MovieLens-100K from PyPI) into the cache"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(autouse=True)
def state_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> str:
    """Learners checkpoint under $XDG_STATE_HOME by default: a fresh one per test (the
    learner processes it starts inherit it), never the user's home."""
    home = str(tmp_path_factory.mktemp("state"))
    monkeypatch.setenv("XDG_STATE_HOME", home)
    monkeypatch.delenv("RECSTREAM_STATE_DIR", raising=False)
    return home


def _service_env(name: str) -> str:
    value = os.environ.get(name)
    if value:
        return value
    message = f"{name} is not set: run the tests with `bash ops/test`, which starts the services"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    """host:port of the test broker."""
    return _service_env("RECSTREAM_TEST_BOOTSTRAP")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """redis://host:port of the test Redis (no db number)."""
    return _service_env("RECSTREAM_TEST_REDIS")


@pytest.fixture(scope="session")
def kafka_admin(kafka_bootstrap: str) -> Iterator[KafkaAdminClient]:
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, client_id="recstream-tests")
    yield admin
    admin.close()


@pytest.fixture
def kafka_topic(request: pytest.FixtureRequest, kafka_admin: KafkaAdminClient) -> Iterator[str]:
    """A fresh topic (4 partitions) and its `<topic>.dlq` (1 partition), deleted afterwards."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", request.node.name)[:180]
    topic = f"test.{name}.{uuid.uuid4().hex[:8]}"
    topics = {
        topic: {"num_partitions": 4, "replication_factor": 1},
        f"{topic}.dlq": {"num_partitions": 1, "replication_factor": 1},
    }
    # wait_for_metadata: return only once every partition has a leader.
    kafka_admin.create_topics(topics, wait_for_metadata=True)
    yield topic
    # Best effort: the broker is thrown away after the run anyway.
    with contextlib.suppress(Exception):
        kafka_admin.delete_topics(list(topics), raise_errors=False)


@dataclass(frozen=True)
class RedisTarget:
    url: str  # redis://host:port/db
    db: int
    prefix: str  # unique key prefix for this test
    client: redis.Redis


def allocate_redis_db() -> int:
    """The next Redis db number of this run (1..63, round robin)."""
    return next(_redis_dbs)


@pytest.fixture
def redis_db(redis_url: str) -> Iterator[RedisTarget]:
    """A client on a db of its own (flushed before and after) and a unique key prefix."""
    db = allocate_redis_db()
    url = f"{redis_url.rstrip('/')}/{db}"
    client = redis.Redis.from_url(url)
    client.flushdb()
    yield RedisTarget(url=url, db=db, prefix=f"test:{uuid.uuid4().hex[:8]}:", client=client)
    client.flushdb()
    client.close()
