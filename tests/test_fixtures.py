"""Smoke tests proving the Kafka and Redis fixtures work against the real services."""

from __future__ import annotations

import time
import uuid

from kafka import KafkaConsumer, KafkaProducer

from tests.conftest import RedisTarget


def test_kafka_round_trip(kafka_bootstrap: str, kafka_topic: str) -> None:
    payload = uuid.uuid4().hex.encode()
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    try:
        producer.send(kafka_topic, key=b"k", value=payload).get(timeout=30)
    finally:
        producer.close()

    consumer = KafkaConsumer(
        kafka_topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"{kafka_topic}.group",
        auto_offset_reset="earliest",
    )
    try:
        received: list[bytes] = []
        deadline = time.monotonic() + 30
        while payload not in received and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                received.extend(record.value for record in records)
    finally:
        consumer.close()
    assert payload in received


def test_redis_set_get(redis_db: RedisTarget) -> None:
    key = f"{redis_db.prefix}greeting"
    redis_db.client.set(key, "hello")
    assert redis_db.client.get(key) == b"hello"
    assert redis_db.client.connection_pool.connection_kwargs["db"] == redis_db.db
