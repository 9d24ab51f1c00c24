"""End to end at the default settings (checkpoints on): sustained events/s from a real
Kafka broker through learning to Redis with 1 and 2 workers, at catalogues of 20k, 200k
and 1M items, next to the rate at which kafka-python alone reads the same topic (the
ceiling); then freshness (event time to Redis write) p50/p99 with 2 workers while a
producer sends at 50% and 80% of the sustained 2-worker rate (20k items).

Everything runs on this machine: broker, Redis, producer and learners share its cores,
as they would on one host. Events: the synthetic stream (streamer/datasets/synthetic.py)
with 50k users and 20k items, 4 partitions. A larger catalogue comes first as one view
of each further item ("c0", "c1", ...), so the learner holds every item before the
measured stream starts: warm-up user "wK" views items 1,000 K to 1,000 K + 999 in turn
(a batch then touches a user or two, so the warm-up costs minutes, not the measured
part's top-N per touched user; 1,000 watched items stay within what HNSW's exclusions
reach). Sustained rate: events learned (Redis
`meta.events`) between 5% and 95% of the measured stream, so start-up, the warm-up and
the tail are left out. Freshness: every 25th event is the only event of a probe user,
stamped with its send time; its latency is the `updated_at` of the list published for
it (the publish time) minus that stamp. Each freshness run lasts longer than the default
checkpoint interval, so its tail holds a checkpoint's pause; the checkpoints written
during it are read from the workers' metrics.

    PYTHONPATH=. python benchmarks/end_to_end.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import (
    ROOT,
    Service,
    describe,
    machine,
    pin_threads,
    verdict,
    write,
)

PARTITIONS = 4
USERS, ITEMS = 50_000, 20_000  # the synthetic world (its default is 2,000 x 1,000)
CATALOGUES = (20_000, 200_000, 1_000_000)
WARMUP_VIEWS_PER_USER = 1_000
PROBE_EVERY = 25
FRESHNESS_SHARES = (0.5, 0.8)
FRESHNESS_S = 75.0  # longer than the default checkpoint interval (60 s)
TARGET_RATIO, TARGET_P99, TARGET_SCALING = 0.7, 1.0, 0.5
# What runs the learners (--learner-tree / --learner-python: an older checkout and its
# environment, for before/after comparisons against the same broker and topic).
LEARNER = {"tree": str(ROOT), "python": sys.executable}
Payloads = list[tuple[bytes, bytes]]


def payloads(n: int) -> Payloads:
    from streamer.datasets import open_dataset
    from streamer.events import encode_key, encode_view

    world = {"n_users": USERS, "n_items": ITEMS, "events": n}
    return [(encode_key(e.user), encode_view(e)) for e in open_dataset("synthetic", **world)]


def catalogue_views(items: int) -> Payloads:
    """One view of each item a catalogue of `items` has beyond the world's own."""
    from streamer.events import ViewEvent, encode_key, encode_view

    views = []
    for number in range(max(items - ITEMS, 0)):
        user = f"w{number // WARMUP_VIEWS_PER_USER}"
        views.append((encode_key(user), encode_view(ViewEvent(user, f"c{number}", 1.0e9))))
    return views


def create_topic(bootstrap: str, name: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    admin.close()


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, batch_size=256 * 1024)


def fill(bootstrap: str, topic: str, events: Payloads) -> None:
    create_topic(bootstrap, topic)
    sender = producer(bootstrap)
    for key, value in events:
        sender.send(topic, key=key, value=value)
    sender.flush()
    sender.close()


def raw_read_rate(bootstrap: str, topic: str, n: int) -> float:
    """kafka-python alone: poll every record of the topic, nothing else (the ceiling)."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    parts = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    seen, counted, started = 0, 0, 0.0
    while seen < n:
        polled = consumer.poll(timeout_ms=1000, max_records=512)
        count = sum(len(v) for v in polled.values())
        if count and not seen:
            started = time.perf_counter()  # the first poll's records came before the clock
        elif seen:
            counted += count
        seen += count
    rate = counted / (time.perf_counter() - started)
    consumer.close()
    return rate


def metrics_ports(workers: int) -> int:
    """The first of `workers` consecutive free ports (worker i serves metrics on first + i)."""
    for first in np.random.default_rng().integers(20_000, 60_000, 200).tolist():
        try:
            for port in range(first, first + workers):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return int(first)
    raise RuntimeError("no free metrics ports")


class Learner:
    """`recstream consume` at its defaults (checkpoints on, under a state directory of its
    own), a fresh consumer group, its log in /tmp."""

    def __init__(
        self,
        bootstrap: str,
        redis_url: str,
        topic: str,
        prefix: str,
        workers: int,
        extra: Sequence[str] = (),
    ) -> None:
        self.prefix, self.workers = prefix, workers
        self.port = metrics_ports(workers)
        self.state = tempfile.mkdtemp(prefix="recstream-bench-state-")
        args = [
            LEARNER["python"], "-m", "consumers.cli", "consume",
            "--bootstrap", bootstrap, "--topic", topic, "--users-topic", "", "--items-topic", "",
            "--group", f"bench-{uuid.uuid4().hex[:8]}", "--redis", redis_url,
            "--prefix", prefix, "--workers", str(workers),
            "--metrics-addr", "127.0.0.1", "--metrics-port", str(self.port),
            "--state-dir", self.state, *extra,
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": LEARNER["tree"]}
        self.log = open(f"/tmp/recstream-bench-{prefix.strip(':')}.log", "wb")  # noqa: SIM115
        self.process = subprocess.Popen(
            args, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=LEARNER["tree"]
        )

    def checkpoints(self) -> tuple[int, float]:
        """Checkpoints written so far and their seconds, summed over the workers."""
        count = seconds = 0.0
        for port in range(self.port, self.port + self.workers):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
            for line in text.decode().splitlines():
                if line.startswith("recstream_checkpoint_seconds_count"):
                    count += float(line.split()[-1])
                elif line.startswith("recstream_checkpoint_seconds_sum"):
                    seconds += float(line.split()[-1])
        return int(count), seconds

    def stop(self) -> None:
        import shutil

        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
        shutil.rmtree(self.state, ignore_errors=True)


def learned(client: Any, prefix: str) -> int:
    value = client.hget(f"{prefix}meta", "events")
    return int(value) if value else 0


def sustained_rate(
    bootstrap: str,
    redis_url: str,
    topic: str,
    warmup: int,
    n: int,
    workers: int,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Events/s learned over the measured stream's 5% to 95% (after `warmup` events);
    `extra`: flags of `consume` besides the defaults."""
    import redis

    client = redis.Redis.from_url(redis_url)
    learner = Learner(
        bootstrap, redis_url, topic, f"e2e-w{workers}-{uuid.uuid4().hex[:6]}:", workers, extra
    )
    marks: dict[str, float] = {}
    deadline = time.monotonic() + 1800
    try:
        while time.monotonic() < deadline:
            done = learned(client, learner.prefix)
            now = time.perf_counter()
            if done >= warmup + 0.05 * n and "start" not in marks:
                marks["start"], marks["start_events"] = now, done
            if done >= warmup + 0.95 * n:
                marks["end"], marks["end_events"] = now, done
                break
            if learner.process.poll() is not None:
                raise RuntimeError(f"learner exited with {learner.process.returncode}")
            time.sleep(0.05)
        else:
            raise RuntimeError("learner did not finish in 1800 s")
        checkpoints, checkpoint_s = learner.checkpoints()
    finally:
        learner.stop()
        client.close()
    rate = (marks["end_events"] - marks["start_events"]) / (marks["end"] - marks["start"])
    return {
        "workers": workers,
        "events_per_s": round(rate),
        "checkpoints": checkpoints,
        "checkpoint_seconds": round(checkpoint_s, 2),
    }


def freshness(
    bootstrap: str,
    redis_url: str,
    rate: float,
    seconds: float,
    workers: int,
    extra: Sequence[str] = (),
) -> dict[str, Any]:
    """Produce at `rate` events/s for `seconds` while the learners run; probe latencies."""
    import redis

    from streamer.events import ViewEvent, encode_key, encode_view

    client = redis.Redis.from_url(redis_url)
    topic = f"bench.fresh.{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    learner = Learner(bootstrap, redis_url, topic, f"fresh-{uuid.uuid4().hex[:6]}:", workers, extra)
    sender = producer(bootstrap)
    try:
        # Warm up: the learners are up and publishing before the clock starts.
        background = payloads(int(rate * seconds) + 2000)
        for key, value in background[:1000]:
            sender.send(topic, key=key, value=value)
        sender.flush()
        deadline = time.monotonic() + 120
        while learned(client, learner.prefix) < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
        checkpoints_before, seconds_before = learner.checkpoints()
        probes: dict[str, float] = {}
        started = time.perf_counter()
        sent = 0
        stream = iter(background[1000:])
        total = int(rate * seconds)
        while sent < total:
            due = int((time.perf_counter() - started) * rate)
            for _ in range(min(due, total) - sent):
                if sent % PROBE_EVERY == 0:
                    user = f"probe-{len(probes)}"
                    now = time.time()
                    probes[user] = now
                    event = ViewEvent(user, "i1", now)
                    sender.send(topic, key=encode_key(user), value=encode_view(event))
                else:
                    key, value = next(stream)
                    sender.send(topic, key=key, value=value)
                sent += 1
            time.sleep(0.002)
        achieved = sent / (time.perf_counter() - started)
        sender.flush()
        time.sleep(3.0)
        checkpoints_after, seconds_after = learner.checkpoints()
        latencies = []
        missing = 0
        for user, sent_at in probes.items():
            value = client.get(f"{learner.prefix}user:{user}:top")
            if value is None:
                missing += 1
                continue
            latencies.append(json.loads(value)["updated_at"] - sent_at)
    finally:
        sender.close()
        learner.stop()
        client.close()
    lat = np.asarray(latencies)
    return {
        "target_events_per_s": round(rate),
        "achieved_events_per_s": round(achieved),
        "seconds": seconds,
        "probes": len(probes),
        "probes_missing": missing,
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(float(np.percentile(lat, 99)), 3),
        "max_s": round(float(lat.max()), 3),
        "checkpoints_during": checkpoints_after - checkpoints_before,
        "checkpoint_seconds_during": round(seconds_after - seconds_before, 2),
    }


def catalogue_runs(bootstrap: str, redis_url: str, items: int, events: Payloads) -> dict[str, Any]:
    """Sustained rates with 1 and 2 workers over one topic: the catalogue, then `events`."""
    warmup = catalogue_views(items)
    topic = f"bench.views.{items}.{uuid.uuid4().hex[:8]}"
    fill(bootstrap, topic, warmup + events)
    total = len(warmup) + len(events)
    print(f"{items:,} items: {total:,} events in {topic} ({len(warmup):,} warm-up)")
    ceilings = [raw_read_rate(bootstrap, topic, total)]
    runs = []
    for workers in (1, 2):
        runs.append(sustained_rate(bootstrap, redis_url, topic, len(warmup), len(events), workers))
        print(f"  {workers} worker(s): {runs[-1]}")
    ceilings.append(raw_read_rate(bootstrap, topic, total))
    ceiling = max(ceilings)
    print(f"  kafka-python alone: {[round(c) for c in ceilings]} events/s")
    for run in runs:
        run["ratio_to_ceiling"] = round(run["events_per_s"] / ceiling, 3)
    return {
        "items": items,
        "warmup_events": len(warmup),
        "events": len(events),
        "ceiling_kafka_python_events_per_s": [round(c) for c in ceilings],
        "sustained": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer events, 20k and 200k items")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--catalogues", default=None, help="comma-separated item counts")
    parser.add_argument("--learner-tree", default=LEARNER["tree"])
    parser.add_argument("--learner-python", default=LEARNER["python"])
    parser.add_argument("--out", default="end_to_end", help="results/OUT.json")
    args = parser.parse_args()
    LEARNER.update(tree=args.learner_tree, python=args.learner_python)
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}")
    n = args.events or (60_000 if args.quick else 200_000)
    default_catalogues = CATALOGUES[:2] if args.quick else CATALOGUES
    catalogues = (
        [int(c) for c in args.catalogues.split(",")] if args.catalogues else default_catalogues
    )
    events = payloads(n)
    with Service("kafka") as bootstrap, Service("redis") as redis_url:
        sizes = [catalogue_runs(bootstrap, redis_url, items, events) for items in catalogues]
        base = sizes[0]["sustained"][1]["events_per_s"]  # 2 workers, smallest catalogue
        fresh = []
        for share in FRESHNESS_SHARES:
            seconds = 20.0 if args.quick else FRESHNESS_S
            point = freshness(bootstrap, redis_url, share * base, seconds, 2)
            point["share_of_sustained"] = share
            fresh.append(point)
            print(f"freshness at {share:.0%} of {base:,}/s: {point}")
    two_workers = sizes[0]["sustained"][1]["ratio_to_ceiling"]
    largest = sizes[-1]["sustained"][1]["events_per_s"]
    at_80 = fresh[-1]["p99_s"]
    met = {
        "rate": two_workers >= TARGET_RATIO,
        "freshness_p99_at_80pct": at_80 < TARGET_P99,
        "largest_catalogue_within_2x": largest >= TARGET_SCALING * base,
    }
    print(
        f"2 workers at {catalogues[0]:,} items: {two_workers:.2f} of kafka-python's read rate "
        f"(target {TARGET_RATIO}): {verdict(met['rate'])}; freshness p99 at 80%: {at_80} s "
        f"(target < {TARGET_P99} s): {verdict(met['freshness_p99_at_80pct'])}; "
        f"{catalogues[-1]:,} items: {largest:,}/s vs {base:,}/s "
        f"(target within 2x): {verdict(met['largest_catalogue_within_2x'])}"
    )
    write(
        args.out,
        {
            "machine": info,
            "partitions": PARTITIONS,
            "settings": "defaults (checkpoints on, every 100k records or 60 s)",
            "catalogues": sizes,
            "freshness": fresh,
            "target": {
                "ratio_2_workers": TARGET_RATIO,
                "p99_at_80pct_s": TARGET_P99,
                "largest_over_smallest": TARGET_SCALING,
            },
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
