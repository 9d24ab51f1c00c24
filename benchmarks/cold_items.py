"""Cold items on MovieLens-100K: how the models rank an item that had fewer than
`COLD` earlier views, at the moment a user views it (prequential: each micro-batch
scored by the model as it stood before it, then learned).

Every model gets the stream's feature records first (mf ignores them). A hit is the
viewed item in the user's top 10 of every item known then, the user's earlier views
left out; only events of users seen before count. Writes
benchmarks/results/cold_items.json (`--events` the stream's first views).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from benchmarks.common import machine, pin_threads, write
from benchmarks.evaluation.data import movielens_100k, movielens_100k_features
from consumers.learner import OnlineLearner
from consumers.model.factory import ModelName, make_config, make_model
from consumers.quality import ServedLists

COLD = 5
BATCH = 512
K = 10


def cold_item_quality(name: ModelName, events: int, seed: int) -> dict[str, float]:
    learner = OnlineLearner(make_model(name, make_config(name, {"seed": seed})))
    model = learner.model
    for record in movielens_100k_features():
        learner.learn_features(record)
    stream = movielens_100k()[:events]
    views: dict[str, int] = {}
    hits, ranks, scored = 0, [], 0
    started = time.perf_counter()
    for start in range(0, len(stream), BATCH):
        batch = stream[start : start + BATCH]
        cold = [
            e
            for e in batch
            if views.get(str(e.item), 0) < COLD and model.users.row(e.user) is not None
        ]
        if cold and len(model.items):
            users = np.array([model.users.row(e.user) for e in cold], dtype=np.int64)
            catalogue = np.arange(len(model.items), dtype=np.int64)
            scores = model.score(users, catalogue)
            for row, (event, user) in enumerate(zip(cold, users.tolist(), strict=True)):
                watched = model.history.items(user)
                scores[row, watched] = -np.inf
                item = model.items.row(event.item)
                if item is None:  # mf: an item never viewed has no row
                    ranks.append(len(model.items))
                    continue
                rank = int((scores[row] > scores[row, item]).sum())
                ranks.append(rank)
                hits += rank < K
            scored += len(cold)
        learner.learn(batch, ServedLists(K))
        for e in batch:
            views[str(e.item)] = views.get(str(e.item), 0) + 1
    return {
        "cold_events": scored,
        "hr@10": hits / max(scored, 1),
        "median_rank": float(np.median(ranks)) if ranks else float("nan"),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", default="mf,features,content")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pin_threads()
    results = {
        name: cold_item_quality(name, args.events, args.seed)  # type: ignore[arg-type]
        for name in args.models.split(",")
    }
    report = {
        "machine": machine(),
        "load": "a 2-core machine shared with other sessions' tests and benchmarks",
        "events": args.events,
        "cold_below_views": COLD,
        "results": results,
    }
    print(json.dumps(results, indent=2))
    write("cold_items", report)


if __name__ == "__main__":
    main()
