"""Picklable descriptions of streams, systems and jobs, and how a worker runs them.

The runner sends these to worker processes (one thread each); a worker loads the
stream once (cached) and builds the system itself, so only small specs and per-event
arrays cross process boundaries.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from benchmarks.evaluation.prequential import PrequentialTrace, run_prequential
from benchmarks.evaluation.stream import EncodedStream
from benchmarks.evaluation.systems.base import System
from benchmarks.evaluation.temporal import TemporalResult, evaluate_temporal, temporal_truth

OURS = "recstream"


@dataclass(frozen=True)
class StreamSpec:
    """`ml-100k`; `synthetic-drift` with its length, drift point and seed; or
    `synthetic-steady`, the same generator without the drift."""

    name: str
    events: int = 0
    drift_at: float = 0.5
    seed: int = 0


@functools.cache
def load_stream(spec: StreamSpec) -> EncodedStream:
    from benchmarks.evaluation.data import (
        movielens_100k,
        movielens_100k_features,
        planted_synthetic,
        planted_synthetic_features,
    )

    if spec.name == "ml-100k":
        return EncodedStream.encode(movielens_100k(), movielens_100k_features())
    features = planted_synthetic_features(spec.events, spec.seed)
    if spec.name == "synthetic-drift":
        events = planted_synthetic(spec.events, spec.drift_at, spec.seed)
        return EncodedStream.encode(events, features)
    if spec.name == "synthetic-steady":
        return EncodedStream.encode(planted_synthetic(spec.events, None, spec.seed), features)
    raise ValueError(f"unknown stream {spec.name!r}")


@dataclass(frozen=True)
class SystemSpec:
    """Which system, its hyper-parameters and seed; `name` labels it in the report.

    `temporal_params`: the hyper-parameters tuned for the temporal split, where they
    differ from `params` (tuned for the prequential protocol); None: `params` for both.
    """

    kind: str
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    name: str = ""
    temporal_params: dict[str, Any] | None = None

    @property
    def label(self) -> str:
        return self.name or self.kind


def build_system(spec: SystemSpec, chunk: int, factors: int) -> System:
    params = dict(spec.params)
    if spec.kind == OURS:
        from benchmarks.evaluation.systems.online import OnlineLearnerSystem
        from consumers.model.factory import make_config

        name = params.pop("model", "mf")
        step = params.pop("step", chunk)
        # the rest are settings of the model's config (a name it lacks: ValueError)
        config = make_config(name, {"seed": spec.seed}, params)
        return OnlineLearnerSystem(config, name=spec.label, model=name, step=step)
    if spec.kind in ("popularity", "popularity-online"):
        from benchmarks.evaluation.systems.popularity import PopularityPeer

        return PopularityPeer(spec.label, params.get("step", chunk))
    if spec.kind in ("implicit-als", "implicit-bpr"):
        from benchmarks.evaluation.systems.implicit_mf import ImplicitRetrainSystem

        kind = spec.kind.split("-")[1]
        step = params.pop("step", chunk)
        return ImplicitRetrainSystem(kind, params, spec.seed, factors, step, spec.label, chunk)
    if spec.kind in ("lightfm-warp", "lightfm-bpr", "lightfm-warp-features"):
        from benchmarks.evaluation.systems.lightfm_mf import LightFMPartialSystem

        loss = spec.kind.split("-")[1]
        epochs, chunk_epochs = params.pop("epochs"), params.pop("chunk_epochs")
        step = params.pop("step", chunk)
        features = spec.kind.endswith("-features")
        return LightFMPartialSystem(
            loss, params, spec.seed, epochs, chunk_epochs, factors, step, spec.label, features
        )
    if spec.kind.startswith("rechub-"):
        from benchmarks.evaluation.systems.rechub_towers import RechubTowerSystem

        architecture = spec.kind.split("-")[1]
        return RechubTowerSystem(architecture, spec.seed, factors, name=spec.label, **params)
    raise ValueError(f"unknown system kind {spec.kind!r}")


@dataclass(frozen=True)
class EvalJob:
    """Learn `[0, start)`, score the temporal split there, then prequential to the end.

    `validation_start`: learn `[0, validation_start)` first, score the temporal split
    there (truth: `[validation_start, start)`), then `[validation_start, start)`
    test-then-train (the validation stretch, where the best of our models is chosen per
    protocol), so the test part is learned from the same state at no extra cost.
    """

    stream: StreamSpec
    system: SystemSpec
    start: int
    chunk: int
    k: int = 10
    factors: int = 64
    temporal: bool = True
    stop: int | None = None
    validation_start: int | None = None


@dataclass
class EvalResult:
    job: EvalJob
    trace: PrequentialTrace
    temporal: TemporalResult | None
    cost: dict[str, Any]
    served: dict[str, float] | None = None
    validation: PrequentialTrace | None = None
    validation_temporal: TemporalResult | None = None


def run_eval_job(job: EvalJob) -> EvalResult:
    stream = load_stream(job.stream)
    system = build_system(job.system, job.chunk, job.factors)
    began = time.perf_counter()
    validation = validation_temporal = None
    if job.validation_start is None:
        system.fit(stream, job.start)
    else:
        system.fit(stream, job.validation_start)
        if job.temporal:
            truth = temporal_truth(stream, job.validation_start, job.start)
            validation_temporal = evaluate_temporal(system, truth, job.k)
        validation = run_prequential(
            stream, system, job.validation_start, job.chunk, job.k, job.start, fit=False
        )
    fit_seconds = time.perf_counter() - began
    temporal = None
    if job.temporal:
        scored = system
        if job.system.temporal_params is not None:
            spec = replace(job.system, params=job.system.temporal_params, temporal_params=None)
            scored = build_system(spec, job.chunk, job.factors)
            scored.fit(stream, job.start)
        temporal = evaluate_temporal(scored, temporal_truth(stream, job.start), job.k)
    served_before = _served(system)
    trace = run_prequential(stream, system, job.start, job.chunk, job.k, job.stop, fit=False)
    trace.fit_seconds = fit_seconds
    served = None
    served_after = _served(system)
    if served_before is not None and served_after is not None:
        scored = served_after[0] - served_before[0]
        served = {
            "scored": scored,
            "hr@10": (served_after[1] - served_before[1]) / max(scored, 1),
            "ndcg@10": (served_after[2] - served_before[2]) / max(scored, 1),
        }
    return EvalResult(
        job, trace, temporal, _cost(system, trace), served, validation, validation_temporal
    )


def _served(system: System) -> tuple[int, float, float] | None:
    quality = getattr(system, "served_quality", None)
    if quality is None:
        return None
    snapshot = quality()
    return snapshot.scored, snapshot.hits, snapshot.gains


def _cost(system: System, trace: PrequentialTrace) -> dict[str, Any]:
    """Seconds spent learning: per update call, and per event where that is meaningful."""
    updates = np.asarray(trace.update_seconds)
    events = np.asarray(trace.update_events)
    cost: dict[str, Any] = {
        "fit_seconds": trace.fit_seconds,
        "update_calls": int(updates.size),
        "update_seconds_total": float(updates.sum()),
        "update_seconds_mean": float(updates.mean()) if updates.size else 0.0,
        "update_seconds_p95": float(np.quantile(updates, 0.95)) if updates.size else 0.0,
        "seconds_per_event": float(updates.sum() / max(events.sum(), 1)),
        "score_seconds_total": trace.score_seconds,
    }
    online_cost = getattr(system, "cost", None)
    if online_cost is not None:
        # the prequential part only: the last `update_calls` micro-batches
        tail = slice(len(online_cost.events) - updates.size, None)
        n = max(sum(online_cost.events[tail]), 1)
        per_batch = np.asarray(online_cost.total_seconds[tail])
        cost |= {
            "micro_batch": system.step,
            "learn_seconds_per_event": sum(online_cost.learn_seconds[tail]) / n,
            "publish_seconds_per_event": sum(online_cost.publish_seconds[tail]) / n,
            "process_seconds_per_event": float(per_batch.sum()) / n,
            "micro_batch_seconds_p50": float(np.quantile(per_batch, 0.5)),
            "micro_batch_seconds_p99": float(np.quantile(per_batch, 0.99)),
        }
    return cost
