"""What each job of the full evaluation costs here, and how long the full run will take.

    PYTHONPATH=. python benchmarks/evaluation_cost.py --models mf,history,sequence

Times one seed of every evaluation job (all three streams), one grid point of every
peer's tuning job and every rating job, in this one process with one thread, untuned
parameters. The full run's estimate: each tuning job's seconds times its grid's size,
each evaluation job's times the seeds, then each phase's jobs laid longest-first on
`--workers` processes (tuning, evaluation, ratings: one after the other, as
`evaluate.py` runs them). Writes benchmarks/results/evaluation_cost.json.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import heapq  # noqa: E402
import time  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any  # noqa: E402

from benchmarks.common import machine, pin_threads, write  # noqa: E402
from benchmarks.evaluation.jobs import run_eval_job  # noqa: E402
from benchmarks.evaluation.plan import Plan  # noqa: E402
from benchmarks.evaluation.rating import RatingJob, run_rating_job  # noqa: E402
from benchmarks.evaluation.suite import (  # noqa: E402
    ML100K,
    available_peers,
    base_params,
    evaluation_jobs,
    layout,
    tune_jobs,
)
from benchmarks.evaluation.tuning import run_tune_job  # noqa: E402


def makespan(seconds: list[float], workers: int) -> float:
    """Wall seconds of `seconds` laid longest-first on `workers` processes."""
    finish = [0.0] * workers
    for cost in sorted(seconds, reverse=True):
        heapq.heapreplace(finish, finish[0] + cost)
    return max(finish)


def _timed(work: Any, job: Any) -> float:
    began = time.perf_counter()
    work(job)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="mf", help="our --model values, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-tuning", action="store_true", help="time the evaluation jobs only")
    args = parser.parse_args()
    pin_threads()
    info = machine()
    plan = Plan().with_models(tuple(args.models.split(",")))
    seeds = len(plan.seeds)
    at = layout(plan)
    peers, missing = available_peers(plan)
    jobs = evaluation_jobs(plan, at, base_params(plan, peers), {}, diagnostics=True)
    evaluation: list[dict[str, Any]] = []
    for part, part_jobs in jobs.items():
        for job in part_jobs:
            if job.system.seed != plan.seeds[0]:
                continue
            runs = 1 if part == "diagnostics" or job.system.kind.startswith("popularity") else seeds
            seconds = _timed(run_eval_job, job)
            evaluation.append(
                {"part": part, "job": job.system.label, "seconds_one_seed": seconds}
                | {"runs": runs, "seconds_estimate": seconds * runs}
            )
            print(evaluation[-1], flush=True)
    ratings = {
        f"{kind}@{step}": _timed(run_rating_job, RatingJob(ML100K.name, kind, step))
        for kind, step in plan.rating_predictors
    }
    print(ratings, flush=True)
    # the tuning jobs last: the longest, and estimated from their first grid point
    tuning: list[dict[str, Any]] = []
    for job in [] if args.no_tuning else tune_jobs(plan, at, peers):
        seconds = _timed(run_tune_job, replace(job, grid=job.grid[:1]))
        tuning.append(
            {"stream": job.stream.name, "job": job.kind, "seconds_one_point": seconds}
            | {"grid": len(job.grid), "seconds_estimate": seconds * len(job.grid)}
        )
        print(tuning[-1], flush=True)
    eval_seconds = [row["seconds_one_seed"] for row in evaluation for _ in range(row["runs"])]
    estimate = {
        "tuning": makespan([row["seconds_estimate"] for row in tuning], args.workers),
        "evaluation": makespan(eval_seconds, args.workers),
        "ratings": makespan(list(ratings.values()), args.workers),
    }
    estimate["total"] = sum(estimate.values())
    info["load_average_at_end"] = list(os.getloadavg())
    print(f"estimated full run on {args.workers} workers: {estimate}", flush=True)
    write(
        "evaluation_cost",
        {
            "models": plan.models,
            "workers": args.workers,
            "seeds": seeds,
            "peers_missing": missing,
            "machine": info,
            "tuning": tuning,
            "evaluation": evaluation,
            "ratings": ratings,
            "estimate_seconds": estimate,
        },
    )


if __name__ == "__main__":
    main()
