"""Nothing lost: real `recstream consume` processes on a real broker and Redis, killed,
restarted, cut off from Redis or the broker, fed garbage.

Every test here talks to real services. The ones that stop a service start their own
(ops/redis/start.sh, ops/kafka/start.sh on fresh ports) and stop only that one; the
shared broker and Redis of `bash ops/test` are never touched. Run with `-s` to see the
measured recovery times after kill -9.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import threading
import time
import urllib.error
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient
from kafka.structs import OffsetAndMetadata

from consumers.durability.host import SHARED_PART, Checkpoint, latest_checkpoint, worker_state
from consumers.model.config import ModelConfig
from consumers.model.mf import MatrixFactorization
from streamer.datasets.synthetic import SyntheticConfig, id_index, plant_world, synthetic_views
from streamer.events import (
    FEATURE_REASONS,
    INVALID_REASONS,
    MAX_ID_BYTES,
    MAX_VALUE_BYTES,
    REASON_HEADER,
    USERS_TOPIC,
    InvalidRecord,
    ViewEvent,
    decode_view,
    encode_key,
    encode_view,
)
from streamer.producer import ViewProducer
from tests.conftest import RedisTarget
from tests.learners import ROOT, Learner, free_ports, meta_events, wait_for

# A restarted member's partitions come back once the broker drops the dead one: the
# broker's minimum session timeout (6 s) instead of kafka-python's 45 s.
KAFKA_OPTIONS = json.dumps({"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000})
DIM = 16
SEED = 7


# -- helpers ------------------------------------------------------------------------------


def consume_args(
    bootstrap: str, topic: str, redis_url: str, prefix: str, checkpoints: Path, *extra: str
) -> list[str]:
    """A learner in group `learners-<prefix>` with checkpoints; later flags override.

    Checkpoints every 1500 events or 5 s: most kills land between two, so a restart replays.
    """
    return [
        "--bootstrap", bootstrap, "--topic", topic, "--group", f"learners-{prefix}",
        "--redis", redis_url, "--prefix", prefix, "--users-topic", "", "--items-topic", "",
        "--dim", str(DIM), "--seed", str(SEED), "--batch-size", "250", "--max-wait-s", "0.05",
        "--checkpoint-dir", str(checkpoints), "--checkpoint-every-events", "1500",
        "--checkpoint-every-seconds", "5", "--kafka-options", KAFKA_OPTIONS, *extra,
    ]  # fmt: skip


@pytest.fixture
def learners() -> Iterator[list[Learner]]:
    """Learners a test starts; any still running at the end is killed (only these)."""
    started: list[Learner] = []
    yield started
    for learner in started:
        if learner.alive():
            learner.kill()


def metric(learner: Learner, name: str, **labels: str) -> float:
    """One sample of the learner's /metrics (0 while the family has no such sample)."""
    for line in learner.metrics().splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        if series.split("{")[0] != name:
            continue
        if all(f'{key}="{wanted}"' in series for key, wanted in labels.items()):
            return float(value)
    return 0.0


def learned(learner: Learner) -> float:
    """Events this process learned (-1 until its HTTP server answers)."""
    try:
        return metric(learner, "recstream_events_total", outcome="learned")
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return -1.0


def polled_to_the_end(learner: Learner, partitions: int) -> bool:
    """Whether the learner has read every partition to its end (learned or buffered)."""
    lags = [
        float(line.rsplit(" ", 1)[1])
        for line in learner.metrics().splitlines()
        if line.startswith("recstream_consumer_lag{")
    ]
    return len(lags) == partitions and not any(lags)


def wait_on(learner: Learner, condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    """Poll `condition`; fail at once if the learner exits, and with its log on timeout."""

    def check() -> bool:
        assert learner.alive(), f"the learner exited while waiting for {what}"
        return condition()

    try:
        wait_for(check, timeout_s, what)
    except AssertionError as error:
        raise AssertionError(f"{error}\n--- learner log ---\n{learner.log()}") from None


def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic)]
        return {tp.partition: end for tp, end in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_offsets(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        found = admin.list_group_offsets(group)[group]
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items() if tp.topic == topic}


def full_state(checkpoint: Checkpoint) -> dict[str, torch.Tensor]:
    """Every tensor of a checkpoint, as a single learner restores it."""
    return worker_state(checkpoint, 0, 1)[0]


def applied_per_partition(checkpoint: Checkpoint | None, topic: str) -> dict[int, int]:
    assert checkpoint is not None, "no checkpoint"
    return {int(p): int(n) for t, p, n in checkpoint.manifest.applied if t == topic}


def create_topic(admin: KafkaAdminClient, partitions: int, topic: str = "") -> str:
    topic = topic or f"test.durability.{uuid.uuid4().hex[:8]}"
    admin.create_topics(
        {
            topic: {"num_partitions": partitions, "replication_factor": 1},
            f"{topic}.dlq": {"num_partitions": 1, "replication_factor": 1},
        },
        wait_for_metadata=True,
    )
    return topic


@dataclass(eq=False)  # a thread must stay hashable
class Stream(threading.Thread):
    """Publishes `events` at about `rate` per second from a background thread."""

    bootstrap: str
    topic: str
    events: list[ViewEvent]
    rate: float
    sent: int = 0
    error: BaseException | None = None

    def __post_init__(self) -> None:
        super().__init__(daemon=True)

    def run(self) -> None:
        try:
            with ViewProducer(self.bootstrap, topic=self.topic) as producer:
                started = time.monotonic()
                for i, event in enumerate(self.events):
                    ahead = i / self.rate - (time.monotonic() - started)
                    if ahead > 0:
                        time.sleep(ahead)  # pacing, not waiting for a condition
                    producer.send(event)
                producer.flush(timeout=180)
                self.sent = producer.sent
        except BaseException as error:
            self.error = error

    def finish(self, timeout_s: float = 240) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), "the producer did not finish"
        assert self.error is None, repr(self.error)
        assert self.sent == len(self.events)


def planted(events: int, seed: int) -> tuple[SyntheticConfig, list[ViewEvent]]:
    config = SyntheticConfig(n_users=400, n_items=300, events=events, seed=seed)
    return config, list(synthetic_views(config))


# -- services of our own (stopped and restarted by the tests that use them) ---------------


def _script(*args: str) -> str:
    done = subprocess.run(
        ["bash", *args], cwd=ROOT, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, f"{args} failed:\n{done.stderr[-3000:]}"
    return done.stdout.strip()


def _free_ports(n: int) -> list[int]:
    return [int(port) for port in _script("ops/ports.sh", str(n)).split()]


@dataclass
class OwnService:
    """A Redis or Kafka this test started and alone stops, by the pid file in `directory`."""

    kind: str  # "redis" or "kafka"
    directory: Path
    ports: list[int] = field(default_factory=list)
    address: str = ""

    def start(self) -> str:
        self.address = _script(
            f"ops/{self.kind}/start.sh", str(self.ports[0]), str(self.directory),
            *map(str, self.ports[1:]),
        )  # fmt: skip
        return self.address

    def stop(self) -> None:
        _script(f"ops/{self.kind}/stop.sh", str(self.directory))


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnService]:
    service = OwnService("redis", tmp_path / "redis", _free_ports(1))
    service.start()
    yield service
    service.stop()


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[OwnService]:
    service = OwnService("kafka", tmp_path / "kafka", _free_ports(2))  # client, controller
    try:
        service.start()
        yield service
    finally:
        service.stop()


# -- crash recovery: kill -9 at random moments --------------------------------------------


@dataclass
class Recovery:
    kill_at: int  # events the killed process had published
    restored: int  # events in the checkpoint the new process restored
    serving_s: float  # process start to /metrics answering (interpreter, imports)
    first_batch_s: float  # process start to the first batch learned after the restore
    caught_up_s: float  # process start to back where the killed one was


def kill_and_restart(
    learner: Learner, checkpoints: Path, client: redis.Redis, prefix: str
) -> tuple[Learner, Recovery]:
    """kill -9, restart, and time the recovery from this learner's own /metrics."""
    learner.kill()
    kill_at = meta_events(client, prefix)
    newest = latest_checkpoint(checkpoints)
    restored = 0 if newest is None else newest.manifest.events
    assert restored <= kill_at
    fresh = Learner(learner.args, learner.log_path).start()
    started = time.monotonic()
    wait_on(fresh, lambda: learned(fresh) >= 0, 120, "/metrics after the restart")
    serving = time.monotonic() - started
    wait_on(fresh, lambda: learned(fresh) > 0, 120, "a batch after the restart")
    first_batch = time.monotonic() - started
    wait_on(fresh, lambda: restored + learned(fresh) >= kill_at, 120, "catching up")
    return fresh, Recovery(kill_at, restored, serving, first_batch, time.monotonic() - started)


def run_with_kills(
    learner: Learner,
    checkpoints: Path,
    client: redis.Redis,
    prefix: str,
    kill_targets: list[int],
    rng: random.Random,
    started: list[Learner],
) -> tuple[Learner, list[Recovery]]:
    recoveries = []
    for target in kill_targets:
        wait_on(learner, lambda t=target: meta_events(client, prefix) >= t, 300, f"{target} events")
        time.sleep(rng.uniform(0.0, 0.5))  # a random moment: mid-batch, -publish, -checkpoint
        learner, recovery = kill_and_restart(learner, checkpoints, client, prefix)
        started.append(learner)
        recoveries.append(recovery)
    return learner, recoveries


def report(title: str, recoveries: list[Recovery]) -> None:
    print(f"\n{title}")
    for r in recoveries:
        print(
            f"  kill -9 at {r.kill_at:>6} events published; restored checkpoint at "
            f"{r.restored:>6} (replays {r.kill_at - r.restored:>4}); after process start: "
            f"/metrics {r.serving_s:.1f} s, first batch {r.first_batch_s:.1f} s, "
            f"caught up {r.caught_up_s:.1f} s"
        )


def killed_and_unbroken(
    kafka_bootstrap: str,
    topic: str,
    redis_db: RedisTarget,
    learners: list[Learner],
    tmp_path: Path,
    events: list[ViewEvent],
    kill_from: tuple[int, ...],
    seed: int,
    title: str,
    *extra: str,
) -> dict[str, Checkpoint | None]:
    """Two learners on one paced stream: "killed" is killed -9 and restarted at a random
    moment within 2,000 events after each of `kill_from`, "unbroken" never stops. Once
    both learned every event and stopped cleanly: each one's newest checkpoint."""
    client = redis_db.client
    runs = {
        name: (
            tmp_path / name,
            consume_args(
                kafka_bootstrap, topic, redis_db.url, f"{redis_db.prefix}{name}:",
                tmp_path / name, *extra,
            ),
        )
        for name in ("killed", "unbroken")
    }  # fmt: skip
    stream = Stream(kafka_bootstrap, topic, events, rate=1000)
    stream.start()
    for name, (_, args) in runs.items():
        learners.append(Learner(args, tmp_path / f"{name}.log").start())
    killed, unbroken = learners
    rng = random.Random(seed)
    kill_targets = [rng.randrange(a, a + 2000) for a in kill_from]
    killed, recoveries = run_with_kills(
        killed, runs["killed"][0], client, f"{redis_db.prefix}killed:", kill_targets, rng,
        learners,
    )  # fmt: skip
    report(title, recoveries)
    stream.finish()
    total = len(events)
    for learner, name in ((killed, "killed"), (unbroken, "unbroken")):
        prefix = f"{redis_db.prefix}{name}:"
        wait_on(learner, lambda p=prefix: meta_events(client, p) >= total, 300, f"{name}: all")
        assert learner.stop() == 0
    return {name: latest_checkpoint(directory) for name, (directory, _) in runs.items()}


@pytest.mark.timeout(600)
def test_kill_9_on_one_partition_ends_with_the_tables_of_an_unbroken_run(
    kafka_bootstrap: str, kafka_admin: KafkaAdminClient, redis_db: RedisTarget,
    learners: list[Learner], tmp_path: Path,
) -> None:  # fmt: skip
    """Count-based batches on one partition: after three kill -9s and restarts, every
    event applied once, and the tables equal those of a learner that never stopped."""
    topic = create_topic(kafka_admin, partitions=1)
    _, events = planted(20_000, seed=21)  # 80 batches of 250
    final = killed_and_unbroken(
        kafka_bootstrap, topic, redis_db, learners, tmp_path, events, (3000, 9000, 15000), 5,
        "one partition, count-based batches:", "--max-wait-s", "1e9",
    )  # fmt: skip
    ends = end_offsets(kafka_bootstrap, topic)
    assert ends == {0: 20_000}
    for checkpoint in final.values():
        assert applied_per_partition(checkpoint, topic) == ends
        assert checkpoint is not None and checkpoint.manifest.events == 20_000
    killed_state, unbroken_state = (full_state(c) for c in final.values() if c is not None)
    for name in ("user_weight", "item_weight", "user_accumulator", "item_accumulator"):
        torch.testing.assert_close(killed_state[name], unbroken_state[name], rtol=1e-5, atol=1e-6)
    for name in ("user_ids.bytes", "item_ids.bytes", "history_offsets", "history_items"):
        assert torch.equal(killed_state[name], unbroken_state[name]), name
    torch.testing.assert_close(
        killed_state["popularity_counts"], unbroken_state["popularity_counts"]
    )


def cluster_share(checkpoint: Checkpoint | None, config: SyntheticConfig) -> float:
    """Mean share of each user's top-10 (from the final tables) in their planted cluster."""
    assert checkpoint is not None
    model = MatrixFactorization(ModelConfig(dim=DIM, seed=SEED))
    model.load_state(full_state(checkpoint))
    world = plant_world(config)
    rows = enumerate(model.users.raws(range(len(model.users))))
    users = [(row, raw) for row, raw in rows if raw is not None]  # not the forgotten
    item_clusters = torch.tensor(
        [
            world.item_cluster[id_index(str(raw))]
            for raw in model.items.raws(range(len(model.items)))
        ]
    )
    rows = torch.tensor([row for row, _ in users])
    top = (model.user_table.weight[rows] @ model.item_table.weight.T).topk(10, dim=1).indices
    own = torch.tensor([world.user_cluster[id_index(str(raw))] for _, raw in users])
    return float((item_clusters[top] == own.unsqueeze(1)).float().mean())


@pytest.mark.timeout(600)
def test_kill_9_on_four_partitions_loses_nothing_and_learns_as_well(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Time-based batches over four partitions: after three kill -9s, the applied count of
    every partition equals its end offset, and offline quality matches an unbroken run."""
    config, events = planted(20_000, seed=22)
    final = killed_and_unbroken(
        kafka_bootstrap, kafka_topic, redis_db, learners, tmp_path, events, (2000, 8000, 14000),
        6, "four partitions, time-based batches:",
    )  # fmt: skip
    ends = end_offsets(kafka_bootstrap, kafka_topic)
    assert sum(ends.values()) == 20_000
    for checkpoint in final.values():
        assert applied_per_partition(checkpoint, kafka_topic) == ends
    assert (
        committed_offsets(kafka_bootstrap, "learners-" + redis_db.prefix + "killed:", kafka_topic)
        == ends
    )
    shares = {name: cluster_share(checkpoint, config) for name, checkpoint in final.items()}
    print(f"  share of top-10 in the planted cluster: {shares}")
    assert min(shares.values()) > 0.4  # chance: 1/8
    assert abs(shares["killed"] - shares["unbroken"]) < 0.06, shares


# -- faults: Redis and the broker going away ----------------------------------------------


def test_redis_stopped_and_restarted_mid_stream_the_learner_lives_and_catches_up(
    kafka_bootstrap: str, kafka_topic: str, own_redis: OwnService, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Redis (no persistence) goes away mid-stream: learning goes on, errors are counted;
    once it is back, empty, every user seen gets a list again."""
    _, events = planted(6000, seed=23)
    url, prefix = f"{own_redis.address}/0", "rs:"
    args = consume_args(kafka_bootstrap, kafka_topic, url, prefix, tmp_path / "checkpoints")
    learner = Learner(args, tmp_path / "learner.log").start()
    learners.append(learner)
    stream = Stream(kafka_bootstrap, kafka_topic, events, rate=500)
    stream.start()
    client = redis.Redis.from_url(url)
    wait_on(learner, lambda: meta_events(client, prefix) >= 1500, 120, "1500 events")

    own_redis.stop()
    down_at = learned(learner)
    wait_on(
        learner,
        lambda: (
            learned(learner) >= down_at + 1000
            and metric(learner, "recstream_redis_errors_total") > 0
        ),
        120,
        "learning on, and errors counted, while Redis is down",
    )
    own_redis.start()
    stream.finish()

    client = redis.Redis.from_url(url)
    keys = [f"{prefix}user:{user}:top" for user in {str(event.user) for event in events}]
    wait_on(
        learner,
        lambda: meta_events(client, prefix) == 6000 and client.exists(*keys) == len(keys),
        180,
        "every user's list back in Redis",
    )
    assert client.get(f"{prefix}popular") is not None
    assert metric(learner, "recstream_redis_errors_total") > 0
    assert learner.stop() == 0
    ends = end_offsets(kafka_bootstrap, kafka_topic)
    assert applied_per_partition(latest_checkpoint(tmp_path / "checkpoints"), kafka_topic) == ends


def test_a_broker_restart_mid_stream_loses_no_event(
    own_kafka: OwnService, redis_db: RedisTarget, learners: list[Learner], tmp_path: Path
) -> None:
    """The broker stops and starts again on the same data and ports: the producer and the
    learner reconnect; every event is learned once and committed."""
    bootstrap = own_kafka.address
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topic = create_topic(admin, partitions=4)
    finally:
        admin.close()
    _, events = planted(6000, seed=24)
    prefix = redis_db.prefix
    args = consume_args(bootstrap, topic, redis_db.url, prefix, tmp_path / "checkpoints")
    learner = Learner(args, tmp_path / "learner.log").start()
    learners.append(learner)
    stream = Stream(bootstrap, topic, events, rate=500)
    stream.start()
    client = redis_db.client
    wait_on(learner, lambda: meta_events(client, prefix) >= 1500, 120, "1500 events")

    own_kafka.stop()
    assert learner.alive()
    own_kafka.start()
    stream.finish()
    wait_on(learner, lambda: meta_events(client, prefix) >= 6000, 180, "every event")
    assert learner.stop() == 0
    ends = end_offsets(bootstrap, topic)
    assert sum(ends.values()) == 6000
    assert applied_per_partition(latest_checkpoint(tmp_path / "checkpoints"), topic) == ends
    assert committed_offsets(bootstrap, f"learners-{prefix}", topic) == ends


def health(learner: Learner) -> tuple[int, dict[str, object]]:
    """The learner's /health: status code and JSON body."""
    url = f"http://127.0.0.1:{learner.metrics_port}/health"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_a_broker_that_stays_away_turns_health_red_naming_kafka_then_green_once_back(
    own_kafka: OwnService, redis_db: RedisTarget, learners: list[Learner], tmp_path: Path
) -> None:
    """/health goes 503, naming Kafka, within the poll window (30 s) plus one end-offsets
    probe (5 s apart, 5 s timeout) of the broker stopping; 200 once it is back."""
    bootstrap = own_kafka.address
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        topic = create_topic(admin, partitions=2)
    finally:
        admin.close()
    Stream(bootstrap, topic, planted(300, seed=29)[1], rate=1e9).run()
    prefix = redis_db.prefix
    args = consume_args(bootstrap, topic, redis_db.url, prefix, tmp_path / "checkpoints")
    learner = Learner(args, tmp_path / "learner.log").start()
    learners.append(learner)
    wait_on(learner, lambda: meta_events(redis_db.client, prefix) == 300, 120, "every event")
    wait_on(learner, lambda: health(learner)[0] == 200, 60, "a healthy learner")

    own_kafka.stop()
    stopped = time.monotonic()
    wait_on(learner, lambda: health(learner)[0] == 503, 30 + 10 + 15, "503 with the broker away")
    status, body = health(learner)
    print(f"\n/health {time.monotonic() - stopped:.0f} s after the broker stopped: {status} {body}")
    poll = body["checks"]["poll"]  # type: ignore[index]
    assert status == 503 and not poll["ok"] and "Kafka at " in poll["detail"]
    assert all(check["ok"] for name, check in body["checks"].items() if name != "poll")  # type: ignore[attr-defined]

    own_kafka.start()
    restarted = time.monotonic()
    wait_on(learner, lambda: health(learner)[0] == 200, 120, "200 with the broker back")
    print(f"/health 200 again {time.monotonic() - restarted:.0f} s after the broker restarted")
    assert learner.stop() == 0


# -- bad input ----------------------------------------------------------------------------

JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)
FIELDS = st.sampled_from(["user", "item", "ts", "weight", "rating", "context"]) | st.text(
    min_size=1, max_size=8
)
IDS = st.sampled_from(["u1", "u2", 7]) | st.text(min_size=1, max_size=200) | JSON_SCALARS
BAD_VALUES = {
    "ts": st.sampled_from([-1.0, math.nan, math.inf, -math.inf, "1", None, True, [1]]),
    "weight": st.sampled_from([0, -1.0, math.nan, math.inf, "1", None, False, 1e999]),
    "rating": st.sampled_from([math.nan, math.inf, "5", [5], {"x": 1}]),
    "context": JSON_SCALARS | st.lists(JSON_SCALARS, max_size=2),
}


def _dumps(body: object) -> bytes:
    return json.dumps(body, allow_nan=True).encode()  # NaN and Infinity on the wire


def _key(user: object) -> bytes:
    return encode_key(user) if isinstance(user, str | int) and not isinstance(user, bool) else b"k"


@st.composite
def near_views(draw: st.DrawFn) -> tuple[bytes | None, bytes | None]:
    """A valid view with one field made bad (or an unknown one added), keyed by its user."""
    body: dict[str, object] = {"user": draw(IDS), "item": draw(IDS), "ts": 1.0}
    name = draw(st.sampled_from([*BAD_VALUES, "unknown", "user", "item"]))
    if name in BAD_VALUES:
        body[name] = draw(BAD_VALUES[name])
    elif name == "unknown":
        body[draw(st.text(min_size=1, max_size=8))] = draw(JSON_VALUES)
    user = body["user"]
    return (draw(st.sampled_from([_key(user), b"someone-else"])), _dumps(body))


RECORDS = st.one_of(
    st.tuples(st.binary(min_size=1, max_size=8), st.binary(max_size=64)),  # any bytes
    st.tuples(st.just(b"u1"), JSON_VALUES.map(_dumps)),  # any JSON
    st.tuples(st.just(b"u1"), st.dictionaries(FIELDS, JSON_VALUES, max_size=6).map(_dumps)),
    near_views(),
    st.tuples(  # oversize values
        st.just(b"u1"),
        st.integers(MAX_VALUE_BYTES, MAX_VALUE_BYTES + 2000).map(
            lambda n: _dumps({"user": "u1", "item": "i1", "context": {"pad": "x" * n}})
        ),
    ),
    st.tuples(st.binary(min_size=1, max_size=4), st.none()),  # tombstones on the views topic
)

HAND_MADE: list[tuple[bytes | None, bytes | None, str]] = [
    (b"u1", b"", "empty"),
    (b"u1", None, "empty"),
    (b"u1", b"\xff\xfe", "not_utf8"),
    (b"u1", b"{", "not_json"),
    (b"u1", b"[1, 2]", "not_object"),
    (b"u1", b'{"user": "u1"}', "missing_field"),
    (b"u1", b'{"user": "u1", "item": "i1", "colour": "red"}', "unknown_field"),
    (b"u1", b'{"user": "u1", "item": 2.5}', "bad_id"),
    (b"u1", b'{"user": "u1", "item": true}', "bad_id"),
    (b"u1", _dumps({"user": "u1", "item": "x" * (MAX_ID_BYTES + 1)}), "id_too_long"),
    (b"u1", _dumps({"user": "u1", "item": 10**MAX_ID_BYTES}), "id_too_long"),
    (b"u1", b'{"user": "u1", "item": "i1", "ts": NaN}', "not_json"),  # not JSON (RFC 8259)
    (b"u1", b'{"user": "u1", "item": "i1", "weight": Infinity}', "not_json"),
    (b"u1", b'{"user": "u1", "item": "i1", "ts": -1}', "bad_ts"),
    (b"u1", b'{"user": "u1", "item": "i1", "weight": 1e999}', "bad_weight"),  # parses as inf
    (b"u1", b'{"user": "u1", "item": "i1", "weight": "heavy"}', "bad_weight"),
    (b"u1", b'{"user": "u1", "item": "i1", "rating": 1e999}', "bad_rating"),
    (b"u1", b'{"user": "u1", "item": "i1", "rating": "5"}', "bad_rating"),
    (b"u1", b'{"user": "u1", "item": "i1", "context": [1]}', "bad_context"),
    (b"u2", b'{"user": "u1", "item": "i1"}', "key_mismatch"),
    (b"u1", b"x" * (MAX_VALUE_BYTES + 1), "oversize"),
]


def malformed_corpus() -> list[tuple[bytes | None, bytes | None, str]]:
    """Hypothesis-built records that the event contract rejects, with their reasons."""
    corpus: list[tuple[bytes | None, bytes | None, str]] = []

    @settings(max_examples=300, derandomize=True, database=None)
    @given(RECORDS)
    def collect(record: tuple[bytes | None, bytes | None]) -> None:
        key, value = record
        decoded = decode_view(value, key, 1.0)
        if isinstance(decoded, InvalidRecord):
            corpus.append((key, value, decoded.reason))

    with warnings.catch_warnings():
        # kafka-python's IO threads (of the session's admin client) draw from the global
        # `random` while examples are generated; hypothesis would blame the strategies.
        warnings.simplefilter("ignore", HypothesisDeprecationWarning)
        collect()
    return corpus


def test_malformed_records_go_to_the_dead_letter_topic_and_good_ones_are_learned(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    bad = HAND_MADE + malformed_corpus()
    assert {reason for _, _, reason in bad} == set(INVALID_REASONS) - set(FEATURE_REASONS)
    good = list(synthetic_views(SyntheticConfig(n_users=150, n_items=100, events=2000, seed=25)))
    mixed: list[tuple[bytes | None, bytes | None, str | None]] = [
        (encode_key(event.user), encode_view(event), None) for event in good
    ]
    for record in bad:
        mixed.insert(random.Random(len(mixed)).randrange(len(mixed) + 1), record)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=20)
    futures = [(producer.send(kafka_topic, key=k, value=v), k, v, r) for k, v, r in mixed]
    producer.flush()
    producer.close()
    expected: dict[str, tuple[bytes | None, str]] = {}
    for future, _, value, reason in futures:
        sent = future.get(timeout=30)
        if reason is not None:
            expected[f"{kafka_topic}/{sent.partition}/{sent.offset}"] = (value, reason)

    prefix = redis_db.prefix
    args = consume_args(kafka_bootstrap, kafka_topic, redis_db.url, prefix, tmp_path / "ckpt")
    learner = Learner(args, tmp_path / "learner.log").start()
    learners.append(learner)
    client = redis_db.client
    wait_on(learner, lambda: meta_events(client, prefix) == len(good), 120, "every good one")
    dead = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    dead.assign([TopicPartition(f"{kafka_topic}.dlq", 0)])
    dead.seek_to_beginning()
    letters: dict[str, tuple[bytes | None, str]] = {}

    def all_read() -> bool:
        for messages in dead.poll(500).values():
            for m in messages:
                headers = {name: value.decode() for name, value in m.headers}
                source = headers["recstream.source"]
                assert source not in letters, f"{source} dead-lettered twice"
                letters[source] = (m.value, headers[REASON_HEADER])
        return len(letters) >= len(expected)

    wait_for(all_read, 120, f"{len(expected)} dead letters")
    dead.close()
    assert letters == expected
    meta = redis_db.client.hgetall(f"{prefix}meta")
    assert int(meta[b"users"]) == len({str(event.user) for event in good})
    assert metric(learner, "recstream_events_total", outcome="invalid") == len(bad)
    assert learner.stop() == 0
    ends = end_offsets(kafka_bootstrap, kafka_topic)
    assert applied_per_partition(latest_checkpoint(tmp_path / "ckpt"), kafka_topic) == ends


# -- checkpoints on disk, shutdown, rebalance ---------------------------------------------


def test_a_corrupt_newest_checkpoint_is_skipped_and_the_previous_one_replayed_from(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Count-based batches and checkpoints every 1000 of 4100 events: checkpoints at 1000
    .. 4000, and at 4100 on SIGTERM (offsets committed at 4100). The newest is damaged:
    the next run restores the one at 4000 and replays from its offsets, not from the
    group's committed ones, so the model sees every event once."""
    _, events = planted(4100, seed=26)
    Stream(kafka_bootstrap, kafka_topic, events, rate=1e9).run()
    directory, prefix, client = tmp_path / "checkpoints", redis_db.prefix, redis_db.client
    args = consume_args(
        kafka_bootstrap, kafka_topic, redis_db.url, prefix, directory,
        "--checkpoint-every-events", "1000", "--checkpoint-every-seconds", "3600",
    )  # fmt: skip
    learner = Learner([*args, "--max-wait-s", "1e9"], tmp_path / "learner.log").start()
    learners.append(learner)
    wait_on(
        learner,
        lambda: meta_events(client, prefix) >= 4000 and polled_to_the_end(learner, 4),
        120,
        "16 batches, and the last 100 views read",
    )
    assert learner.stop() == 0  # learns the last 100, checkpoints, commits
    ends = end_offsets(kafka_bootstrap, kafka_topic)
    assert committed_offsets(kafka_bootstrap, f"learners-{prefix}", kafka_topic) == ends
    newest = latest_checkpoint(directory)
    assert newest is not None and newest.manifest.events == 4100
    tensors = newest.path / f"{SHARED_PART}.safetensors"
    damaged = bytearray(tensors.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    tensors.write_bytes(bytes(damaged))
    previous = latest_checkpoint(directory)
    assert previous is not None and previous.manifest.events == 4000
    replay = 4100 - previous.manifest.events

    learner = Learner(args, tmp_path / "learner.log").start()
    learners.append(learner)
    wait_on(
        learner,
        lambda: learned(learner) >= replay and meta_events(client, prefix) >= 4100,
        120,
        "the replay, published (at most --publish-interval-s after it is learned)",
    )
    assert learned(learner) == replay  # from the checkpoint's offsets, not the group's
    assert meta_events(client, prefix) == 4100
    assert learner.stop() == 0
    assert "skipping checkpoint" in learner.log_path.read_text()
    final = latest_checkpoint(directory)
    assert final is not None and final.manifest.events == 4100
    assert applied_per_partition(final, kafka_topic) == ends


def test_sigterm_finishes_the_batch_publishes_checkpoints_commits_and_exits_0(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    """Count-based batches of 1000 over 3500 events leave 500 buffered; with no checkpoint
    due, nothing is committed. SIGTERM learns the 500, publishes, checkpoints, commits."""
    _, events = planted(3500, seed=27)
    Stream(kafka_bootstrap, kafka_topic, events, rate=1e9).run()
    directory, prefix, client = tmp_path / "checkpoints", redis_db.prefix, redis_db.client
    args = consume_args(
        kafka_bootstrap, kafka_topic, redis_db.url, prefix, directory,
        "--batch-size", "1000", "--max-wait-s", "1e9",
        "--checkpoint-every-events", "100000", "--checkpoint-every-seconds", "3600",
    )  # fmt: skip
    learner = Learner(args, tmp_path / "learner.log").start()
    learners.append(learner)
    wait_on(
        learner,
        lambda: meta_events(client, prefix) >= 3000 and polled_to_the_end(learner, 4),
        120,
        "3 batches, and the last 500 views read",
    )
    group = f"learners-{prefix}"
    # Offsets follow checkpoints: none is due, so nothing is committed, unless a rebalance
    # made the learner checkpoint what it held (and commit exactly that).
    before = latest_checkpoint(directory)
    held = {} if before is None else applied_per_partition(before, kafka_topic)
    assert committed_offsets(kafka_bootstrap, group, kafka_topic) == held
    if before is None:
        assert meta_events(client, prefix) == 3000  # 500 still buffered

    started = time.monotonic()
    assert learner.stop(timeout_s=30) == 0
    print(f"\nSIGTERM to exit: {time.monotonic() - started:.2f} s")
    assert meta_events(client, prefix) == 3500
    ends = end_offsets(kafka_bootstrap, kafka_topic)
    assert applied_per_partition(latest_checkpoint(directory), kafka_topic) == ends
    assert committed_offsets(kafka_bootstrap, group, kafka_topic) == ends


def test_a_rebalance_hands_partitions_over_without_loss_or_double_counting(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, learners: list[Learner],
    tmp_path: Path,
) -> None:  # fmt: skip
    """A second member joins mid-stream, then leaves: across both members' checkpoints each
    partition's events are applied exactly once, and the group's commits end at the end."""
    _, events = planted(6000, seed=28)
    group = f"learners-{redis_db.prefix}"
    client = redis_db.client
    members = []
    for name in ("first", "second"):
        prefix = f"{redis_db.prefix}{name}:"
        args = consume_args(
            kafka_bootstrap, kafka_topic, redis_db.url, prefix, tmp_path / name,
            "--group", group,
        )  # fmt: skip
        members.append((Learner(args, tmp_path / f"{name}.log"), prefix, tmp_path / name))
    first, second = members
    learners.append(first[0].start())
    stream = Stream(kafka_bootstrap, kafka_topic, events[:3000], rate=500)
    stream.start()
    wait_on(first[0], lambda: meta_events(client, first[1]) >= 1000, 120, "1000")
    learners.append(second[0].start())
    wait_on(
        second[0],
        lambda: "assigned [(" in second[0].log_path.read_text(),
        120,
        "partitions for the second member",
    )
    stream.finish()
    Stream(kafka_bootstrap, kafka_topic, events[3000:], rate=500).run()  # to both members
    wait_on(second[0], lambda: learned(second[0]) > 0, 120, "the second learning")
    ends = end_offsets(kafka_bootstrap, kafka_topic)

    def all_applied() -> bool:
        return meta_events(client, first[1]) + meta_events(client, second[1]) >= 6000

    wait_for(all_applied, 180, "all events")
    assert second[0].stop() == 0  # its partitions go back to the first member
    assert first[0].stop() == 0
    applied = [
        applied_per_partition(latest_checkpoint(directory), kafka_topic)
        for *_, directory in members
    ]
    assert {p: applied[0].get(p, 0) + applied[1].get(p, 0) for p in ends} == ends
    assert committed_offsets(kafka_bootstrap, group, kafka_topic) == ends


# -- a fresh broker -----------------------------------------------------------------------


def test_every_worker_reads_the_users_topic_from_its_own_position_not_the_groups(
    kafka_bootstrap: str,
    kafka_topic: str,
    kafka_admin: KafkaAdminClient,
    redis_db: RedisTarget,
    learners: list[Learner],
    tmp_path: Path,
) -> None:
    """Every worker reads the whole users topic, but the group has one committed offset
    per partition: a worker that starts on it after another committed past a tombstone
    must still read the tombstone (seen: a worker assigned the topic late skipped it)."""
    bootstrap, prefix = kafka_bootstrap, redis_db.prefix
    users_topic = create_topic(kafka_admin, 1, f"{kafka_topic}.users")
    tombstone = KafkaProducer(bootstrap_servers=bootstrap)
    tombstone.send(users_topic, key=b"someone", value=None).get(30)
    tombstone.close()
    group = f"learners-{prefix}"
    ahead = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    ahead.commit({TopicPartition(users_topic, 0): OffsetAndMetadata(1, "", -1)})
    ahead.close()
    args = consume_args(bootstrap, kafka_topic, redis_db.url, prefix, tmp_path / "checkpoints")
    args[args.index("--users-topic") + 1] = users_topic
    learner = Learner([*args, "--workers", "2"], tmp_path / "learner.log", free_ports(2)).start()
    learners.append(learner)
    _, events = planted(300, seed=31)
    Stream(bootstrap, kafka_topic, events, rate=1e9).run()
    wait_on(learner, lambda: meta_events(redis_db.client, prefix) == 300, 120, "every view")
    assert learner.stop() == 0
    final = latest_checkpoint(tmp_path / "checkpoints")
    assert applied_per_partition(final, users_topic) == {0: 1}  # read by both workers


def test_workers_on_a_fresh_broker_wait_for_their_topics_and_pick_them_up(
    own_kafka: OwnService, redis_db: RedisTarget, learners: list[Learner], tmp_path: Path
) -> None:
    """`--workers 2` with the default users topic on a broker that has neither topic yet:
    the workers wait (and say so), learn the views once the topic exists, and read the
    users topic (a tombstone) once it is created too."""
    bootstrap, prefix, client = own_kafka.address, redis_db.prefix, redis_db.client
    topic = f"test.fresh.{uuid.uuid4().hex[:8]}"
    args = [
        *consume_args(bootstrap, topic, redis_db.url, prefix, tmp_path / "checkpoints"),
        "--workers", "2", "--max-users", "10000", "--max-items", "10000",
    ]  # fmt: skip
    args.remove("--users-topic")
    args.remove("")  # the default, recstream.users
    learner = Learner(args, tmp_path / "learner.log", free_ports(2)).start()
    learners.append(learner)
    for missing in (topic, USERS_TOPIC):
        wait_on(
            learner,
            lambda t=missing: f"topic {t} does not exist" in learner.log_path.read_text(),
            120,
            f"a log line: waiting for {missing}",
        )
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        create_topic(admin, 4, topic)
        _, events = planted(1000, seed=29)
        Stream(bootstrap, topic, events, rate=1e9).run()
        wait_on(learner, lambda: meta_events(client, prefix) == 1000, 120, "every view")
        gone = str(events[0].user)
        assert client.exists(f"{prefix}user:{gone}:top")
        create_topic(admin, 1, USERS_TOPIC)
    finally:
        admin.close()
    tombstones = KafkaProducer(bootstrap_servers=bootstrap)
    tombstones.send(USERS_TOPIC, key=gone.encode(), value=None).get(30)
    tombstones.close()
    wait_on(learner, lambda: not client.exists(f"{prefix}user:{gone}:top"), 120, "the tombstone")
    wait_on(
        learner,
        lambda: learner.log_path.read_text().count(f"topic {USERS_TOPIC} exists now") == 2,
        60,
        "both workers reading the users topic",
    )
    assert learner.stop() == 0
    final = latest_checkpoint(tmp_path / "checkpoints")
    assert applied_per_partition(final, topic) == end_offsets(bootstrap, topic)
    assert applied_per_partition(final, USERS_TOPIC) == {0: 1}
