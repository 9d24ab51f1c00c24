"""Choose the rating model's settings on ML-100K's validation part; report the test part once.

    PYTHONPATH=. python benchmarks/rating_grid.py --grid '[{}, {"learning_rate": 0.05}]'
    PYTHONPATH=. python benchmarks/rating_grid.py --report --seeds 3

Grid (default): progressive RMSE/MAE (benchmarks/evaluation/rating.py) of `--model
rating` with each config change, updated every `--step` events, over the stream before
its test part (the first 80%, which is all a choice may see), River's BiasedMF at the
same cadence on the same events as the bar. `--report`: every predictor of the
evaluation plan (River per event and at 512, ours at its defaults) over the whole
stream, its test part (last 20%) scored apart, `--seeds` each. Writes
benchmarks/results/rating_grid.json or rating_report.json with the machine and its load.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import machine_at_end, pin_threads, write  # noqa: E402
from benchmarks.evaluation.jobs import load_stream  # noqa: E402
from benchmarks.evaluation.plan import Plan  # noqa: E402
from benchmarks.evaluation.rating import (  # noqa: E402
    RatingJob,
    RatingResult,
    progressive_errors,
    run_rating_job,
)
from benchmarks.evaluation.splits import split_point  # noqa: E402
from benchmarks.evaluation.suite import ML100K  # noqa: E402
from benchmarks.evaluation.systems.recstream_rating import RecstreamRatingSystem  # noqa: E402


def _mean_row(label: dict[str, Any], results: list[RatingResult]) -> dict[str, Any]:
    row: dict[str, Any] = {**label, "system": results[0].system, "step": results[0].step}
    for metric in ("rmse", "mae", "test_rmse", "test_mae", "seconds"):
        values = [getattr(result, metric) for result in results]
        row[metric], row[f"{metric}_std"] = float(np.mean(values)), float(np.std(values))
    return row


def grid(changes: list[dict[str, Any]], step: int, seeds: int) -> list[dict[str, Any]]:
    stream = load_stream(ML100K)
    validation = stream.events[: split_point(len(stream.events), 1.0 - Plan().test_fraction)]
    rows = []
    if importlib.util.find_spec("river") is not None:
        from benchmarks.evaluation.systems.river_rating import RiverRatingSystem

        river = [
            progressive_errors(validation, RiverRatingSystem("river-biasedmf", seed, step))
            for seed in range(seeds)
        ]
        rows.append(_mean_row({"params": "river-biasedmf"}, river))
        print(json.dumps(rows[-1]), flush=True)
    for change in changes:
        ours = [
            progressive_errors(
                validation, RecstreamRatingSystem(step, stream.features, seed, change)
            )
            for seed in range(seeds)
        ]
        rows.append(_mean_row({"params": change}, ours))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def report(seeds: int) -> list[dict[str, Any]]:
    plan = Plan()
    rows = []
    for kind, step in plan.rating_predictors:
        jobs = [
            RatingJob(ML100K.name, kind, step, seed, plan.test_fraction) for seed in range(seeds)
        ]
        rows.append(_mean_row({}, [run_rating_job(job) for job in jobs]))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--grid", default="[{}]", help="JSON list of config changes")
    parser.add_argument("--step", type=int, default=512, help="update every (default 512)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--report", action="store_true", help="the plan's rows, test part once")
    args = parser.parse_args()
    pin_threads()
    rows = report(args.seeds) if args.report else grid(json.loads(args.grid), args.step, args.seeds)
    info = machine_at_end()
    write(
        "rating_report" if args.report else "rating_grid",
        {"step": args.step, "seeds": args.seeds, "machine": info, "rows": rows},
    )


if __name__ == "__main__":
    main()
