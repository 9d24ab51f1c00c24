"""Cold users on MovieLens-100K's test part (the evaluation's last 20%), from their first
view: every event among its user's first `COLD` views (not a re-watch) whose item was
viewed before the micro-batch, ranked by each system as it stood before the micro-batch;
every system learns in micro-batches of `BATCH` (the service's default).

The evaluation's cold-user slice (benchmarks/evaluation/slices.py) scores only users
with a view before the step: at 512 that is 17 of the test part's 964 such events, since
a new user's first views mostly share a micro-batch. Here a user counts from their first
event: a system with a vector for them ranks the candidates (from their features:
features, content, LightFM with features; popularity's list is everyone's), one without
one (mf, history before the user's first learned micro-batch) scores a miss. Candidates:
the items viewed before the step minus the user's earlier views, as in the evaluation.
Writes benchmarks/results/cold_users.json (`--validation`: the validation stretch before the
test part, cold_users-validation.json: where settings are chosen).
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from numpy.typing import NDArray  # noqa: E402

from benchmarks.common import machine_at_end, pin_threads, seed_means, write  # noqa: E402
from benchmarks.evaluation.jobs import OURS, SystemSpec, build_system, load_stream  # noqa: E402
from benchmarks.evaluation.plan import Plan  # noqa: E402
from benchmarks.evaluation.ranking import expected_hit_ndcg, rank_counts  # noqa: E402
from benchmarks.evaluation.slices import COLD  # noqa: E402
from benchmarks.evaluation.splits import split_point  # noqa: E402
from benchmarks.evaluation.stream import EncodedStream, IntArray  # noqa: E402
from benchmarks.evaluation.suite import ML100K  # noqa: E402
from benchmarks.evaluation.systems.base import System  # noqa: E402
from benchmarks.evaluation.systems.online import OnlineLearnerSystem  # noqa: E402
from benchmarks.model_grid import validation_stream  # noqa: E402

BATCH = 512
K = 10
PEERS = ("popularity", "lightfm-warp-features")


def spec(name: str, seed: int, plan: Plan) -> SystemSpec:
    """One of our `--model` values, or a peer with the evaluation's default settings;
    `model@key=value,...` is one of ours with those settings changed (a JSON value each),
    e.g. `features@negative_power=0.5`."""
    if name in PEERS:
        return SystemSpec(name, {**plan.default_params.get(name, {}), "step": BATCH}, seed)
    model, _, changes = name.partition("@")
    settings = dict(change.split("=") for change in changes.split(",") if change)
    params = {key: json.loads(value) for key, value in settings.items()}
    return SystemSpec(OURS, {"model": model, "step": BATCH, **params}, seed, name=name)


def user_scores(
    system: System, stream: EncodedStream, users: IntArray, items: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Scores of the first `items` items per user, and which users the system has a
    vector for (our learners: a row in the model, from a view or from features)."""
    if not isinstance(system, OnlineLearnerSystem):
        return np.asarray(system.scores(users, items), dtype=np.float64), np.ones(
            users.size, dtype=bool
        )
    model = system.learner.model
    raws = [stream.user_ids[int(user)] for user in users]
    known = np.array([raw in model.users for raw in raws], dtype=bool)
    scores = np.zeros((users.size, items))
    if known.any():
        rows = np.array([model.users.row(raw) for raw, ok in zip(raws, known, strict=True) if ok])
        item_rows = np.array([model.items.row(raw) for raw in stream.item_ids[:items]])
        scores[known] = model.score(rows, item_rows)
    return scores, known


def cold_user_quality(
    name: str, seed: int, plan: Plan, validation: bool = False
) -> dict[str, float]:
    """Cold users of the test part, or of the validation stretch before it."""
    if validation:
        stream, start = validation_stream(plan)
    else:
        stream = load_stream(ML100K)
        start = split_point(len(stream), 1.0 - plan.test_fraction)
    system = build_system(spec(name, seed, plan), BATCH, 64)
    system.fit(stream, start)
    hits: list[float] = []
    gains: list[float] = []
    ranked = 0
    for a in range(start, len(stream), BATCH):
        b = min(a + BATCH, len(stream))
        items = stream.items_before(a)
        positions = np.arange(a, b)[
            (stream.history_len[a:b] < COLD) & ~stream.rewatch[a:b] & (stream.items[a:b] < items)
        ]
        if positions.size:
            scores, known = user_scores(system, stream, stream.users[positions], items)
            ranked += int(known.sum())
            for row, position, ok in zip(scores, positions.tolist(), known, strict=True):
                hit, gain = (
                    expected_hit_ndcg(
                        *rank_counts(row, int(stream.items[position]), stream.history(position)),
                        K,
                    )
                    if ok
                    else (0.0, 0.0)
                )
                hits.append(hit)
                gains.append(gain)
        system.update(stream, a, b)
    return {
        "hr@10": float(np.mean(hits)),
        "ndcg@10": float(np.mean(gains)),
        "events": len(hits),
        "ranked": ranked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default="mf,history,features,content," + ",".join(PEERS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--validation", action="store_true", help="score the validation stretch, not the test"
    )
    args = parser.parse_args()
    pin_threads()
    plan = Plan()
    results: dict[str, Any] = {}
    for name in args.systems.split(","):
        runs = [cold_user_quality(name, seed, plan, args.validation) for seed in range(args.seeds)]
        results[name] = {
            **seed_means(runs),
            "hr@10_sd": float(np.std([run["hr@10"] for run in runs])),
        }
        print(json.dumps({name: results[name]}), flush=True)
    info = machine_at_end()
    write(
        "cold_users-validation" if args.validation else "cold_users",
        {
            "machine": info,
            "load": "a 2-core machine shared with three other sessions' tests and benchmarks",
            "micro_batch": BATCH,
            "cold_below_views": COLD,
            "seeds": args.seeds,
            "part": "validation" if args.validation else "test",
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
