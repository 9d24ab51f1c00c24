"""Hyper-parameter search for the peers, on a validation stretch of the training part only.

Protocol: learn `[0, train_stop)` and score the validation stretch `[train_stop, val_stop)`
with that frozen state, once per protocol a peer is reported on, picking the best NDCG@10
for each: prequential (its events whose user and item were seen before `train_stop`: the
`common` rule with one chunk) and, where `temporal`, the temporal split (the items each
user watched in the stretch, ranked once). The two criteria choose differently (LightFM
WARP on MovieLens-100K: 5 epochs at 0.003 for the next event, 100 at 0.02 for the next
fifth of the stream), so each table uses the choice made by its own protocol. The test
part is never read.
LightFM's epochs are searched by continuing one fit, and its per-chunk epochs by a
prequential pass over the validation stretch in chunks, from copies of the tuned fit.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.evaluation.jobs import StreamSpec, SystemSpec, build_system, load_stream
from benchmarks.evaluation.prequential import PrequentialTrace, run_prequential
from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import System
from benchmarks.evaluation.temporal import evaluate_temporal, temporal_truth

TEMPORAL = "temporal_ndcg@10"


@dataclass(frozen=True)
class TuneJob:
    stream: StreamSpec
    kind: str
    grid: list[dict[str, Any]]
    train_stop: int
    val_stop: int
    chunk: int
    seed: int = 0
    k: int = 10
    factors: int = 64
    epoch_checkpoints: tuple[int, ...] = ()
    chunk_epochs: tuple[int, ...] = ()
    temporal: bool = False


@dataclass
class TuneResult:
    stream: str
    kind: str
    best: dict[str, Any]
    trials: list[dict[str, Any]]
    seconds: float
    best_temporal: dict[str, Any] | None = None


def _summary(trace: PrequentialTrace) -> dict[str, float]:
    return {
        "ndcg@10": float(np.nanmean(trace.common_ndcg)),
        "hr@10": float(np.nanmean(trace.common_hit)),
        "scored": int(np.count_nonzero(~np.isnan(trace.common_hit))),
    }


def _frozen(stream: EncodedStream, system: System, job: TuneJob) -> dict[str, float]:
    span = job.val_stop - job.train_stop
    trace = run_prequential(
        stream, system, job.train_stop, span, job.k, job.val_stop, fit=False, learn=False, step=span
    )
    scores = _summary(trace)
    if job.temporal:
        truth = temporal_truth(stream, job.train_stop, job.val_stop)
        scores[TEMPORAL] = evaluate_temporal(system, truth, job.k).summary()["ndcg@10"]
    return scores


def _best(trials: list[dict[str, Any]], criterion: str) -> dict[str, Any]:
    return dict(max(trials, key=lambda trial: trial[criterion])["params"])


def run_tune_job(job: TuneJob) -> TuneResult:
    began = time.perf_counter()
    stream = load_stream(job.stream)
    trials: list[dict[str, Any]] = []
    for params in job.grid:
        if job.epoch_checkpoints:
            trials.extend(_lightfm_epochs(stream, job, params))
        else:
            spec = SystemSpec(job.kind, params, job.seed)
            system = build_system(spec, job.chunk, job.factors)
            system.fit(stream, job.train_stop)
            trials.append({"params": params, **_frozen(stream, system, job)})
    best = _best(trials, "ndcg@10")
    best_temporal = _best(trials, TEMPORAL) if job.temporal else None
    if job.chunk_epochs:
        chunk_trials = _lightfm_chunk_epochs(stream, job, best)
        trials.extend(chunk_trials)
        best = _best(chunk_trials, "ndcg@10")
    seconds = time.perf_counter() - began
    return TuneResult(job.stream.name, job.kind, best, trials, seconds, best_temporal)


def _lightfm_epochs(
    stream: EncodedStream, job: TuneJob, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """One fit continued through the epoch checkpoints, scored frozen at each."""
    first = job.epoch_checkpoints[0]
    spec = SystemSpec(job.kind, {**params, "epochs": first, "chunk_epochs": 0}, job.seed)
    system: Any = build_system(spec, job.chunk, job.factors)
    system.fit(stream, job.train_stop)
    trials = []
    done = first
    for epochs in job.epoch_checkpoints:
        if epochs > done:
            system.train_more(stream, 0, job.train_stop, epochs - done)
            done = epochs
        trials.append({"params": {**params, "epochs": epochs}, **_frozen(stream, system, job)})
    return trials


def _lightfm_chunk_epochs(
    stream: EncodedStream, job: TuneJob, best: dict[str, Any]
) -> list[dict[str, Any]]:
    """Prequential over the validation stretch in chunks, once per per-chunk epoch count."""
    spec = SystemSpec(job.kind, {**best, "chunk_epochs": 0}, job.seed)
    fitted: Any = build_system(spec, job.chunk, job.factors)
    fitted.fit(stream, job.train_stop)
    trials = []
    for chunk_epochs in job.chunk_epochs:
        system = copy.deepcopy(fitted)
        system.chunk_epochs = chunk_epochs
        trace = run_prequential(
            stream, system, job.train_stop, job.chunk, job.k, job.val_stop, fit=False
        )
        trials.append({"params": {**best, "chunk_epochs": chunk_epochs}, **_summary(trace)})
    return trials
