"""The whole path on real services: producer -> Kafka -> learner process -> Redis."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient

from consumers.durability.host import latest_checkpoint
from consumers.settings import default_checkpoint_dir
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import REASON_HEADER, ViewEvent
from streamer.producer import ViewProducer
from tests.conftest import RedisTarget
from tests.learners import Learner, meta_events, wait_for


@pytest.fixture
def learners(tmp_path: Path) -> Iterator[list[Learner]]:
    started: list[Learner] = []
    yield started
    for learner in started:
        if learner.alive():
            learner.kill()


def consume_args(bootstrap: str, topic: str, target: RedisTarget, *extra: str) -> list[str]:
    return [
        "--bootstrap", bootstrap, "--topic", topic, "--group", f"learners-{topic}",
        "--redis", target.url, "--prefix", target.prefix,
        "--users-topic", "", "--items-topic", "",
        "--batch-size", "256", "--max-wait-s", "0.05", "--dim", "32", *extra,
    ]  # fmt: skip


def learn_until(
    learners: list[Learner], learner: Learner, redis_db: RedisTarget, in_model: int
) -> float:
    """Start `learner`, wait for `in_model` events in the model, stop it: what it learned."""
    client, prefix = redis_db.client, redis_db.prefix
    learners.append(learner.start())
    wait_for(
        lambda: meta_events(client, prefix) == in_model,
        120,
        lambda: f"{in_model} events, not {meta_events(client, prefix)}\n{learner.log()}",
    )
    learned = metric_value(learner.metrics(), "recstream_events_total", outcome="learned")
    assert learner.stop() == 0
    return learned


def produce(bootstrap: str, topic: str, events: list[ViewEvent]) -> None:
    with ViewProducer(bootstrap, topic=topic) as producer:
        for event in events:
            producer.send(event)
        producer.flush()


def metric_value(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
        if all(found.get(k) == v for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not exported")


def test_a_stream_ends_up_as_documented_redis_keys(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    events = list(synthetic_views(SyntheticConfig(n_users=120, n_items=80, events=3000, seed=4)))
    produce(kafka_bootstrap, kafka_topic, events)
    learner = Learner(consume_args(kafka_bootstrap, kafka_topic, redis_db), tmp_path / "l.log")
    learners.append(learner.start())
    client, prefix = redis_db.client, redis_db.prefix
    wait_for(
        lambda: meta_events(client, prefix) == 3000, 240, "3000 events learned\n" + learner.log()
    )

    watched: dict[str, set[str]] = {}
    for event in events:
        watched.setdefault(str(event.user), set()).add(str(event.item))
    for user, seen in watched.items():
        top = json.loads(client.get(f"{prefix}user:{user}:top") or b"null")
        assert set(top) == {"items", "scores", "model", "version", "updated_at"}
        assert top["model"] == "mf-bpr" and top["items"]
        assert not seen & set(top["items"])
        assert top["scores"] == sorted(top["scores"], reverse=True)
        vector = np.frombuffer(client.get(f"{prefix}user:{user}:vec") or b"", dtype="<f4")
        assert vector.shape == (32,) and np.isfinite(vector).all()
    for item in {str(event.item) for event in events}:
        assert len(client.get(f"{prefix}item:{item}:vec") or b"") == 32 * 4
    assert json.loads(client.get(f"{prefix}popular") or b"null")["items"]
    meta = {k.decode(): v.decode() for k, v in client.hgetall(f"{prefix}meta").items()}
    assert meta["users"] == str(len(watched)) and meta["dim"] == "32"
    assert {"model", "version", "updated_at", "items"} <= set(meta)

    text = learner.metrics()
    assert metric_value(text, "recstream_events_total", outcome="learned") == 3000
    assert metric_value(text, "recstream_embedding_rows", table="user") == len(watched)
    assert metric_value(text, "recstream_freshness_seconds_count") == 3000
    assert learner.stop() == 0


BAD_RECORDS: list[tuple[bytes | None, bytes, str]] = [
    (b"u1", b"not json", "not_json"),
    (b"u1", b"\xff\xfe\xfd", "not_utf8"),
    (b"u1", b'{"user": "u1"}', "missing_field"),
    (b"u1", b'{"user": "u1", "item": "i1", "ts": 1, "colour": "red"}', "unknown_field"),
    (b"u1", b'{"user": "u1", "item": 2.5, "ts": 1}', "bad_id"),
    (b"u1", b'{"user": "u1", "item": "i1", "ts": 1, "weight": -1}', "bad_weight"),
    (b"u1", json.dumps({"user": "u1", "item": "x" * 200, "ts": 1}).encode(), "id_too_long"),
    (b"zz", b'{"user": "u1", "item": "i1", "ts": 1}', "key_mismatch"),
    (None, b"", "empty"),
]


def test_malformed_records_are_dead_lettered_with_reasons_and_good_ones_learned(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    good = 0
    for i in range(200):
        user = f"u{i % 7}"
        value = json.dumps({"user": user, "item": f"i{i % 13}", "ts": 1000 + i}).encode()
        producer.send(kafka_topic, key=user.encode(), value=value)
        good += 1
        if i % 25 == 0:
            key, bad, _ = BAD_RECORDS[(i // 25) % len(BAD_RECORDS)]
            producer.send(kafka_topic, key=key, value=bad)
    for key, bad, _ in BAD_RECORDS:
        producer.send(kafka_topic, key=key, value=bad)
    producer.flush()
    producer.close()
    bad_sent = 8 + len(BAD_RECORDS)

    learner = Learner(consume_args(kafka_bootstrap, kafka_topic, redis_db), tmp_path / "l.log")
    learners.append(learner.start())
    client, prefix = redis_db.client, redis_db.prefix
    wait_for(
        lambda: meta_events(client, prefix) == good, 240, lambda: "good events\n" + learner.log()
    )

    dead = KafkaConsumer(bootstrap_servers=kafka_bootstrap, consumer_timeout_ms=1000)
    dead.assign([TopicPartition(f"{kafka_topic}.dlq", 0)])
    dead.seek_to_beginning()
    letters: list[tuple[bytes | None, dict[str, bytes]]] = []

    def all_dead_letters_read() -> bool:
        for messages in dead.poll(500).values():
            letters.extend((m.value, dict(m.headers)) for m in messages)
        return len(letters) >= bad_sent

    wait_for(all_dead_letters_read, 60, "dead letters")
    dead.close()
    reasons = {value: headers[REASON_HEADER].decode() for value, headers in letters}
    for _, bad, reason in BAD_RECORDS:
        assert reasons[bad] == reason
    assert all("recstream.source" in headers for _, headers in letters)
    text = learner.metrics()
    assert metric_value(text, "recstream_dead_letters_total", reason="not_json") >= 1
    assert metric_value(text, "recstream_events_total", outcome="invalid") == bad_sent
    assert learner.stop() == 0


def test_the_learner_beats_popularity_on_a_planted_stream(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    config = SyntheticConfig(n_users=500, n_items=400, events=30_000, seed=11)
    produce(kafka_bootstrap, kafka_topic, list(synthetic_views(config)))
    learner = Learner(
        consume_args(kafka_bootstrap, kafka_topic, redis_db, "--dim", "64"), tmp_path / "l.log"
    )
    learners.append(learner.start())
    client, prefix = redis_db.client, redis_db.prefix
    wait_for(
        lambda: meta_events(client, prefix) == 30_000, 240, lambda: "30000 events\n" + learner.log()
    )
    text = learner.metrics()
    model = metric_value(text, "recstream_online_hit_rate", ranker="model", window="all")
    popular = metric_value(text, "recstream_online_hit_rate", ranker="popularity", window="all")
    # 1.49x to 1.90x over 7 runs: how many events a micro-batch holds (so how stale the
    # served lists are) depends on timing; with learning rate 1e-9 it scored 0.35x
    assert model > 1.3 * popular, (model, popular)
    assert learner.stop() == 0


@pytest.mark.parametrize("checkpoints", ["default", "off"])
def test_a_restart_resumes_the_model_or_with_checkpoints_off_learns_the_log_again(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    kafka_admin: KafkaAdminClient, state_home: str, tmp_path: Path, checkpoints: str,
) -> None:  # fmt: skip
    """By default a learner checkpoints under $XDG_STATE_HOME and a restart goes on with
    the model; with `--checkpoint-dir none` no offset is committed, so a restart learns
    every retained event again. Either way the model holds each event once."""
    events = list(synthetic_views(SyntheticConfig(n_users=60, n_items=40, events=1000, seed=5)))
    off = ["--checkpoint-dir", "none"] if checkpoints == "off" else []
    args = consume_args(kafka_bootstrap, kafka_topic, redis_db, *off)
    prefix, group = redis_db.prefix, f"learners-{kafka_topic}"

    def run_until(in_model: int, name: str) -> float:
        return learn_until(learners, Learner(args, tmp_path / f"{name}.log"), redis_db, in_model)

    produce(kafka_bootstrap, kafka_topic, events[:600])
    assert run_until(600, "first") == 600
    produce(kafka_bootstrap, kafka_topic, events[600:])
    learned = run_until(1000, "restarted")
    committed = kafka_admin.list_group_offsets(group)[group]
    if off:
        assert learned == 1000 and not committed
    else:
        assert learned == 400 and sum(meta.offset for meta in committed.values()) == 1000
        directory = default_checkpoint_dir(None, group, prefix)
        assert directory.is_relative_to(state_home) and latest_checkpoint(directory) is not None
