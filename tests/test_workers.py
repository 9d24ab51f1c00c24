"""Several learner processes on one host: shared tables, a restart, nothing lost."""

from __future__ import annotations

import json
import os
from pathlib import Path

from kafka import KafkaConsumer, TopicPartition

from streamer.producer import ViewProducer
from streamer.sources.synthetic import SyntheticConfig, synthetic_views
from tests.conftest import RedisTarget
from tests.learners import Learner, meta_events, wait_for


def children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    return state != "Z"


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))]
    ends = {tp.partition: offset for tp, offset in consumer.end_offsets(partitions).items()}
    consumer.close()
    return ends


def test_two_workers_survive_a_kill_and_apply_every_event_once(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, tmp_path: Path
) -> None:
    events = list(synthetic_views(SyntheticConfig(n_users=400, n_items=300, events=16_000)))
    checkpoints = tmp_path / "checkpoints"
    args = [
        "--bootstrap", kafka_bootstrap, "--topic", kafka_topic, "--group", kafka_topic,
        "--redis", redis_db.url, "--prefix", redis_db.prefix, "--users-topic", "",
        "--workers", "2", "--dim", "16", "--batch-size", "200", "--max-wait-s", "0.05",
        "--checkpoint-dir", str(checkpoints), "--checkpoint-every-events", "1500",
        "--max-users", "10000", "--max-items", "10000",
    ]  # fmt: skip
    client, prefix = redis_db.client, redis_db.prefix
    with ViewProducer(kafka_bootstrap, topic=kafka_topic) as producer:
        for event in events[:8000]:
            producer.send(event)
        producer.flush()

    first = Learner(args, tmp_path / "first.log").start()
    assert first.process is not None
    wait_for(lambda: meta_events(client, prefix) >= 6000, 180, lambda: "learning\n" + first.log())
    workers = children(first.process.pid)  # two workers and multiprocessing's tracker
    assert len(workers) >= 2
    first.kill()  # the supervisor dies at once; orphaned workers stop without saving
    wait_for(lambda: not any(alive(pid) for pid in workers), 60, "orphaned workers to exit")

    with ViewProducer(kafka_bootstrap, topic=kafka_topic) as producer:
        for event in events[8000:]:
            producer.send(event)
        producer.flush()
    second = Learner(args, tmp_path / "second.log").start()
    wait_for(
        lambda: meta_events(client, prefix) == 16_000, 240, lambda: "all events\n" + second.log()
    )
    assert second.stop() == 0, second.log()

    newest = sorted(checkpoints.glob("ckpt-*"))[-1]
    manifest = json.loads((newest / "manifest.json").read_text())
    assert manifest["events"] == 16_000
    applied = {partition: count for topic, partition, count in manifest["applied"]}
    assert applied == end_offsets(kafka_bootstrap, kafka_topic)
    assert set(manifest["sha256"]) == {
        "shared.safetensors",
        "worker-0.safetensors",
        "worker-1.safetensors",
    }
    assert meta_events(client, prefix) == 16_000
    users = {str(event.user) for event in events}
    assert all(client.exists(f"{prefix}user:{user}:top") for user in users)
    assert "restored the host's shared state" in second.log_path.read_text()
