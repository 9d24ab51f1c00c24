"""End to end: sustained events/s from a real Kafka broker through learning to Redis with
1 and 2 workers, next to the rate at which kafka-python alone reads the same topic (the
ceiling); then freshness (event time to Redis write) p50/p99 with 2 workers while a
producer sends at 50% and 90% of the sustained 2-worker rate.

Everything runs on this machine: broker, Redis, producer and learners share its cores,
as they would on one host. Events: the synthetic stream (streamer/datasets/synthetic.py)
with 50k users and 20k items, 4 partitions. Sustained rate: events learned (Redis
`meta.events`) between 5% and 95% of the topic, so start-up and the tail are left out.
Freshness: every 25th event is the only event of a probe user, stamped with its send
time; its latency is the `updated_at` of the list published for it (the publish time)
minus that stamp.
Two workers run twice: publishing every batch (the default) and coalescing
(`--publish-interval-s 0.25`: a user updated by several batches in it is written once).

    PYTHONPATH=. python benchmarks/end_to_end.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import uuid
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
PROBE_EVERY = 25
TARGET_RATIO, TARGET_P99 = 0.7, 1.0
COALESCE_S = 0.25  # the coalescing variant's --publish-interval-s
# What runs the learners (--learner-tree / --learner-python: an older checkout and its
# environment, for before/after comparisons against the same broker and topic).
LEARNER = {"tree": str(ROOT), "python": sys.executable}


def payloads(n: int) -> list[tuple[bytes, bytes]]:
    from streamer.datasets import open_dataset
    from streamer.events import encode_key, encode_view

    world = {"n_users": USERS, "n_items": ITEMS, "events": n}
    return [(encode_key(e.user), encode_view(e)) for e in open_dataset("synthetic", **world)]


def create_topic(bootstrap: str, name: str) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    admin.close()


def producer(bootstrap: str) -> Any:
    from kafka import KafkaProducer

    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5, batch_size=256 * 1024)


def fill(bootstrap: str, topic: str, events: list[tuple[bytes, bytes]]) -> None:
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


def start_learner(
    bootstrap: str, redis_url: str, topic: str, prefix: str, workers: int, extra: list[str]
) -> subprocess.Popen[bytes]:
    args = [
        LEARNER["python"], "-m", "consumers.cli", "consume",
        "--bootstrap", bootstrap, "--topic", topic, "--users-topic", "",
        "--group", f"bench-{uuid.uuid4().hex[:8]}", "--redis", redis_url,
        "--prefix", prefix, "--workers", str(workers), "--metrics-port", "0",
        "--checkpoint-dir", "none",  # measured without checkpoints (a fresh group every run)
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": LEARNER["tree"]}
    log = open(f"/tmp/recstream-bench-{prefix.strip(':')}.log", "wb")  # noqa: SIM115
    return subprocess.Popen(
        args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=LEARNER["tree"]
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def learned(client: Any, prefix: str) -> int:
    value = client.hget(f"{prefix}meta", "events")
    return int(value) if value else 0


def sustained_rate(
    bootstrap: str, redis_url: str, topic: str, n: int, workers: int, extra: list[str]
) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(redis_url)
    prefix = f"e2e-w{workers}-{uuid.uuid4().hex[:6]}:"
    process = start_learner(bootstrap, redis_url, topic, prefix, workers, extra)
    marks: dict[str, float] = {}
    deadline = time.monotonic() + 600
    try:
        while time.monotonic() < deadline:
            done = learned(client, prefix)
            now = time.perf_counter()
            if done >= 0.05 * n and "start" not in marks:
                marks["start"], marks["start_events"] = now, done
            if done >= 0.95 * n:
                marks["end"], marks["end_events"] = now, done
                break
            if process.poll() is not None:
                raise RuntimeError(f"learner exited with {process.returncode}")
            time.sleep(0.05)
        else:
            raise RuntimeError("learner did not finish in 600 s")
    finally:
        stop(process)
        client.close()
    rate = (marks["end_events"] - marks["start_events"]) / (marks["end"] - marks["start"])
    return {"workers": workers, "events_per_s": round(rate)}


def freshness(
    bootstrap: str, redis_url: str, rate: float, seconds: float, workers: int, extra: list[str]
) -> dict[str, Any]:
    """Produce at `rate` events/s for `seconds` while the learners run; probe latencies."""
    import redis

    from streamer.events import ViewEvent, encode_key, encode_view

    client = redis.Redis.from_url(redis_url)
    topic = f"bench.fresh.{uuid.uuid4().hex[:8]}"
    create_topic(bootstrap, topic)
    prefix = f"fresh-{uuid.uuid4().hex[:6]}:"
    process = start_learner(bootstrap, redis_url, topic, prefix, workers, extra)
    sender = producer(bootstrap)
    try:
        # Warm up: the learners are up and publishing before the clock starts.
        background = payloads(int(rate * seconds) + 2000)
        for key, value in background[:1000]:
            sender.send(topic, key=key, value=value)
        sender.flush()
        deadline = time.monotonic() + 120
        while learned(client, prefix) < 1000 and time.monotonic() < deadline:
            time.sleep(0.1)
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
        latencies = []
        missing = 0
        for user, sent_at in probes.items():
            value = client.get(f"{prefix}user:{user}:top")
            if value is None:
                missing += 1
                continue
            latencies.append(json.loads(value)["updated_at"] - sent_at)
    finally:
        sender.close()
        stop(process)
        client.close()
    lat = np.asarray(latencies)
    return {
        "target_events_per_s": round(rate),
        "achieved_events_per_s": round(achieved),
        "probes": len(probes),
        "probes_missing": missing,
        "p50_s": round(float(np.percentile(lat, 50)), 3),
        "p99_s": round(float(np.percentile(lat, 99)), 3),
        "max_s": round(float(lat.max()), 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--extra", default="", help="more flags for `recstream consume`")
    parser.add_argument("--learner-tree", default=LEARNER["tree"])
    parser.add_argument("--learner-python", default=LEARNER["python"])
    parser.add_argument(
        "--sustained-only", metavar="NAME", help="no freshness; write results/NAME.json"
    )
    args = parser.parse_args()
    LEARNER.update(tree=args.learner_tree, python=args.learner_python)
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}")
    n = args.events or (60_000 if args.quick else 200_000)
    extra = args.extra.split()
    events = payloads(n)
    with Service("kafka") as bootstrap, Service("redis") as redis_url:
        topic = f"bench.views.{uuid.uuid4().hex[:8]}"
        fill(bootstrap, topic, events)
        print(f"{n:,} events in {topic} ({PARTITIONS} partitions)")
        ceilings = [raw_read_rate(bootstrap, topic, n)]
        print(f"kafka-python alone: {ceilings[-1]:,.0f} events/s")
        runs = []
        coalesced = [*extra, "--publish-interval-s", str(COALESCE_S)]
        for workers, flags in ((1, extra), (2, extra), (2, coalesced)):
            runs.append(sustained_rate(bootstrap, redis_url, topic, n, workers, flags))
            runs[-1]["consume_flags"] = flags
            print(f"learners, {workers} worker(s) {flags}: {runs[-1]['events_per_s']:,} events/s")
        ceilings.append(raw_read_rate(bootstrap, topic, n))
        print(f"kafka-python alone (again): {ceilings[-1]:,.0f} events/s")
        ceiling = max(ceilings)
        for run in runs:
            run["ratio_to_ceiling"] = round(run["events_per_s"] / ceiling, 3)
        if args.sustained_only:
            write(
                args.sustained_only,
                {"machine": info, "events": n, "learner": LEARNER, "sustained": runs,
                 "ceiling_kafka_python_events_per_s": [round(c) for c in ceilings]},
            )  # fmt: skip
            return
        fresh = []
        for run, share in ((runs[1], 0.5), (runs[1], 0.9), (runs[2], 0.5)):
            rate, flags = run["events_per_s"], run["consume_flags"]
            seconds = 10 if args.quick else 20
            point = freshness(bootstrap, redis_url, share * rate, seconds, 2, flags)
            point["share_of_sustained"] = share
            point["consume_flags"] = flags
            fresh.append(point)
            print(f"freshness at {share:.0%} of {rate:,}/s {flags}: {point}")
    for label, run, point in (("every batch", runs[1], fresh[0]), ("coalesced", runs[2], fresh[2])):
        ratio = run["ratio_to_ceiling"]
        print(
            f"2 workers, publishing {label}: {ratio:.2f} of kafka-python's read rate "
            f"(target {TARGET_RATIO}): {verdict(ratio >= TARGET_RATIO)}; freshness p99 at 50%: "
            f"{point['p99_s']} s (target < {TARGET_P99} s): {verdict(point['p99_s'] < TARGET_P99)}"
        )
    met_rate = max(runs[1]["ratio_to_ceiling"], runs[2]["ratio_to_ceiling"]) >= TARGET_RATIO
    met_fresh = fresh[0]["p99_s"] < TARGET_P99
    write(
        "end_to_end",
        {
            "machine": info,
            "events": n,
            "partitions": PARTITIONS,
            "consume_flags": extra,
            "ceiling_kafka_python_events_per_s": [round(c) for c in ceilings],
            "sustained": runs,
            "freshness": fresh,
            "target": {"ratio_2_workers": TARGET_RATIO, "p99_at_50pct_s": TARGET_P99},
            "met": {"rate": met_rate, "freshness": met_fresh},
        },
    )


if __name__ == "__main__":
    main()
