"""Coalescing: end to end with 2 workers and checkpoints on (at the default interval),
publishing every batch (`--publish-interval-s 0`) against publishing at most once per
interval, on the machinery of benchmarks/end_to_end.py (its world, topic, broker, Redis
and probes): the sustained events/s of each, then freshness p50/p99 of each at the same
offered rates, 50% and 80% of the every-batch sustained rate, and of each coalescing
variant at 80% of its own sustained rate (the issue's target: p99 < 1 s there).

    PYTHONPATH=. python benchmarks/coalescing.py [--events N] [--intervals 0 0.1 0.25]
"""

from __future__ import annotations

import argparse
import sys
import uuid
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks import end_to_end
from benchmarks.common import Service, describe, machine, pin_threads, write

SHARES = (0.5, 0.8)  # of the every-batch sustained rate: the same load for every variant
OWN_SHARE = 0.8  # of a coalescing variant's own sustained rate
FRESHNESS_S = 10.0


def flags(interval: float) -> list[str]:
    """Checkpoints stay on at the default interval (end_to_end's learners keep them)."""
    return ["--publish-interval-s", str(interval)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--intervals", type=float, nargs="+", default=[0.0, 0.1, 0.25])
    parser.add_argument("--suffix", default="", help="write results/coalescing_SUFFIX.json")
    args = parser.parse_args()
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}")
    n = args.events
    events = end_to_end.payloads(n)
    runs: list[dict[str, Any]] = []
    with Service("kafka") as bootstrap, Service("redis") as redis_url:
        topic = f"bench.views.{uuid.uuid4().hex[:8]}"
        end_to_end.fill(bootstrap, topic, events)
        ceiling = end_to_end.raw_read_rate(bootstrap, topic, n)
        print(f"{n:,} events; kafka-python alone: {ceiling:,.0f} events/s")

        for interval in args.intervals:
            run = end_to_end.sustained_rate(bootstrap, redis_url, topic, 0, n, 2, flags(interval))
            run["publish_interval_s"] = interval
            run["ratio_to_ceiling"] = round(run["events_per_s"] / ceiling, 3)
            runs.append(run)
            print(f"interval {interval} s: {run['events_per_s']:,} events/s")
        base = runs[0]["events_per_s"]
        for run in runs:
            run["freshness"] = []
            own = [] if run is runs[0] else [(OWN_SHARE, run["events_per_s"], "own")]
            for share, rate, of in [*((s, base, "every_batch") for s in SHARES), *own]:
                point = end_to_end.freshness(
                    bootstrap,
                    redis_url,
                    share * rate,
                    FRESHNESS_S,
                    2,
                    flags(run["publish_interval_s"]),
                )
                point[f"share_of_{of}_rate"] = share
                run["freshness"].append(point)
                print(f"interval {run['publish_interval_s']} s at {share:.0%} of {of}: {point}")
    write(
        f"coalescing_{args.suffix}" if args.suffix else "coalescing",
        {
            "machine": info,
            "events": n,
            "workers": 2,
            "checkpoints": "on, default interval",
            "ceiling_kafka_python_events_per_s": round(ceiling),
            "runs": runs,
        },
    )


if __name__ == "__main__":
    main()
