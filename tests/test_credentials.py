"""Wrong credentials and settings fail fast, with one message naming the cause and the
setting; a secured deployment (Kafka SASL_SSL with SCRAM, rediss:// with an ACL user,
passwords from the environment) works and leaks no secret.

The secured broker and Redis are this module's own, started once per session on free
loopback ports (certificates made with openssl in a temp dir) and stopped by pid.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import ssl
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from kafka.admin import (
    ACL,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    KafkaAdminClient,
    ResourcePattern,
    ResourceType,
)
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.metrics import LearnerMetrics
from consumers.model.config import ModelConfig
from consumers.preflight import check_redis
from consumers.service import ConsumeService
from consumers.sinks.base import StoreUnavailable
from consumers.sinks.memory import MemoryStore
from consumers.sinks.redis import RedisStore
from consumers.sinks.schema import Publication
from streamer.events import DEAD_LETTER_SUFFIX, VIEWS_TOPIC, ViewEvent
from streamer.preflight import PreflightError, check_kafka, check_kafka_options
from streamer.producer import ViewProducer
from tests.learners import ROOT, Learner, meta_events, online, wait_for

KAFKA_PASSWORD = "kafka-Secret-7f3a"
REDIS_PASSWORD = "redis-Secret-91c2"
WRONG_PASSWORD = "wrong-Secret-0b5e"
SECRETS = (KAFKA_PASSWORD, REDIS_PASSWORD, WRONG_PASSWORD)


def _script(*args: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        ["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip()


@dataclass(frozen=True)
class Secured:
    admin_bootstrap: str  # PLAINTEXT, a super user: topics and ACLs
    bootstrap: str  # SASL_SSL, SCRAM-SHA-512
    ca: str
    redis_port: int  # plain, the default user (the test's own view)
    redis_tls_port: int

    def kafka_options(self, user: str = "learner") -> dict[str, Any]:
        return {
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": user,
            "ssl_cafile": self.ca,
        }

    @property
    def rediss(self) -> str:
        return f"rediss://learner@127.0.0.1:{self.redis_tls_port}/0"


def prefixed(kind: ResourceType) -> ResourcePattern:
    return ResourcePattern(kind, "creds", ACLResourcePatternType.PREFIXED)


@pytest.fixture(scope="session")
def secured(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    """A broker with a SASL_SSL listener and ACLs (users learner and reader), and a Redis
    with a TLS port and ACL users learner (keys creds:*) and outsider (other:*)."""
    del kafka_bootstrap  # only for the skip and the integration mark without services
    run = tmp_path_factory.mktemp("secured")
    ca, key = run / "cert.pem", run / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-keyout", key, "-out", ca, "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        ["openssl", "pkcs12", "-export", "-in", ca, "-inkey", key, "-out", run / "broker.p12",
         "-passout", "pass:keystore-pass"],
        check=True, capture_output=True,
    )  # fmt: skip
    kafka, controller, sasl, plain, tls = map(int, _script("ops/ports.sh", "5").split())
    env = dict(
        os.environ,
        KAFKA_SASL_PORT=str(sasl),
        KAFKA_SSL_KEYSTORE=str(run / "broker.p12"),
        KAFKA_SSL_KEYSTORE_PASSWORD="keystore-pass",
        KAFKA_SCRAM_USERS=f"learner={KAFKA_PASSWORD} reader={KAFKA_PASSWORD}",
        KAFKA_ACLS="1",
    )
    try:
        admin_bootstrap = _script(
            "ops/kafka/start.sh", str(kafka), str(run / "kafka"), str(controller), env=env
        )
        _script(
            "ops/redis/start.sh", str(plain), str(run / "redis"),
            "--tls-port", str(tls), "--tls-cert-file", str(ca), "--tls-key-file", str(key),
            "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
            "--user", "learner", "on", f">{REDIS_PASSWORD}", "~creds:*", "+@all",
            "--user", "outsider", "on", f">{REDIS_PASSWORD}", "~other:*", "+@all",
        )  # fmt: skip
        admin = KafkaAdminClient(bootstrap_servers=admin_bootstrap)
        allow = [
            ("learner", ACLOperation.ALL, ResourceType.TOPIC),
            ("learner", ACLOperation.ALL, ResourceType.GROUP),
            ("reader", ACLOperation.READ, ResourceType.TOPIC),
            ("reader", ACLOperation.READ, ResourceType.GROUP),
        ]
        admin.create_acls(
            [
                ACL(f"User:{user}", "*", operation, ACLPermissionType.ALLOW, prefixed(kind))
                for user, operation, kind in allow
            ]
        )
        admin.close()
        yield Secured(admin_bootstrap, f"127.0.0.1:{sasl}", str(ca), plain, tls)
    finally:
        _script("ops/kafka/stop.sh", str(run / "kafka"))
        _script("ops/redis/stop.sh", str(run / "redis"))


@pytest.fixture
def creds_topic(secured: Secured) -> Iterator[str]:
    topic = f"creds.{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=secured.admin_bootstrap)
    admin.create_topics(
        {
            topic: {"num_partitions": 2, "replication_factor": 1},
            topic + DEAD_LETTER_SUFFIX: {"num_partitions": 1, "replication_factor": 1},
        },
        wait_for_metadata=True,
    )
    yield topic
    admin.close()


def consume_args(secured: Secured, topic: str, *extra: str) -> list[str]:
    return [
        "--bootstrap", secured.bootstrap, "--topic", topic, "--users-topic", "",
        "--items-topic", "",
        "--group", f"creds-{topic}", "--kafka-options", json.dumps(secured.kafka_options()),
        "--redis", secured.rediss, "--redis-options", json.dumps({"ssl_ca_certs": secured.ca}),
        "--prefix", f"creds:{topic}:", "--dim", "8", "--batch-size", "50", "--max-wait-s", "0.05",
        *extra,
    ]  # fmt: skip


def consume(args: list[str], kafka_password: str, redis_password: str) -> tuple[int, str]:
    """A `recstream consume` that must stop by itself: (exit status, its output)."""
    env = dict(
        os.environ,
        PYTHONPATH=str(ROOT),
        RECSTREAM_KAFKA_PASSWORD=kafka_password,
        RECSTREAM_REDIS_PASSWORD=redis_password,
    )
    done = subprocess.run(
        [sys.executable, "-m", "consumers.cli", "consume", *args, "--metrics-port", "0"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return done.returncode, done.stdout + done.stderr


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        for secret in SECRETS:
            assert secret not in text


# -- against the secured services --------------------------------------------------------


def test_right_credentials_learn_and_publish_and_no_secret_shows(
    secured: Secured, creds_topic: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with ViewProducer(
        secured.bootstrap,
        topic=creds_topic,
        sasl_plain_password=KAFKA_PASSWORD,
        **secured.kafka_options(),
    ) as producer:
        for n in range(200):
            producer.send(ViewEvent(f"u{n % 13}", f"i{n % 17}", 1.0))
    monkeypatch.setenv("RECSTREAM_KAFKA_PASSWORD", KAFKA_PASSWORD)
    monkeypatch.setenv("RECSTREAM_REDIS_PASSWORD", REDIS_PASSWORD)
    learner = Learner(consume_args(secured, creds_topic), tmp_path / "learner.log").start()
    view = redis.Redis(port=secured.redis_port)
    try:
        wait_for(lambda: meta_events(view, f"creds:{creds_topic}:") == 200, 120, learner.log)
        with urllib.request.urlopen(f"http://127.0.0.1:{learner.metrics_port}/health") as reply:
            health = reply.read().decode()
        metrics = learner.metrics()
    finally:
        assert learner.stop() == 0, learner.log()
    assert '"status": "ok"' in health
    assert_no_secret(health, metrics, learner.log())


@pytest.mark.parametrize("workers", [1, 2])
def test_a_wrong_kafka_password_stops_the_start_with_one_clear_message(
    secured: Secured, creds_topic: str, workers: int
) -> None:
    args = consume_args(secured, creds_topic, "--workers", str(workers))
    status, output = consume(args, WRONG_PASSWORD, REDIS_PASSWORD)
    assert status == 2, output
    assert (
        "rejected the SASL credentials of user 'learner' (SCRAM-SHA-512): check "
        "RECSTREAM_KAFKA_PASSWORD / kafka_options.sasl_plain_username" in output
    )
    assert "Traceback" not in output
    assert_no_secret(output)


def test_a_wrong_redis_password_stops_the_start_with_one_clear_message(
    secured: Secured, creds_topic: str
) -> None:
    status, output = consume(consume_args(secured, creds_topic), KAFKA_PASSWORD, WRONG_PASSWORD)
    assert status == 2, output
    assert "rejected the credentials of user 'learner' (invalid username-password" in output
    assert "check RECSTREAM_REDIS_PASSWORD" in output
    assert_no_secret(output)


def test_missing_rights_are_named_before_learning(secured: Secured, creds_topic: str) -> None:
    dead_letters = creds_topic + DEAD_LETTER_SUFFIX
    options = {**secured.kafka_options("reader"), "sasl_plain_password": KAFKA_PASSWORD}
    with pytest.raises(PreflightError, match=f"'reader' may not write topic '{dead_letters}'"):
        check_kafka(secured.bootstrap, options, read=[creds_topic], write=[dead_letters])
    outsider = RedisStore.from_url(
        f"rediss://outsider@127.0.0.1:{secured.redis_tls_port}/0",
        "creds:x:",
        {"ssl_ca_certs": secured.ca},
        SecretStr(REDIS_PASSWORD),
    )
    with pytest.raises(PreflightError, match="'outsider' may not write keys under 'creds:x:'"):
        check_redis(outsider)


def test_a_plain_url_to_the_redis_tls_port_is_refused(secured: Secured) -> None:
    with pytest.raises(PreflightError, match="that port speaks TLS: use rediss://"):
        RedisStore.from_url(
            f"redis://learner@127.0.0.1:{secured.redis_tls_port}/0",
            password=SecretStr(REDIS_PASSWORD),
        )


# -- without services --------------------------------------------------------------------


def test_tls_options_with_a_plain_redis_url_are_a_settings_error() -> None:
    with pytest.raises(PreflightError, match=r"TLS options \(ssl_ca_certs\).*use rediss://"):
        RedisStore.from_url("redis://127.0.0.1:6379/0", options={"ssl_ca_certs": "/ca.pem"})


def test_no_password_goes_in_clear_beyond_loopback_unless_allowed() -> None:
    # Refused before any connection: these hosts are never contacted.
    with pytest.raises(PreflightError, match=r"refusing to send the password .* in clear"):
        RedisStore.from_url("redis://cache.internal:6379/0", password=SecretStr("s"))
    with pytest.raises(PreflightError, match=r"refusing to send the password .* in clear"):
        RedisStore.from_url("redis://learner:s@10.0.0.7:6379/0")
    sasl: dict[str, Any] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "learner",
        "sasl_plain_password": "s",
    }
    with pytest.raises(PreflightError, match="refusing to log in to Kafka at kafka-1"):
        check_kafka_options("kafka-1:9092", sasl, allow_plaintext_secrets=False)
    with pytest.raises(PreflightError, match="refusing to log in to Kafka at kafka-1"):
        ViewProducer("kafka-1:9092", **sasl)
    check_kafka_options("kafka-1:9092", sasl, allow_plaintext_secrets=True)
    check_kafka_options("127.0.0.1:9092", sasl, allow_plaintext_secrets=False)


class RecordingTlsServer:
    """A TLS-only port that records every byte sent to it in plain text, as a Redis TLS
    port would: a TLS hello gets a handshake, anything else is read and dropped."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.plain = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                first = conn.recv(1, socket.MSG_PEEK)
                if first == b"\x16":  # a TLS handshake record
                    with contextlib.suppress(ssl.SSLError, OSError):
                        self.context.wrap_socket(conn, server_side=True).close()
                else:
                    self.plain += conn.recv(65536)


def test_a_tls_port_never_receives_auth_in_clear(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", key, "-out", cert, "-subj", "/CN=127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    server = RecordingTlsServer(cert, key)
    try:
        with pytest.raises(PreflightError, match="that port speaks TLS: use rediss://"):
            store = RedisStore.from_url(
                f"redis://learner@127.0.0.1:{server.port}/0", password=SecretStr(REDIS_PASSWORD)
            )
            store.client.ping()  # what an unchecked store would do first: AUTH, in clear
    finally:
        server.sock.close()
    assert server.plain  # the probe: a plain PING, no credentials
    assert b"AUTH" not in server.plain and REDIS_PASSWORD.encode() not in server.plain


class RefusingStore(MemoryStore):
    def publish(self, publication: Publication) -> None:
        raise StoreUnavailable("redis: WRONGPASS invalid username-password pair")


def test_a_store_refusing_later_puts_its_reason_in_health_and_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = MemoryEventLog(partitions=1)
    for n in range(20):
        log.send(ViewEvent(f"u{n % 3}", f"i{n % 5}", 1.0), VIEWS_TOPIC)
    service = ConsumeService(
        MemoryEventSource(log, VIEWS_TOPIC, "learners"),
        *online(ModelConfig(dim=8, seed=1), RefusingStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=20,
        max_wait_s=1e9,
    )
    with caplog.at_level(logging.WARNING):
        service.step()
    healthy, report = service.health.report()
    assert not healthy
    assert report["checks"]["publish"]["detail"] == (
        "redis: WRONGPASS invalid username-password pair"
    )
    assert "WRONGPASS" in caplog.text
