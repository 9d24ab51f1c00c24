"""Hyper-parameter search for the peers, on a validation stretch of the training part only.

Protocol: learn `[0, train_stop)`, score the events of `[train_stop, val_stop)` whose
user and item were seen before `train_stop` with that frozen state (the prequential
`common` rule with one chunk), pick the best NDCG@10. The test part is never read.
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


@dataclass
class TuneResult:
    stream: str
    kind: str
    best: dict[str, Any]
    trials: list[dict[str, Any]]
    seconds: float


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
    return _summary(trace)


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
    best = max(trials, key=lambda trial: trial["ndcg@10"])["params"]
    if job.chunk_epochs:
        chunk_trials = _lightfm_chunk_epochs(stream, job, best)
        trials.extend(chunk_trials)
        best = max(chunk_trials, key=lambda trial: trial["ndcg@10"])["params"]
    return TuneResult(job.stream.name, job.kind, best, trials, time.perf_counter() - began)


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
