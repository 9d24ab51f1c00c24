"""`run_evaluation`: the whole comparison, from streams to JSON, markdown and a plot.

Jobs run in `workers` processes with one BLAS/OpenMP/torch thread each. Phases:
tune the peers on the validation stretch (training part only), then evaluate every
system and seed on MovieLens-100K (temporal split + prequential) and on the drifting
synthetic stream, plus what-if variants of our learner on the validation stretch.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, replace
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
    "rechub-sasrec": "torch_rechub",
}
# rough relative cost (`recstream-<model>`: ours), to start the longest jobs first
COST_ORDER = (
    "rechub-sasrec",
    "rechub-gru4rec",
    "rechub-youtubednn",
    "implicit-bpr",
    "recstream-sequence",
    "recstream-history",
    "recstream-mlp",
    "recstream-content",
    "recstream-features",
    "recstream-rating",
    "implicit-als",
    "lightfm-warp-features",
    "lightfm-warp",
    "lightfm-bpr",
    "recstream-mf",
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


def ours_label(model: str, step: int | None = None) -> str:
    """`recstream` for mf, `recstream-<model>` for the others; `-bN` at a micro-batch N
    other than the run's."""
    label = OURS if model == "mf" else f"{OURS}-{model}"
    return label if step is None else f"{label}-b{step}"


def _our_specs(plan: Plan, stream: StreamSpec) -> list[SystemSpec]:
    """Each of our models at the run's micro-batch, mf also at `plan.mf_micro_batch`."""
    runs = [
        (ours_label(model), model, plan.micro_batch)
        for model in plan.models
        if stream == ML100K or model not in plan.ml100k_only_models
    ]
    extra = plan.mf_micro_batch
    if "mf" in plan.models and extra is not None and extra != plan.micro_batch:
        runs.append((ours_label("mf", extra), "mf", extra))
    return [
        SystemSpec(OURS, {"step": step, "model": model}, seed, label)
        for label, model, step in runs
        for seed in plan.seeds
    ]


def _eval_jobs(
    plan: Plan,
    params: dict[str, dict[str, Any]],
    stream: StreamSpec,
    start: int,
    temporal: bool,
    temporal_params: dict[str, dict[str, Any]] | None = None,
    validation_start: int | None = None,
) -> list[EvalJob]:
    """Every system and seed on `stream`; a peer whose temporal choice differs from its
    prequential one is scored on the temporal split with `temporal_params`. Ours also
    score `[validation_start, start)` on the way (None: not)."""
    chosen = temporal_params or {}
    peers = [
        SystemSpec(kind, peer, seed, temporal_params=chosen.get(kind))
        for kind, peer in params.items()
        for seed in plan.seeds
    ]
    peers += [
        SystemSpec("popularity", {"step": plan.chunk}),
        SystemSpec("popularity-online", {"step": plan.micro_batch}),
    ]
    job = functools.partial(
        EvalJob, stream, start=start, chunk=plan.chunk, k=plan.k, factors=plan.factors
    )
    return [job(spec, temporal=temporal) for spec in peers] + [
        job(spec, temporal=temporal, validation_start=validation_start)
        for spec in _our_specs(plan, stream)
    ]


def best_of_ours(
    validation: dict[str, Any], micro_batch: int, metric: tuple[str, ...] = ("common_hr@10",)
) -> str | None:
    """The model of ours at the run's micro-batch with the best mean `metric` (a path into
    its entry: prequential HR@10, or ("temporal", "ndcg@10")) on the validation stretch
    (None: none scored there)."""
    scored: dict[str, float] = {}
    for label, entry in validation.items():
        value = entry
        for key in metric:
            value = value.get(key) if value else None
        if value and entry["step"] == micro_batch:
            scored[label] = value["mean"]
    return max(scored, key=lambda label: scored[label]) if scored else None


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


@dataclass(frozen=True)
class Layout:
    """The synthetic streams and where each stream's validation and test parts start
    (each stream's peers are tuned on the tail of that stream's own training part)."""

    drift: StreamSpec
    steady: StreamSpec
    train_stop: int
    test_start: int
    drift_train_stop: int
    drift_start: int
    drift_point: int


def layout(plan: Plan) -> Layout:
    n = len(load_stream(ML100K))
    test_start = split_point(n, 1.0 - plan.test_fraction)
    drift = StreamSpec("synthetic-drift", plan.drift_events, plan.drift_at)
    drift_events = len(load_stream(drift))
    drift_start = split_point(drift_events, 1.0 - plan.drift_test_fraction)
    return Layout(
        drift,
        StreamSpec("synthetic-steady", plan.drift_events),
        split_point(test_start, 1.0 - plan.validation_fraction),
        test_start,
        split_point(drift_start, 1.0 - plan.drift_validation_fraction),
        drift_start,
        split_point(drift_events, plan.drift_at),
    )


def base_params(plan: Plan, peers: list[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per stream (MovieLens-100K, the drifting one), each peer's untuned parameters."""
    return {
        ML100K.name: {peer: _base_params(plan, peer) for peer in peers},
        "synthetic-drift": {
            peer: _base_params(plan, peer) for peer in peers if peer not in ML100K_ONLY
        },
    }


def tune_jobs(plan: Plan, at: Layout, peers: list[str]) -> list[TuneJob]:
    drift_peers = [peer for peer in peers if peer not in ML100K_ONLY]
    return _tune_jobs(plan, peers, ML100K, at.train_stop, at.test_start, True) + _tune_jobs(
        plan, drift_peers, at.drift, at.drift_train_stop, at.drift_start, False
    )


def evaluation_jobs(
    plan: Plan,
    at: Layout,
    params: dict[str, dict[str, dict[str, Any]]],
    temporal_params: dict[str, dict[str, Any]],
    diagnostics: bool,
) -> dict[str, list[EvalJob]]:
    """The jobs of each part of the report: `ml-100k`, `drift`, `steady`, `diagnostics`.
    The steady stream's peers keep the parameters tuned on the drifting stream's
    validation stretch, which lies before its drift: the same generator, undrifted."""
    drift_params = params[at.drift.name]
    return {
        "ml-100k": _eval_jobs(
            plan, params[ML100K.name], ML100K, at.test_start, True, temporal_params, at.train_stop
        ),
        "drift": _eval_jobs(plan, drift_params, at.drift, at.drift_start, False),
        "steady": _eval_jobs(plan, drift_params, at.steady, at.drift_start, False),
        "diagnostics": _diagnostic_jobs(plan, at.train_stop, at.test_start) if diagnostics else [],
    }


def _expected_cost(job: EvalJob) -> tuple[int, bool]:
    """Sort key that starts the longest jobs first."""
    kind = job.system.kind
    if kind == OURS:
        kind = f"{OURS}-{job.system.params.get('model', 'mf')}"
    rank = COST_ORDER.index(kind) if kind in COST_ORDER else len(COST_ORDER)
    return rank, job.stream.name != ML100K.name


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
    at = layout(plan)
    stream, drift_stream, steady_stream = (
        load_stream(spec) for spec in (ML100K, at.drift, at.steady)
    )
    n = len(stream)
    peers, missing = available_peers(plan)
    print(f"recstream evaluate: {len(plan.seeds)} seed(s), peers {peers}", file=log)

    tuned: dict[str, dict[str, TuneResult]] = {ML100K.name: {}, at.drift.name: {}}
    params = base_params(plan, peers)
    temporal_params: dict[str, dict[str, Any]] = {}
    if plan.tune and peers:
        print("tuning the peers on the validation stretches", file=log)
        for result in _run_all(tune_jobs(plan, at, peers), run_tune_job, workers, log, "tuned"):
            tuned[result.stream][result.kind] = result
            chosen = params[result.stream][result.kind]
            params[result.stream][result.kind] = {**chosen, **result.best}
            if result.best_temporal is not None and result.best_temporal != result.best:
                temporal_params[result.kind] = {**chosen, **result.best_temporal}

    jobs = evaluation_jobs(plan, at, params, temporal_params, diagnostics)
    eval_jobs, drift_jobs, steady_jobs, diag_jobs = (
        jobs[part] for part in ("ml-100k", "drift", "steady", "diagnostics")
    )
    everything = sorted((job for part in jobs.values() for job in part), key=_expected_cost)
    print(f"evaluating: {len(everything)} jobs", file=log)
    results = _run_all(everything, run_eval_job, workers, log, "done")
    ml = [r for r in results if r.job in eval_jobs]
    drifting = [r for r in results if r.job in drift_jobs]
    steady = [r for r in results if r.job in steady_jobs]
    diag = [r for r in results if r.job in diag_jobs]
    ratings = _ratings(plan, workers, log)

    slices = {
        ML100K.name: cold_slices(stream, at.test_start),
        at.drift.name: cold_slices(drift_stream, at.drift_start),
        at.steady.name: cold_slices(steady_stream, at.drift_start),
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
            "validation": [at.train_stop, at.test_start],
            "test": [at.test_start, n],
            "drift_events": len(drift_stream),
            "drift_validation": [at.drift_train_stop, at.drift_start],
            "drift_test": [at.drift_start, len(drift_stream)],
            "drift_at": at.drift_point,
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
    validation = prequential_table(
        by_label([replace(r, trace=r.validation) for r in ml if r.validation is not None])
    )
    recommended = [r for r in ml if r.validation_temporal is not None]
    for label, entry in temporal_table(
        by_label([replace(r, temporal=r.validation_temporal) for r in recommended])
    ).items():
        validation[label]["temporal"] = entry
    # the best of ours per protocol is chosen on the validation stretch, then paired on
    # the test part
    best = best_of_ours(validation, plan.micro_batch) or OURS
    best_temporal = best_of_ours(validation, plan.micro_batch, ("temporal", "ndcg@10")) or best
    steady_ours = best if best in steady_grouped else OURS
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
        "validation": validation,
        "best_ours": best,
        "best_ours_temporal": best_temporal,
        "prequential": prequential_table(grouped, slices[ML100K.name]),
        "temporal": temporal_table(grouped),
        "paired": paired_table(grouped, stream, rng, plan.bootstrap, best, best_temporal),
        "curves": curves(grouped, plan.window),
        "drift": {
            "table": drift_table(drift_grouped, splits["drift_at"], plan.recovery_window),
            "prequential": prequential_table(drift_grouped, slices["synthetic-drift"]),
            "curves": curves(drift_grouped, plan.window),
        },
        "steady": {
            "prequential": prequential_table(steady_grouped, slices["synthetic-steady"]),
            "ours": steady_ours,  # paired against the others: the best of ours if run here
            "paired": paired_table(steady_grouped, steady_stream, rng, plan.bootstrap, steady_ours),
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
