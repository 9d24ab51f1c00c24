"""`run_evaluation`: the whole comparison, from streams to JSON, markdown and a plot.

Jobs run in `workers` processes with one BLAS/OpenMP/torch thread each. Phases:
tune the peers on the validation stretch (training part only), then evaluate every
system and seed on MovieLens-100K (temporal split + prequential) and on the drifting
synthetic stream, plus what-if variants of our learner on the validation stretch.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np

from benchmarks.common import machine, pin_threads
from benchmarks.evaluation.jobs import (
    OURS,
    EvalJob,
    EvalResult,
    StreamSpec,
    SystemSpec,
    load_stream,
    run_eval_job,
)
from benchmarks.evaluation.plan import ML100K_ONLY, Plan
from benchmarks.evaluation.rating import OUR_RATING_MODEL, RatingJob, RatingResult, run_rating_job
from benchmarks.evaluation.slices import cold_slices
from benchmarks.evaluation.splits import split_point
from benchmarks.evaluation.stream import BoolArray
from benchmarks.evaluation.summary import (
    by_label,
    curves,
    drift_table,
    paired_table,
    prequential_table,
    temporal_table,
)
from benchmarks.evaluation.tuning import TuneJob, TuneResult, run_tune_job

ML100K = StreamSpec("ml-100k")
LIBRARY_OF = {
    "implicit-als": "implicit",
    "implicit-bpr": "implicit",
    "lightfm-warp": "lightfm",
    "lightfm-bpr": "lightfm",
    "lightfm-warp-features": "lightfm",
    "rechub-youtubednn": "torch_rechub",
    "rechub-gru4rec": "torch_rechub",
}
# rough relative cost, to start the longest jobs first
COST_ORDER = (
    "rechub-gru4rec",
    "rechub-youtubednn",
    "implicit-bpr",
    "implicit-als",
    "lightfm-warp-features",
    "lightfm-warp",
    "lightfm-bpr",
    OURS,
)

J = TypeVar("J")
R = TypeVar("R")


def _init_worker() -> None:
    import torch

    torch.set_num_threads(1)


def _run_all(
    jobs: list[J], work: Callable[[J], R], workers: int, log: TextIO, what: str
) -> list[R]:
    """Run `work` over `jobs` in `workers` processes (inline when 1); results in job order."""
    began = time.perf_counter()
    if workers <= 1:
        results = []
        for index, job in enumerate(jobs):
            results.append(work(job))
            print(
                f"  {what} {index + 1}/{len(jobs)} ({time.perf_counter() - began:.0f}s)", file=log
            )
        return results
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker) as pool:
        futures: list[Future[R]] = [pool.submit(work, job) for job in jobs]
        for done, future in enumerate(_as_done(futures), start=1):
            future.result()
            print(f"  {what} {done}/{len(jobs)} ({time.perf_counter() - began:.0f}s)", file=log)
        return [future.result() for future in futures]


def _as_done(futures: Iterable[Future[R]]) -> Iterable[Future[R]]:
    from concurrent.futures import as_completed

    return as_completed(list(futures))


def available_peers(plan: Plan) -> tuple[list[str], dict[str, str]]:
    """The peers whose library imports here, and why the others are left out."""
    kept, missing = [], {}
    for peer in plan.peers:
        library = LIBRARY_OF[peer]
        if importlib.util.find_spec(library) is None:
            missing[peer] = f"{library} is not installed (pip install 'recstream[bench]')"
        else:
            kept.append(peer)
    return kept, missing


def _base_params(plan: Plan, peer: str) -> dict[str, Any]:
    """The peer's defaults, with the learner's micro-batch as its step where it can afford it."""
    cadence = {"step": plan.micro_batch} if peer in plan.at_cadence else {}
    return {**plan.default_params[peer], **cadence}


def _tune_jobs(
    plan: Plan,
    peers: list[str],
    stream: StreamSpec,
    train_stop: int,
    val_stop: int,
    temporal: bool,
) -> list[TuneJob]:
    jobs = []
    for peer in (peer for peer in peers if peer in plan.grids):  # the others run defaults
        lightfm = peer.startswith("lightfm")
        grid = [
            {**_base_params(plan, peer), **point, **({"chunk_epochs": 0} if lightfm else {})}
            for point in plan.grids[peer]
        ]
        jobs.append(
            TuneJob(
                stream,
                peer,
                grid,
                train_stop,
                val_stop,
                plan.chunk,
                plan.seeds[0],
                plan.k,
                plan.factors,
                plan.lightfm_epochs if lightfm else (),
                plan.lightfm_chunk_epochs if lightfm else (),
                temporal,
            )
        )
    return sorted(jobs, key=lambda job: COST_ORDER.index(job.kind))


def _eval_jobs(
    plan: Plan,
    params: dict[str, dict[str, Any]],
    stream: StreamSpec,
    start: int,
    temporal: bool,
    temporal_params: dict[str, dict[str, Any]] | None = None,
) -> list[EvalJob]:
    """Every system and seed on `stream`; a peer whose temporal choice differs from its
    prequential one is scored on the temporal split with `temporal_params`."""
    chosen = temporal_params or {}
    specs = [
        SystemSpec(kind, peer, seed, temporal_params=chosen.get(kind))
        for kind, peer in params.items()
        for seed in plan.seeds
    ]
    for model in plan.models:
        ours = OURS if model == "mf" else f"{OURS}-{model}"
        steps = {ours: plan.micro_batch}
        service = plan.service_micro_batch
        if service is not None and service != plan.micro_batch:
            steps[f"{ours}-b{service}"] = service
        specs += [
            SystemSpec(OURS, {"step": step, "model": model}, seed, label)
            for label, step in steps.items()
            for seed in plan.seeds
        ]
    specs += [
        SystemSpec("popularity", {"step": plan.chunk}),
        SystemSpec("popularity-online", {"step": plan.micro_batch}),
    ]
    return [
        EvalJob(stream, spec, start, plan.chunk, plan.k, plan.factors, temporal) for spec in specs
    ]


def _diagnostic_jobs(plan: Plan, train_stop: int, val_stop: int) -> list[EvalJob]:
    if not plan.diagnostics:
        return []
    seed = plan.seeds[0]
    specs = [
        SystemSpec(OURS, {"step": plan.micro_batch, **change}, seed, f"diag: {name}")
        for name, change in plan.diagnostics.items()
    ]
    reference = "diag: popularity-online (reference)"
    specs.append(SystemSpec("popularity-online", {"step": plan.micro_batch}, seed, reference))
    return [
        EvalJob(ML100K, spec, train_stop, plan.chunk, plan.k, plan.factors, False, val_stop)
        for spec in specs
    ]


def run_evaluation(
    out_dir: str | Path = "benchmarks/results",
    quick: bool = False,
    seeds: int | None = None,
    workers: int = 2,
    diagnostics: bool = True,
    log: TextIO | None = None,
    models: tuple[str, ...] = ("mf",),
) -> dict[str, Any]:
    """Run the evaluation; write `evaluation.json`, `evaluation.md`, `hr_over_stream.png`.

    `quick`: one seed, a short test stretch, no tuning (about a minute). `seeds`
    overrides the number of seeds; `models` are the `--model` values of ours evaluated.
    Returns the report written to the JSON file.
    """
    log = log if log is not None else sys.stderr
    pin_threads()  # the variables are inherited by the worker processes
    plan = Plan.quick() if quick else Plan()
    if seeds is not None:
        plan = plan.with_seeds(seeds)
    plan = plan.with_models(models)
    began = time.perf_counter()
    host = machine()
    stream = load_stream(ML100K)
    n = len(stream)
    test_start = split_point(n, 1.0 - plan.test_fraction)
    train_stop = split_point(test_start, 1.0 - plan.validation_fraction)
    drift_spec = StreamSpec("synthetic-drift", plan.drift_events, plan.drift_at)
    drift_stream = load_stream(drift_spec)
    steady_spec = StreamSpec("synthetic-steady", plan.drift_events)
    steady_stream = load_stream(steady_spec)
    drift_start = split_point(len(drift_stream), 1.0 - plan.drift_test_fraction)
    drift_point = split_point(len(drift_stream), plan.drift_at)
    peers, missing = available_peers(plan)
    print(f"recstream evaluate: {len(plan.seeds)} seed(s), peers {peers}", file=log)

    # each stream's peers are tuned on the tail of that stream's own training part
    drift_train_stop = split_point(drift_start, 1.0 - plan.drift_validation_fraction)
    tuned: dict[str, dict[str, TuneResult]] = {ML100K.name: {}, drift_spec.name: {}}
    drift_peers = [peer for peer in peers if peer not in ML100K_ONLY]
    params = {
        name: {
            peer: _base_params(plan, peer)
            for peer in (peers if name == ML100K.name else drift_peers)
        }
        for name in tuned
    }
    temporal_params: dict[str, dict[str, Any]] = {}
    if plan.tune and peers:
        print("tuning the peers on the validation stretches", file=log)
        jobs = _tune_jobs(plan, peers, ML100K, train_stop, test_start, True)
        jobs += _tune_jobs(plan, drift_peers, drift_spec, drift_train_stop, drift_start, False)
        for result in _run_all(jobs, run_tune_job, workers, log, "tuned"):
            tuned[result.stream][result.kind] = result
            chosen = params[result.stream][result.kind]
            params[result.stream][result.kind] = {**chosen, **result.best}
            if result.best_temporal is not None and result.best_temporal != result.best:
                temporal_params[result.kind] = {**chosen, **result.best_temporal}

    eval_jobs = _eval_jobs(plan, params[ML100K.name], ML100K, test_start, True, temporal_params)
    drift_jobs = _eval_jobs(plan, params[drift_spec.name], drift_spec, drift_start, False)
    # The steady stream's peers keep the parameters tuned on the drifting stream's
    # validation stretch, which lies before its drift: the same generator, undrifted.
    steady_jobs = _eval_jobs(plan, params[drift_spec.name], steady_spec, drift_start, False)
    diag_jobs = _diagnostic_jobs(plan, train_stop, test_start) if diagnostics else []
    everything = sorted(
        eval_jobs + drift_jobs + steady_jobs + diag_jobs,
        key=lambda job: (
            COST_ORDER.index(job.system.kind) if job.system.kind in COST_ORDER else 99,
            job.stream.name != "ml-100k",
        ),
    )
    print(f"evaluating: {len(everything)} jobs", file=log)
    results = _run_all(everything, run_eval_job, workers, log, "done")
    ml = [r for r in results if r.job in eval_jobs]
    drifting = [r for r in results if r.job in drift_jobs]
    steady = [r for r in results if r.job in steady_jobs]
    diag = [r for r in results if r.job in diag_jobs]
    ratings = _ratings(plan, workers, log)

    slices = {
        ML100K.name: cold_slices(stream, test_start),
        drift_spec.name: cold_slices(drift_stream, drift_start),
        steady_spec.name: cold_slices(steady_stream, drift_start),
    }
    report = _report(
        plan,
        host,
        stream,
        ml,
        drifting,
        (steady_stream, steady),
        diag,
        tuned,
        params,
        temporal_params,
        missing,
        slices,
        splits={
            "events": n,
            "validation": [train_stop, test_start],
            "test": [test_start, n],
            "drift_events": len(drift_stream),
            "drift_validation": [drift_train_stop, drift_start],
            "drift_test": [drift_start, len(drift_stream)],
            "drift_at": drift_point,
        },
    )
    report["ratings"] = [result.as_dict() for result in ratings]
    report["seconds"] = round(time.perf_counter() - began, 1)
    report["machine"]["load_average_at_end"] = list(os.getloadavg())
    _write(report, Path(out_dir))
    print(
        f"wrote {out_dir}/evaluation.json, evaluation.md, hr_over_stream.png "
        f"in {report['seconds']:.0f}s",
        file=log,
    )
    return report


def _ratings(plan: Plan, workers: int, log: TextIO) -> list[RatingResult]:
    """Progressive RMSE/MAE on MovieLens-100K's ratings (River's protocol), River's rows
    where River is installed."""
    predictors = plan.rating_predictors
    if importlib.util.find_spec("river") is None:
        print("ratings: river is not installed (pip install 'recstream[bench]')", file=log)
        predictors = tuple((kind, step) for kind, step in predictors if kind == OUR_RATING_MODEL)
    jobs = [
        RatingJob(ML100K.name, kind, step, test_fraction=plan.test_fraction)
        for kind, step in predictors
    ]
    return _run_all(jobs, run_rating_job, workers, log, "rated")


def _report(
    plan: Plan,
    host: dict[str, Any],
    stream: Any,
    ml: list[EvalResult],
    drifting: list[EvalResult],
    steady: tuple[Any, list[EvalResult]],
    diag: list[EvalResult],
    tuned: dict[str, dict[str, TuneResult]],
    params: dict[str, dict[str, dict[str, Any]]],
    temporal_params: dict[str, dict[str, Any]],
    missing: dict[str, str],
    slices: dict[str, dict[str, BoolArray]],
    splits: dict[str, Any],
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    grouped = by_label(ml)
    drift_grouped = by_label(drifting)
    steady_stream, steady_results = steady
    steady_grouped = by_label(steady_results)
    return {
        "machine": host,
        "plan": {
            key: value
            for key, value in plan.__dict__.items()
            if key not in ("grids", "default_params", "diagnostics")
        },
        "splits": splits,
        "peers_missing": missing,
        "hyper_parameters": params,
        "hyper_parameters_temporal": {ML100K.name: temporal_params},
        "tuning": {
            stream_name: {
                kind: {
                    "best": result.best,
                    "best_temporal": result.best_temporal,
                    "seconds": result.seconds,
                    "trials": result.trials,
                }
                for kind, result in results.items()
            }
            for stream_name, results in tuned.items()
        },
        "prequential": prequential_table(grouped, slices[ML100K.name]),
        "temporal": temporal_table(grouped),
        "paired": paired_table(grouped, stream, rng, plan.bootstrap),
        "curves": curves(grouped, plan.window),
        "drift": {
            "table": drift_table(drift_grouped, splits["drift_at"], plan.recovery_window),
            "prequential": prequential_table(drift_grouped, slices["synthetic-drift"]),
            "curves": curves(drift_grouped, plan.window),
        },
        "steady": {
            "prequential": prequential_table(steady_grouped, slices["synthetic-steady"]),
            "paired": paired_table(steady_grouped, steady_stream, rng, plan.bootstrap),
            "curves": curves(steady_grouped, plan.window),
        },
        "diagnostics": prequential_table(by_label(diag)),
    }


def _write(report: dict[str, Any], out_dir: Path) -> None:
    from benchmarks.evaluation.render import markdown, plot

    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(report, indent=1, default=str) + "\n")
    (out_dir / "evaluation.md").write_text(markdown(report))
    plot(report, out_dir / "hr_over_stream.png")
