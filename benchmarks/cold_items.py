"""Cold items on MovieLens-100K: how the models rank an item that had fewer than
`COLD` earlier views, at the moment a user views it (prequential: each micro-batch
scored by the model as it stood before it, then learned).

Every model gets the stream's feature records first (mf ignores them). A hit is the
viewed item in the user's top 10 among it and every item viewed before (the user's
own views left out; an item is registered with every model when it is scored, so mf
ranks an item never viewed by its fresh random row); only events of users who viewed
something before count (the same events for every model). Writes
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
    seen_users: set[str] = set()
    hits, ranks, scored = 0, [], 0
    started = time.perf_counter()
    for start in range(0, len(stream), BATCH):
        batch = stream[start : start + BATCH]
        cold = [e for e in batch if views.get(str(e.item), 0) < COLD and str(e.user) in seen_users]
        if cold:
            # Candidates: the items viewed before (as mf knows them) and the viewed one.
            known = np.fromiter((model.items.add(raw) for raw in views), np.int64, len(views))
            users = np.fromiter((model.users.add(e.user) for e in cold), np.int64, len(cold))
            for event, user in zip(cold, users.tolist(), strict=True):
                item = model.items.add(event.item)
                unwatched = np.setdiff1d(known, model.history.items(user))
                candidates = np.union1d(unwatched, [item])
                scores = model.score(np.array([user]), candidates)[0]
                target = scores[np.searchsorted(candidates, item)]
                rank = int((scores > target).sum())
                ranks.append(rank)
                hits += rank < K
            scored += len(cold)
        learner.learn(batch, ServedLists(K))
        for e in batch:
            views[str(e.item)] = views.get(str(e.item), 0) + 1
            seen_users.add(str(e.user))
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
