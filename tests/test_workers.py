"""Several learner processes on one host: shared tables, restarts with any number of
workers, kill -9 of a worker or of the supervisor, nothing lost and nothing left behind."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import torch
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient
from safetensors.torch import save_file

from consumers.durability.host import latest_checkpoint
from consumers.model.packing import section, unpack_ids
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import ViewEvent
from streamer.producer import ViewProducer
from tests.conftest import RedisTarget
from tests.learners import Learner, free_ports, meta_events, online, wait_for
from tests.test_durability import (
    applied_per_partition,
    cluster_share,
    end_offsets,
    full_state,
    wait_on,
)

# Every pair N -> M of {1, 2, 3} once, as consecutive runs on one checkpoint directory.
CHAIN = (1, 1, 2, 2, 3, 3, 1, 3, 2, 1)
PARTS = {"shared.safetensors", "worker-0.safetensors", "worker-1.safetensors"}


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


def workers_of(learner: Learner) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    assert learner.process is not None
    return [
        pid
        for pid in children(learner.process.pid)
        if "resource_tracker" not in Path(f"/proc/{pid}/cmdline").read_text()
    ]


def unlinked(learner: Learner) -> bool:
    return "every worker has mapped the shared tables: unlinked" in learner.log_path.read_text()


def produce(bootstrap: str, topic: str, events: list[ViewEvent]) -> None:
    with ViewProducer(bootstrap, topic=topic) as producer:
        for event in events:
            producer.send(event)
        producer.flush()


def dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_a_killed_worker_or_supervisor_restarts_exactly_and_leaves_nothing_behind(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, tmp_path: Path
) -> None:
    """kill -9 of one worker stops the host; kill -9 of the supervisor stops its orphans;
    each restart restores the last checkpoint and every event is applied once. The shared
    tables are gone from the shared directory as soon as every worker mapped them, and
    a staging directory or shared directory left by a dead run is never used again."""
    events = list(synthetic_views(SyntheticConfig(n_users=300, n_items=200, events=9000)))
    checkpoints, shm = tmp_path / "checkpoints", tmp_path / "shm"
    shm.mkdir()
    staged = checkpoints / ".tmp-epoch-1"  # a crashed run with three workers left a part
    staged.mkdir(parents=True)
    save_file({"history_offsets": torch.zeros(1)}, str(staged / "worker-2.safetensors"))
    args = [
        "--bootstrap", kafka_bootstrap, "--topic", kafka_topic, "--group", kafka_topic,
        "--redis", redis_db.url, "--prefix", redis_db.prefix, "--users-topic", "",
        "--items-topic", "",
        "--workers", "2", "--dim", "16", "--batch-size", "200", "--max-wait-s", "0.05",
        "--checkpoint-dir", str(checkpoints), "--checkpoint-every-events", "1000",
        "--max-users", "10000", "--max-items", "10000", "--shared-dir", str(shm),
    ]  # fmt: skip
    client, prefix = redis_db.client, redis_db.prefix
    produce(kafka_bootstrap, kafka_topic, events[:3000])

    first = Learner(args, tmp_path / "first.log", free_ports(2)).start()
    wait_for(lambda: meta_events(client, prefix) >= 2000, 180, lambda: "learning\n" + first.log())
    wait_for(lambda: unlinked(first), 60, "the supervisor to unlink the shared files")
    assert not list(shm.iterdir())
    workers = workers_of(first)
    assert len(workers) == 2
    os.kill(workers[1], 9)  # one worker dies: the host stops, no checkpoint follows
    assert first.process is not None and first.process.wait(60) == 1, first.log()
    wait_for(lambda: not any(alive(pid) for pid in workers), 60, "the other worker to exit")
    sealed = [json.loads(path.read_text()) for path in checkpoints.glob("ckpt-*/manifest.json")]
    assert sealed and all(set(manifest["sha256"]) == PARTS for manifest in sealed)

    produce(kafka_bootstrap, kafka_topic, events[3000:6000])
    second = Learner(args, tmp_path / "second.log", free_ports(2)).start()
    wait_for(lambda: meta_events(client, prefix) >= 5000, 180, lambda: "again\n" + second.log())
    wait_for(lambda: unlinked(second), 60, "the supervisor to unlink the shared files")
    workers = workers_of(second)
    second.kill()  # the supervisor dies at once; orphaned workers stop without saving
    wait_for(lambda: not any(alive(pid) for pid in workers), 60, "orphaned workers to exit")
    assert not list(shm.iterdir())
    leftover = shm / f"recstream-{dead_pid()}-x1y2z3"  # a supervisor killed before mapping
    leftover.mkdir()

    produce(kafka_bootstrap, kafka_topic, events[6000:])
    third = Learner(args, tmp_path / "third.log", free_ports(2)).start()
    wait_for(lambda: meta_events(client, prefix) == 9000, 240, lambda: "all\n" + third.log())
    assert third.stop() == 0, third.log()
    assert not list(shm.iterdir())

    newest = latest_checkpoint(checkpoints)
    assert newest is not None and newest.manifest.events == 9000
    assert applied_per_partition(newest, kafka_topic) == end_offsets(kafka_bootstrap, kafka_topic)
    assert set(newest.workers) == {0, 1}  # and the shared part: nothing else is read
    assert not list(checkpoints.glob(".tmp-*"))
    users = {str(event.user) for event in events}
    assert all(client.exists(f"{prefix}user:{user}:top") for user in users)
    assert "restored the host's shared state" in second.log_path.read_text()


def unbroken_share(events: list[ViewEvent], config: SyntheticConfig, directory: Path) -> float:
    """Cluster share of one learner that read `events` in one go, in this process."""
    from prometheus_client import CollectorRegistry

    from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
    from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
    from consumers.metrics import LearnerMetrics
    from consumers.model.config import ModelConfig
    from consumers.service import ConsumeService
    from consumers.sinks.memory import MemoryStore
    from streamer.events import VIEWS_TOPIC

    log = MemoryEventLog(partitions=4)
    for event in events:
        log.send(event, VIEWS_TOPIC)
    service = ConsumeService(
        MemoryEventSource(log, [VIEWS_TOPIC], "unbroken"),
        *online(ModelConfig(dim=16, seed=7), MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=250,
        checkpoints=LocalCheckpoints(CheckpointPolicy(directory, None, None)),
    )
    while service.step():
        pass
    service.shutdown()
    return cluster_share(latest_checkpoint(directory), config)


def test_restarts_with_every_pair_of_worker_counts_apply_every_event_once(
    kafka_bootstrap: str, kafka_topic: str, kafka_admin: KafkaAdminClient,
    redis_db: RedisTarget, tmp_path: Path,
) -> None:  # fmt: skip
    """Ten runs on one checkpoint directory, with 1, 1, 2, 2, 3, 3, 1, 3, 2 and 1 workers
    (every pair N -> M of {1, 2, 3}), each learning a new slice of the stream and then
    stopped: each checkpoint has applied every event produced so far exactly once, a user
    forgotten midway stays forgotten, the lists (by HNSW) exclude what users watched, and
    the final model is as good as one learner's that never stopped."""
    config = SyntheticConfig(n_users=200, n_items=150, events=5000, seed=31)
    stream = list(synthetic_views(config))
    users_topic = f"{kafka_topic}.users"
    kafka_admin.create_topics(
        {users_topic: {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True
    )
    forget_at, forgotten = 4, str(stream[0].user)  # tombstoned before the 3 -> 3 run
    size = len(stream) // len(CHAIN)
    slices = [stream[i * size : (i + 1) * size] for i in range(len(CHAIN))]
    for stage in range(forget_at, len(CHAIN)):
        slices[stage] = [e for e in slices[stage] if str(e.user) != forgotten]
    checkpoints, client, prefix = tmp_path / "checkpoints", redis_db.client, redis_db.prefix
    args = [
        "--bootstrap", kafka_bootstrap, "--topic", kafka_topic, "--group", kafka_topic,
        "--redis", redis_db.url, "--prefix", prefix, "--users-topic", users_topic,
        "--dim", "16", "--seed", "7", "--batch-size", "250", "--max-wait-s", "0.05",
        "--checkpoint-dir", str(checkpoints), "--max-users", "1000", "--max-items", "1000",
        "--topn-index", "ann", "--ann-min-items", "50",
    ]  # fmt: skip
    top = f"{prefix}user:{forgotten}:top"
    produced, matrix = 0, []
    for stage, workers in enumerate(CHAIN):
        produce(kafka_bootstrap, kafka_topic, slices[stage])
        produced += len(slices[stage])
        if stage == forget_at:
            tombstones = KafkaProducer(bootstrap_servers=kafka_bootstrap)
            tombstones.send(users_topic, key=forgotten.encode(), value=None).get(30)
            tombstones.close()
        log = tmp_path / f"run-{stage}.log"
        learner = Learner([*args, "--workers", str(workers)], log, free_ports(workers)).start()
        wait_on(
            learner,
            lambda total=produced, gone=stage >= forget_at: (
                meta_events(client, prefix) == total and not (gone and client.exists(top))
            ),
            180,
            f"run {stage}: {produced} events",
        )
        assert learner.stop() == 0, learner.log()
        newest = latest_checkpoint(checkpoints)
        applied = applied_per_partition(newest, kafka_topic)
        assert newest is not None
        matrix.append((CHAIN[stage - 1] if stage else 0, workers, sum(applied.values()), produced))
        assert applied == end_offsets(kafka_bootstrap, kafka_topic)
        assert newest.manifest.events == produced
        assert applied_per_partition(newest, users_topic) == ({0: 1} if stage >= forget_at else {})
        assert set(newest.workers) == set(range(workers))
    print("\nN -> M: events applied / produced")
    for before, after, applied_events, produced_events in matrix[1:]:
        print(f"  {before} -> {after}: {applied_events} / {produced_events}")

    events = [e for stage in slices for e in stage]
    state = full_state(newest)
    users = unpack_ids(section(state, "user_ids."))
    assert forgotten not in {str(user) for user in users} and not client.exists(top)
    watched = {(str(e.user), str(e.item)) for e in events if str(e.user) != forgotten}
    assert state["history_items"].numel() == len(watched)  # united, each pair once
    lists = {str(user): client.get(f"{prefix}user:{user}:top") for user, _ in watched}
    for user, value in lists.items():
        assert value is not None, user
        listed = [str(item) for item in json.loads(value)["items"]]
        assert listed and not {(user, item) for item in listed} & watched
    shares = (cluster_share(newest, config), unbroken_share(events, config, tmp_path / "u"))
    print(f"  share of top-10 in the planted cluster (chain, unbroken): {shares}")
    assert min(shares) > 0.5 and abs(shares[0] - shares[1]) < 0.06, shares
