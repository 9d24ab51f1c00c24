"""Incremental top-N against exact top-N on the same vectors, while a real stream is learned.

The default model learns the synthetic stream (streamer/datasets/synthetic.py, 50k users,
20k items, as benchmarks/end_to_end.py) in the service's micro-batches of 512; after each
batch it publishes as the publisher does (`items_moved` with the batch's positives and
negatives, then `recommend` for the batch's users) through the incremental lists
(consumers/model/incremental.py, `SearchConfig` defaults but 256 candidates: the lists are
off by default), and the same users are ranked by an exact search over every item on the
same tables and histories. Reported: recall@10 of the incremental lists against the exact
ones (per publish, averaged over users), the share of users ranked without a full search,
and users/s of both per CPU second of this process (one thread; the machine may be shared,
so wall time would count others' work).

    PYTHONPATH=. python benchmarks/incremental_topn.py [--events N] [--candidates C] ...
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import time
from typing import Any

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import describe, machine, pin_threads, verdict, write

USERS, ITEMS = 50_000, 20_000
BATCH, TOP, K = 512, 20, 10
TARGET_RECALL = 0.98


def exact_lists(model: Any, user_rows: np.ndarray) -> np.ndarray:
    """The exact top-`TOP` item rows of these users (watched excluded), as `recommend`'s
    full search computes them with the exact index."""
    import torch

    from consumers.model.topn import top_n

    offsets, watched = model.history.lists(user_rows)
    owners = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
    queries = model.user_table.weight[torch.from_numpy(user_rows)]
    _, rows = top_n(
        queries,
        model.item_table.weight,
        TOP,
        torch.from_numpy(owners),
        torch.from_numpy(watched),
    )
    return rows.numpy()


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = [
        len(set(f[:K].tolist()) & set(t[:K][t[:K] >= 0].tolist())) / max(1, int((t[:K] >= 0).sum()))
        for f, t in zip(found, truth, strict=True)
    ]
    return float(np.mean(hits))


def run(events: int, search_options: dict[str, Any], warm: int) -> dict[str, Any]:
    from consumers.model.base import Batch
    from consumers.model.config import ModelConfig, SearchConfig
    from consumers.model.mf import MatrixFactorization
    from streamer.datasets import open_dataset

    search = dataclasses.replace(SearchConfig(candidates=256), **search_options)
    model = MatrixFactorization(ModelConfig(), search=search)
    lists = model.candidate_lists
    assert lists is not None, "the benchmark measures the incremental lists: candidates > 0"
    stream = open_dataset("synthetic", n_users=USERS, n_items=ITEMS, events=events)
    recalls: list[tuple[int, float]] = []
    incremental_cpu = exact_cpu = 0.0
    ranked = 0
    for number in itertools.count():
        chunk = list(itertools.islice(stream, BATCH))
        if not chunk:
            break
        users = model.users.add_many(e.user for e in chunk)
        items = model.items.add_many(e.item for e in chunk)
        step = model.learn(Batch.of_views(users, items))
        model.items_moved(np.union1d(items, step.negatives).tolist())
        user_rows = np.unique(users)
        started = time.process_time()
        found = model.recommend(user_rows, TOP).items
        incremental = time.process_time() - started
        started = time.process_time()
        truth = exact_lists(model, user_rows)
        exact = time.process_time() - started
        if number >= warm:  # the first batches: every user is new, every search is full
            incremental_cpu += incremental
            exact_cpu += exact
            ranked += user_rows.size
            recalls.append((user_rows.size, recall_at_k(found, truth)))
    weights = np.array([w for w, _ in recalls], dtype=np.float64)
    values = np.array([r for _, r in recalls])
    searched = lists.full_searches + lists.rescored
    return {
        "events": events,
        "publishes_measured": len(recalls),
        "users_ranked": ranked,
        "search": dataclasses.asdict(search),
        "recall@10": round(float(np.average(values, weights=weights)), 4),
        "recall@10_worst_publish": round(float(values.min()), 4),
        "rescored_share": round(lists.rescored / max(1, searched), 3),
        "first_touch_share": round(lists.first_touches / max(1, searched), 3),
        "untrusted_share": round(lists.untrusted / max(1, searched), 3),
        "incremental_users_per_cpu_s": round(ranked / incremental_cpu),
        "exact_users_per_cpu_s": round(ranked / exact_cpu),
        "speedup": round(exact_cpu / incremental_cpu, 2),
        "bytes_per_user": round(lists.nbytes / max(1, len(lists))),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--warm", type=int, default=20, help="publishes not measured")
    parser.add_argument("--candidates", type=int, help="SearchConfig.candidates")
    parser.add_argument("--full-pass-every", type=int, help="SearchConfig.full_pass_every")
    parser.add_argument("--recent-publishes", type=int, help="SearchConfig.recent_publishes")
    args = parser.parse_args()
    options = {
        name: value
        for name in ("candidates", "full_pass_every", "recent_publishes")
        if (value := getattr(args, name)) is not None
    }
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}; one thread")
    result = run(args.events, options, args.warm)
    met = result["recall@10"] >= TARGET_RECALL
    print(
        f"incremental vs exact at {ITEMS:,} items, batch {BATCH}: recall@10 "
        f"{result['recall@10']} (worst publish {result['recall@10_worst_publish']}), "
        f"{result['rescored_share']:.0%} of users without a full search; "
        f"{result['incremental_users_per_cpu_s']:,} vs {result['exact_users_per_cpu_s']:,} "
        f"users/s = {result['speedup']}x; target recall@10 >= {TARGET_RECALL}: {verdict(met)}"
    )
    write(
        "incremental_topn",
        {
            "machine": info,
            "threads": 1,
            "world": {"users": USERS, "items": ITEMS, "batch": BATCH, "top_n": TOP},
            **result,
            "target": {"recall@10": TARGET_RECALL},
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
