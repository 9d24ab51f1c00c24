"""Publishing: users/s written to Redis by RedisStore.publish, against a bare redis-py
pipeline writing the same bytes (the ceiling), on a Redis of our own.

A publication is what the publisher writes per micro-batch of 512 events: 512 users
(top-20 JSON list + 64-d vector each), 700 touched item vectors, 400 similar-item lists,
the popular list and the meta hash. Users/s counts the users of whole publications.

Measured in the same run:
- store: RedisStore.publish (encoding included: JSON lists, key names, float32 bytes);
- store, pipelined SETs: the same encoding written with one SET per key (how
  RedisStore.publish wrote before it used MSET; kept here as the before/after);
- ceiling: a bare redis-py pipeline of SETs of the pre-encoded bytes (the issue's ceiling);
- bare MSET: the same pre-encoded bytes in MSET commands (the ceiling of the MSET path).

    PYTHONPATH=. python benchmarks/publish.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import (
    Service,
    Timer,
    describe,
    machine,
    pin_threads,
    verdict,
    write,
)

USERS, ITEMS_TOUCHED, SIMILAR, TOP, DIM = 512, 700, 400, 20, 64
TARGET = 0.6


def publications(count: int, seed: int = 0) -> list[Any]:
    from consumers.sinks.schema import Publication, RankedList

    rng = np.random.default_rng(seed)
    out = []
    for version in range(count):
        users = rng.integers(0, 10_000_000, USERS)
        items = rng.integers(0, 1_000_000, ITEMS_TOUCHED)

        def ranked() -> RankedList:
            tops = rng.integers(0, 1_000_000, TOP)
            scores = -np.sort(-rng.standard_normal(TOP).astype(np.float32))
            return RankedList([f"item-{i}" for i in tops.tolist()], scores)

        out.append(
            Publication(
                model="mf-bpr",
                version=version,
                updated_at=1.7e9 + version,
                user_tops={f"user-{u}": ranked() for u in users.tolist()},
                user_vectors={
                    f"user-{u}": rng.standard_normal(DIM).astype(np.float32) for u in users.tolist()
                },
                item_vectors={
                    f"item-{i}": rng.standard_normal(DIM).astype(np.float32) for i in items.tolist()
                },
                item_similar={f"item-{i}": ranked() for i in items[:SIMILAR].tolist()},
                popular=ranked(),
                meta={"model": "mf-bpr", "dim": DIM, "version": version, "users": 1, "items": 1},
            )
        )
    return out


def rates(users: int, runs: dict[str, Callable[[], None]], rounds: int = 5) -> dict[str, float]:
    """Best users/s of each run over `rounds`, the runs interleaved (a busy machine's
    slow spells then hit every run alike)."""
    best = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, run in runs.items():
            with Timer() as t:
                run()
            best[name] = max(best[name], users / t.seconds)
    return best


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}")
    import redis

    from consumers.sinks.redis import RedisStore
    from consumers.sinks.schema import Keys, string_writes

    count = 10 if args.quick else 30
    pubs = publications(count)
    keys = Keys("bench:")
    encoded = [(string_writes(p, keys), {k: str(v) for k, v in p.meta.items()}) for p in pubs]
    users = count * USERS
    with Service("redis") as url:
        client = redis.Redis.from_url(url)
        store = RedisStore(client, "bench:")

        def ours() -> None:
            for publication in pubs:
                store.publish(publication)

        def ours_sets() -> None:  # the encoding of `ours`, written with one SET per key
            for publication in pubs:
                pipe = client.pipeline(transaction=False)
                for key, value in string_writes(publication, keys).items():
                    pipe.set(key, value)
                pipe.hset(keys.meta, mapping=dict(publication.meta))
                pipe.execute()

        def bare_pipeline() -> None:
            for writes, meta in encoded:
                pipe = client.pipeline(transaction=False)
                for key, value in writes.items():
                    pipe.set(key, value)
                pipe.hset(keys.meta, mapping=meta)
                pipe.execute()

        def bare_mset() -> None:
            for writes, meta in encoded:
                pipe = client.pipeline(transaction=False)
                pipe.mset(writes)
                pipe.hset(keys.meta, mapping=meta)
                pipe.execute()

        runs = {
            "ceiling_bare_pipeline_sets": bare_pipeline,
            "bare_mset": bare_mset,
            "store_publish": ours,
            "store_encoding_with_pipelined_sets": ours_sets,
        }
        measured = rates(users, runs)
        written = sum(len(w) + 1 for w, _ in encoded) // count
        payload = sum(sum(len(v) for v in w.values()) for w, _ in encoded) // count
        client.flushdb()
        client.close()
    ceiling = measured["ceiling_bare_pipeline_sets"]
    for name, value in measured.items():
        print(f"{name:>36}: {value:>10,.0f} users/s  ({value / ceiling:.2f} of the ceiling)")
    ratio = measured["store_publish"] / ceiling
    met = ratio >= TARGET
    print(
        f"RedisStore.publish at {ratio:.2f} of the bare pipeline (target {TARGET}): {verdict(met)}"
    )
    write(
        "publish",
        {
            "machine": info,
            "publication": {
                "users": USERS,
                "item_vectors": ITEMS_TOUCHED,
                "similar_lists": SIMILAR,
                "top_n": TOP,
                "dim": DIM,
                "keys_written": written,
                "value_bytes": payload,
            },
            "publications": count,
            "users_per_s": {k: round(v) for k, v in measured.items()},
            "ratio_to_ceiling": {k: round(v / ceiling, 3) for k, v in measured.items()},
            "target_ratio": TARGET,
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
