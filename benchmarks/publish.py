"""Publishing: users/s that a publication's building, encoding and writing to Redis
allow, the publisher's batch path against the per-list path it replaced, and against a
bare redis-py pipeline writing the same bytes (the ceiling), on a Redis of our own.

A publication is what the publisher writes per micro-batch of 512 events: 512 users
(top-20 JSON list + 64-d vector each), 700 touched item vectors, 400 similar-item lists,
the popular list and the meta hash, from what the model hands over (rankings as arrays
of scores and item rows, vectors as matrices, ids from a registry of 100k items). Users/s
counts the users of whole publications; top-N itself is not in it.

Measured in the same run, interleaved:
- batch: `BatchEncoder.strings` (item ids' JSON cached per row, scores in one orjson
  call per batch, vectors sliced from one buffer) then `RedisStore.publish` (MSET packed
  by us, on its own connection): what the publisher does now;
- batch, redis-py packing: the same encoding written by a redis-py pipeline of MSETs;
- per list: a `RankedList` per list and a vector per key, encoded one key at a time by
  `string_writes`, written by a redis-py pipeline of MSETs (the publisher before);
- ceiling: a bare redis-py pipeline of SETs of the pre-encoded bytes (the issue's ceiling);
- bare MSET: the same pre-encoded bytes in redis-py MSET commands.

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

USERS, ITEMS_TOUCHED, SIMILAR, TOP, DIM, CATALOGUE = 512, 700, 400, 20, 64, 100_000
TARGET = 0.6
MSET_KEYS = 1000
ITEM_IDS = [f"item-{row}" for row in range(CATALOGUE)]


def item_ids(rows: list[int]) -> list[Any]:
    return [ITEM_IDS[row] for row in rows]


def batches(count: int, seed: int = 0) -> list[dict[str, Any]]:
    """What the publisher holds per micro-batch: ids, rankings and vectors as arrays."""
    from consumers.sinks.schema import RankedRows, Stamp, VectorRows

    rng = np.random.default_rng(seed)

    def ranking(rows: int) -> tuple[np.ndarray, np.ndarray]:
        scores = -np.sort(-rng.standard_normal((rows, TOP)).astype(np.float32), axis=1)
        return scores, rng.integers(0, CATALOGUE, (rows, TOP))

    out = []
    for version in range(count):
        users = [f"user-{u}" for u in rng.integers(0, 10_000_000, USERS).tolist()]
        touched = item_ids(rng.integers(0, CATALOGUE, ITEMS_TOUCHED).tolist())
        popular_scores, popular_items = ranking(1)
        out.append(
            {
                "stamp": Stamp("mf-bpr", version, 1.7e9 + version),
                "user_tops": RankedRows(users, *ranking(USERS)),
                "user_vectors": VectorRows(users, rng.standard_normal((USERS, DIM), np.float32)),
                "item_vectors": VectorRows(
                    touched, rng.standard_normal((ITEMS_TOUCHED, DIM), np.float32)
                ),
                "item_similar": RankedRows(touched[:SIMILAR], *ranking(SIMILAR)),
                "popular": (item_ids(popular_items[0].tolist()), popular_scores[0].tolist()),
                "meta": {"model": "mf-bpr", "dim": DIM, "version": version, "users": 1},
            }
        )
    return out


def per_list(batch: dict[str, Any]) -> Any:
    """The publication as the publisher built it before: an object per list and vector."""
    from consumers.sinks.schema import Publication, RankedList

    def lists(rows: Any) -> dict[Any, RankedList]:
        kept = np.isfinite(rows.scores).sum(axis=1).tolist()
        items = rows.items.tolist()
        return {
            name: RankedList(item_ids(items[i][:n]), rows.scores[i, :n])
            for i, (name, n) in enumerate(zip(rows.ids, kept, strict=True))
        }

    vectors = batch["user_vectors"], batch["item_vectors"]
    return Publication(
        *batch["stamp"],
        user_tops=lists(batch["user_tops"]),
        user_vectors=dict(zip(vectors[0].ids, vectors[0].vectors, strict=True)),
        item_vectors=dict(zip(vectors[1].ids, vectors[1].vectors, strict=True)),
        item_similar=lists(batch["item_similar"]),
        popular=RankedList(*batch["popular"]),
        meta=batch["meta"],
    )


def batched(batch: dict[str, Any], encoder: Any) -> Any:
    """The publication as the publisher builds it now."""
    from consumers.sinks.schema import Publication, RankedList

    parts = ("user_tops", "user_vectors", "item_vectors", "item_similar")
    return Publication(
        *batch["stamp"],
        popular=RankedList(*batch["popular"]),
        meta=batch["meta"],
        encoded=encoder.strings(batch["stamp"], *(batch[part] for part in parts)),
    )


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
    from consumers.sinks.schema import BatchEncoder, Keys, string_writes

    count = 10 if args.quick else 30
    held = batches(count)
    keys = Keys("bench:")
    encoder = BatchEncoder(keys, item_ids)
    encoded = [
        (string_writes(per_list(b), keys), {k: str(v) for k, v in b["meta"].items()}) for b in held
    ]
    assert encoded == [  # the same bytes either way (tests/test_schema.py checks it too)
        (string_writes(batched(b, encoder), keys), meta)
        for b, (_, meta) in zip(held, encoded, strict=True)
    ]
    users = count * USERS
    with Service("redis") as url:
        client = redis.Redis.from_url(url)
        store = RedisStore(client, "bench:")

        def redis_py_mset(writes: dict[str, bytes], meta: dict[str, str]) -> None:
            pipe, pairs = client.pipeline(transaction=False), list(writes.items())
            for start in range(0, len(pairs), MSET_KEYS):
                pipe.mset(dict(pairs[start : start + MSET_KEYS]))
            pipe.hset(keys.meta, mapping=meta)
            pipe.execute()

        def batch_path() -> None:
            for b in held:
                store.publish(batched(b, encoder))

        def batch_redis_py() -> None:
            for b, (_, meta) in zip(held, encoded, strict=True):
                redis_py_mset(string_writes(batched(b, encoder), keys), meta)

        def per_list_path() -> None:
            for b, (_, meta) in zip(held, encoded, strict=True):
                redis_py_mset(string_writes(per_list(b), keys), meta)

        def bare_pipeline() -> None:
            for writes, meta in encoded:
                pipe = client.pipeline(transaction=False)
                for key, value in writes.items():
                    pipe.set(key, value)
                pipe.hset(keys.meta, mapping=meta)
                pipe.execute()

        def bare_mset() -> None:
            for writes, meta in encoded:
                redis_py_mset(writes, meta)

        runs = {
            "ceiling_bare_pipeline_sets": bare_pipeline,
            "bare_mset": bare_mset,
            "batch_store_publish": batch_path,
            "batch_encoding_redis_py_mset": batch_redis_py,
            "per_list_encoding_redis_py_mset": per_list_path,
        }
        measured = rates(users, runs)
        written = sum(len(w) + 1 for w, _ in encoded) // count
        payload = sum(sum(len(v) for v in w.values()) for w, _ in encoded) // count
        client.flushdb()
        store.close()
    ceiling = measured["ceiling_bare_pipeline_sets"]
    for name, value in measured.items():
        print(f"{name:>36}: {value:>10,.0f} users/s  ({value / ceiling:.2f} of the ceiling)")
    ratio = measured["batch_store_publish"] / ceiling
    speedup = measured["batch_store_publish"] / measured["per_list_encoding_redis_py_mset"]
    met = ratio >= TARGET
    print(f"batch path / per-list path (before): {speedup:.2f}x")
    print(f"batch path at {ratio:.2f} of the bare pipeline (target {TARGET}): {verdict(met)}")
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
                "catalogue": CATALOGUE,
                "keys_written": written,
                "value_bytes": payload,
            },
            "publications": count,
            "users_per_s": {k: round(v) for k, v in measured.items()},
            "ratio_to_ceiling": {k: round(v / ceiling, 3) for k, v in measured.items()},
            "batch_over_per_list": round(speedup, 2),
            "target_ratio": TARGET,
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
