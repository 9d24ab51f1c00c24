"""Cold items on MovieLens-100K: the evaluation's prequential protocol
(benchmarks/evaluation/prequential.py, chunks of the plan's 1,000 events, every system
learning in micro-batches of `BATCH`, the service's default) restricted to events whose
item had fewer than `COLD` earlier views (benchmarks/evaluation/slices.py).

Two sets, as the evaluation's: common (user and item seen before the event's chunk, so
a cold item there has 1 to 4 earlier views; the same events and candidates for every
system) and own (user seen before the system's micro-batch; an item new since then is a
miss). Beside them: HR@10 of the common events whose item is not cold (warm), and of all
of them. `--validation`: from `--start` to the end of the stretch before the test part
(where settings are chosen; cold_items-validation.json), else the test part (the last
20%; cold_items.json). Systems are named as in benchmarks/cold_users.py:
`features@negative_power=0.5` is `features` with that setting changed.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.cold_users import BATCH, spec  # noqa: E402
from benchmarks.common import machine_at_end, pin_threads, seed_means, write  # noqa: E402
from benchmarks.evaluation.jobs import build_system, load_stream  # noqa: E402
from benchmarks.evaluation.plan import Plan  # noqa: E402
from benchmarks.evaluation.prequential import run_prequential  # noqa: E402
from benchmarks.evaluation.slices import COLD, cold_slices  # noqa: E402
from benchmarks.evaluation.splits import split_point  # noqa: E402
from benchmarks.evaluation.suite import ML100K  # noqa: E402
from benchmarks.model_grid import validation_stream  # noqa: E402

K = 10


def cold_item_quality(name: str, seed: int, plan: Plan, start: int | None) -> dict[str, float]:
    """HR@10 on the cold-item events from `start` of the validation stretch (None: of
    the test part)."""
    if start is None:
        stream = load_stream(ML100K)
        start = split_point(len(stream), 1.0 - plan.test_fraction)
    else:
        stream, _ = validation_stream(plan)
    system = build_system(spec(name, seed, plan), BATCH, 64)
    trace = run_prequential(stream, system, start, plan.chunk, K)
    cold = cold_slices(stream, start)["cold items"]
    common = ~np.isnan(trace.common_hit)
    own = ~np.isnan(trace.own_hit)
    return {
        "cold common events": int((cold & common).sum()),
        "cold common hr@10": float(trace.common_hit[cold & common].mean()),
        "cold own events": int((cold & own).sum()),
        "cold own hr@10": float(trace.own_hit[cold & own].mean()),
        "warm common hr@10": float(trace.common_hit[~cold & common].mean()),
        "common hr@10": float(trace.common_hit[common].mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--systems",
        default="mf,features,content,history,lightfm-warp-features",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--validation", action="store_true", help="score the validation stretch, not the test"
    )
    parser.add_argument("--start", type=int, default=40_000, help="with --validation")
    args = parser.parse_args()
    pin_threads()
    plan = Plan()
    start = args.start if args.validation else None
    results: dict[str, Any] = {}
    for name in args.systems.split(","):
        runs = [cold_item_quality(name, seed, plan, start) for seed in range(args.seeds)]
        results[name] = {
            **seed_means(runs),
            "cold common hr@10 per seed": [run["cold common hr@10"] for run in runs],
            "warm common hr@10 per seed": [run["warm common hr@10"] for run in runs],
        }
        print(json.dumps({name: results[name]}), flush=True)
    info = machine_at_end()
    write(
        "cold_items-validation" if args.validation else "cold_items",
        {
            "machine": info,
            "load": "a 2-core machine shared with two other sessions' tests and benchmarks",
            "micro_batch": BATCH,
            "chunk": plan.chunk,
            "cold_below_views": COLD,
            "seeds": args.seeds,
            "part": f"validation from event {args.start}" if args.validation else "test",
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
