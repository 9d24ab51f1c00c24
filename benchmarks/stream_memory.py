"""Memory of a running learner: resident bytes of one `OnlineLearner` and its `Publisher` (default
settings, in-memory store) along a stream of a constant set of users and items.

The stream: `--users` users (uniform activity) and `--items` items (Zipf 1.1
popularity), every id known from the first event, so any growth after the first
million events is the learner's, not new ids'. Reported at every `--every` events:
VmRSS, the history's own bytes (the watched pairs that top-N lists exclude: they grow
with *distinct* pairs, which a stream of constant users still adds) and the served
lists' count. Run it from any checkout (the "before" one too):

    PYTHONPATH=. python benchmarks/stream_memory.py --events 5000000 --label after
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import RESULTS, describe, machine, pin_threads

BATCH = 512  # `consume`'s default --batch-size


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=5_000_000)
    parser.add_argument("--every", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--label", default="after")
    args = parser.parse_args()
    pin_threads(1)
    import numpy as np

    from consumers.learner import OnlineLearner
    from consumers.model.config import ModelConfig
    from consumers.model.mf import MatrixFactorization
    from consumers.publisher import Publisher
    from consumers.sinks.memory import MemoryStore
    from streamer.events import ViewEvent

    info = machine()
    print(f"machine: {describe(info)}")
    rng = np.random.default_rng(0)
    weights = 1.0 / np.arange(1, args.items + 1) ** 1.1
    cumulative = np.cumsum(weights / weights.sum())
    users = [f"u{n}" for n in range(args.users)]
    items = [f"i{n}" for n in range(args.items)]
    learner = OnlineLearner(MatrixFactorization(ModelConfig()))
    publisher = Publisher(learner, MemoryStore())
    history = learner.model.history
    started, points, done = time.perf_counter(), [], 0
    while done < args.events:
        user_rows = rng.integers(0, args.users, BATCH)
        item_rows = np.minimum(np.searchsorted(cumulative, rng.random(BATCH)), args.items - 1)
        ts = 1.7e9 + done / 1000
        events = [
            ViewEvent(users[u], items[i], ts) for u, i in zip(user_rows, item_rows, strict=True)
        ]
        publisher.add(learner.learn(events, publisher.served))
        done += BATCH
        if done // args.every != (done - BATCH) // args.every:
            point = {
                "events": done,
                "rss_bytes": rss(),
                "history_bytes": getattr(history, "nbytes", None),  # absent before the fix
                "history_pairs": int(history.counts(np.arange(history.users)).sum()),
                "served_users": len(publisher.served),
                "seconds": round(time.perf_counter() - started, 1),
            }
            points.append(point)
            print(json.dumps(point), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"stream_memory_{args.label}.json"
    report = {
        "benchmark": "stream_memory",
        "label": args.label,
        "machine": info,
        "users": args.users,
        "items": args.items,
        "batch": BATCH,
        "points": points,
    }
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
