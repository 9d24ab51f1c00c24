"""Choose one of our models' settings on ML-100K's validation split, never its test.

    PYTHONPATH=. python benchmarks/model_grid.py --model history \\
        --grid '[{}, {"learning_rate": 0.005}]' --step 256 --seeds 3

The stream keeps ML-100K's feature records (the features and content models read them)
and is cut where the evaluation's test part starts (benchmarks/evaluate.py: the
last 20%); the model learns the first 80% of the rest in micro-batches of `--step` in
time order (the validation tail is shaped like the test: the last 20%), then its lists
are scored on the remaining 20% (temporal HR@10 and NDCG@10, as
benchmarks/evaluation/temporal.py), then it goes on learning that 20% test-then-train
(prequential HR@10 and NDCG@10 over its ~16,000 events), with its cold slices
(benchmarks/evaluation/slices.py, on the own set, with their event counts). Writes
benchmarks/results/model_grid-<model>[-<tag>].json with the machine and its load.
"""

from __future__ import annotations

import os

for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from benchmarks.common import machine_at_end, pin_threads, write  # noqa: E402
from benchmarks.evaluation.jobs import SystemSpec, build_system, load_stream  # noqa: E402
from benchmarks.evaluation.plan import Plan  # noqa: E402
from benchmarks.evaluation.prequential import run_prequential  # noqa: E402
from benchmarks.evaluation.slices import cold_slices  # noqa: E402
from benchmarks.evaluation.splits import split_point  # noqa: E402
from benchmarks.evaluation.stream import EncodedStream  # noqa: E402
from benchmarks.evaluation.suite import ML100K  # noqa: E402
from benchmarks.evaluation.temporal import evaluate_temporal, temporal_truth  # noqa: E402


def validation_stream(plan: Plan) -> tuple[EncodedStream, int]:
    """The stream before the test part (with the items' and users' features, known from
    the start), and where its validation part starts."""
    whole = load_stream(ML100K)
    test_start = split_point(len(whole.events), 1.0 - plan.test_fraction)
    return (
        EncodedStream.encode(whole.events[:test_start], whole.features),
        split_point(test_start, 1.0 - plan.validation_fraction),
    )


def score(
    model: str, params: dict[str, Any], step: int, seed: int, stream: EncodedStream, split: int
) -> dict[str, float]:
    spec = SystemSpec("recstream", {**params, "model": model, "step": step}, seed)
    system = build_system(spec, step, 64)
    began = time.perf_counter()
    system.fit(stream, split)
    fit_seconds = time.perf_counter() - began
    summary = evaluate_temporal(system, temporal_truth(stream, split)).summary()
    trace = run_prequential(stream, system, split, step, 10, fit=False)
    cold: dict[str, float] = {}
    for name, mask in cold_slices(stream, split).items():
        scored = mask & ~np.isnan(trace.own_hit)
        cold[f"{name} events"] = int(scored.sum())
        cold[f"{name} hr@10"] = float(trace.own_hit[scored].mean()) if scored.any() else 0.0
        cold[f"{name} ndcg@10"] = float(trace.own_ndcg[scored].mean()) if scored.any() else 0.0
    return {
        **summary,
        "prequential_hr@10": float(np.nanmean(trace.common_hit)),
        "prequential_ndcg@10": float(np.nanmean(trace.common_ndcg)),
        **cold,
        "events_per_s": split / fit_seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="history", help="one of our --model values")
    parser.add_argument("--grid", default="[{}]", help="JSON list of config changes")
    parser.add_argument("--step", type=int, default=256, help="micro-batch (default 256)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--tag", default="", help="appended to the result file's name")
    args = parser.parse_args()
    pin_threads()
    plan = Plan()
    stream, split = validation_stream(plan)
    rows = []
    for params in json.loads(args.grid):
        runs = [
            score(args.model, params, args.step, seed, stream, split) for seed in range(args.seeds)
        ]
        row = {
            "params": params,
            **{metric: float(np.mean([run[metric] for run in runs])) for metric in runs[0]},
            "ndcg@10_std": float(np.std([run["ndcg@10"] for run in runs])),
        }
        rows.append(row)
        print(json.dumps(row), flush=True)
    info = machine_at_end()
    write(
        f"model_grid-{args.model}{args.tag and '-' + args.tag}",
        {
            "model": args.model,
            "step": args.step,
            "seeds": args.seeds,
            "machine": info,
            "rows": rows,
        },
    )


if __name__ == "__main__":
    main()
