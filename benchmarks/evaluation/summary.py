"""From per-seed job results to the numbers in the report (means, spreads, pairs, curves)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.evaluation.drift import recovery, trailing_mean
from benchmarks.evaluation.jobs import OURS, EvalResult
from benchmarks.evaluation.prequential import PrequentialTrace
from benchmarks.evaluation.stats import mean_se, paired_comparison, seed_spread
from benchmarks.evaluation.stream import BoolArray, EncodedStream

FloatArray = NDArray[np.float64]
CURVE_POINTS = 200
RECOVERY_SHARES = (0.5, 0.9, 1.0)  # of the pre-drift HR


def by_label(results: Sequence[EvalResult]) -> dict[str, list[EvalResult]]:
    grouped: dict[str, list[EvalResult]] = defaultdict(list)
    for result in results:
        grouped[result.job.system.label].append(result)
    return dict(grouped)


def _seed_mean(arrays: Sequence[FloatArray]) -> FloatArray:
    stacked = np.vstack(arrays)
    out = np.full(stacked.shape[1], np.nan)
    present = ~np.isnan(stacked).all(axis=0)
    out[present] = np.nanmean(stacked[:, present], axis=0)
    return out


def _metric(per_event: FloatArray, per_seed: list[float]) -> dict[str, Any]:
    mean, se = mean_se(per_event[~np.isnan(per_event)])
    return {"mean": mean, "se": se, "seeds": seed_spread(per_seed)}


def prequential_table(
    grouped: dict[str, list[EvalResult]], slices: dict[str, BoolArray] | None = None
) -> dict[str, Any]:
    """Per system: common-set HR/NDCG (SE over events of the seed-mean; spread over seeds),
    the system's own set, its counts and costs; `slices` (masks over the scored stretch)
    restrict the common set, under `slices` in each entry."""
    table: dict[str, Any] = {}
    for label, results in grouped.items():
        traces = [result.trace for result in results]
        entry: dict[str, Any] = {"counts": traces[0].counts(), "step": traces[0].step}
        for name in ("common", "own"):
            for metric in ("hit", "ndcg"):
                arrays = [getattr(trace, f"{name}_{metric}") for trace in traces]
                seeds = [float(np.nanmean(array)) for array in arrays]
                key = f"{name}_{'hr' if metric == 'hit' else 'ndcg'}@10"
                entry[key] = _metric(_seed_mean(arrays), seeds)
        entry["slices"] = {
            slice_name: _slice(traces, mask) for slice_name, mask in (slices or {}).items()
        }
        entry["cost"] = _mean_cost([result.cost for result in results])
        served = [result.served for result in results if result.served]
        if served:
            entry["served_lists"] = {
                key: float(np.mean([s[key] for s in served])) for key in served[0]
            }
        table[label] = entry
    return table


def _slice(traces: Sequence[PrequentialTrace], mask: BoolArray) -> dict[str, Any]:
    """HR/NDCG over the events of `mask` (cut to the traces' length), on the common set
    (the same events for every system) and on the system's own set (its own events: a
    system that updates more often scores more of a cold user's first events)."""
    entry: dict[str, Any] = {}
    for name in ("common", "own"):
        part: dict[str, Any] = {}
        for metric in ("hit", "ndcg"):
            arrays = [
                getattr(trace, f"{name}_{metric}")[mask[: trace.common_hit.size]]
                for trace in traces
            ]
            seeds = [float(np.nanmean(array)) if array.size else float("nan") for array in arrays]
            part[f"{'hr' if metric == 'hit' else 'ndcg'}@10"] = _metric(_seed_mean(arrays), seeds)
            part["events"] = int(np.count_nonzero(~np.isnan(arrays[0])))
        entry[name] = part
    return entry


def _mean_cost(costs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        key: float(np.mean([cost[key] for cost in costs]))
        for key in costs[0]
        if isinstance(costs[0][key], int | float)
    }


def temporal_table(grouped: dict[str, list[EvalResult]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for label, results in grouped.items():
        temporal = [result.temporal for result in results if result.temporal is not None]
        if not temporal:
            continue
        entry: dict[str, Any] = {"users": int(temporal[0].users.size)}
        for key in ("recall", "hit", "ndcg"):
            per_user = np.mean([getattr(t, key) for t in temporal], axis=0)
            seeds = [float(getattr(t, key).mean()) for t in temporal]
            entry[f"{'hr' if key == 'hit' else key}@10"] = _metric(per_user, seeds)
        entry["coverage@10"] = seed_spread([t.coverage for t in temporal])
        table[label] = entry
    return table


def paired_table(
    grouped: dict[str, list[EvalResult]],
    stream: EncodedStream,
    rng: np.random.Generator,
    resamples: int,
    ours: str = OURS,
    temporal_ours: str | None = None,
) -> dict[str, Any]:
    """`ours` minus each other system on the same events (grouped by user), and
    `temporal_ours` (default: `ours`) minus each other on the same users.

    `seed_mean`: per-event (per-user) values averaged over seeds, then paired: mean
    difference, SE and a bootstrap CI over users. `per_seed`: seed i of ours against
    seed i of the peer (its only run if deterministic), for the sign test: on binary
    HR that is McNemar's exact test on the discordant events.
    """
    temporal_ours = temporal_ours or ours
    if ours not in grouped or temporal_ours not in grouped:
        return {}
    mine, mine_temporal = grouped[ours], grouped[temporal_ours]
    start = mine[0].trace.start
    users = stream.users[start : start + mine[0].trace.common_hit.size]
    table: dict[str, Any] = {}
    for label, results in grouped.items():
        entry: dict[str, Any] = {}
        if label != ours:
            for metric in ("hit", "ndcg"):
                name = "hr@10" if metric == "hit" else "ndcg@10"
                a = [getattr(r.trace, f"common_{metric}") for r in mine]
                b = [getattr(r.trace, f"common_{metric}") for r in results]
                entry[f"prequential_{name}"] = _paired(a, b, users, rng, resamples)
        if (
            label != temporal_ours
            and mine_temporal[0].temporal is not None
            and results[0].temporal is not None
        ):
            for metric in ("ndcg", "recall"):
                a = [getattr(r.temporal, metric) for r in mine_temporal]
                b = [getattr(r.temporal, metric) for r in results]
                entry[f"temporal_{metric}@10"] = _paired(a, b, None, rng, resamples)
        if entry:
            table[label] = entry
    return table


def _paired(
    ours: list[FloatArray],
    peer: list[FloatArray],
    groups: NDArray[np.int64] | None,
    rng: np.random.Generator,
    resamples: int,
) -> dict[str, Any]:
    def compare(a: FloatArray, b: FloatArray, draws: int) -> dict[str, Any]:
        both = ~np.isnan(a) & ~np.isnan(b)
        units = None if groups is None else groups[both]
        return paired_comparison(a[both], b[both], units, rng, draws).as_dict()

    per_seed = [compare(a, peer[i % len(peer)], 0) for i, a in enumerate(ours)]
    return {
        "seed_mean": compare(_seed_mean(ours), _seed_mean(peer), resamples),
        "per_seed": per_seed,
        "wins": sum(seed["wins"] for seed in per_seed),
        "losses": sum(seed["losses"] for seed in per_seed),
        "max_sign_p": max(seed["sign_p"] for seed in per_seed),
    }


def curves(
    grouped: dict[str, list[EvalResult]], window: int, own: Sequence[str] = (OURS,)
) -> dict[str, dict[str, list[float]]]:
    """Moving-window HR@10 over the stream (common set; `own` systems also on their own set)."""
    out: dict[str, dict[str, list[float]]] = {}
    for label, results in grouped.items():
        start = results[0].trace.start
        sets = [("common", label)] + ([("own", f"{label} (own set)")] if label in own else [])
        for name, key in sets:
            hits = _seed_mean([getattr(r.trace, f"{name}_hit") for r in results])
            scored = np.flatnonzero(~np.isnan(hits))
            if scored.size == 0:
                continue
            moving = trailing_mean(hits[scored], window)
            # skip the first points, whose window holds too few events to mean anything
            first = min(window, scored.size // 4)
            pick = np.unique(np.linspace(first, scored.size - 1, CURVE_POINTS).astype(int))
            out[key] = {
                "position": (scored[pick] + start).tolist(),
                "hr@10": moving[pick].tolist(),
            }
    return out


def drift_table(grouped: dict[str, list[EvalResult]], drift: int, window: int) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for label, results in grouped.items():
        start = results[0].trace.start
        hits = _seed_mean([r.trace.common_hit for r in results])
        scored = np.flatnonzero(~np.isnan(hits))
        positions = scored + start
        entry = recovery(positions, hits[scored], drift, window, RECOVERY_SHARES)
        entry["post_drift_hr"] = float(np.mean(hits[scored][positions >= drift]))
        entry["per_seed"] = []
        for result in results:
            seed_hits = result.trace.common_hit
            seed_scored = np.flatnonzero(~np.isnan(seed_hits))
            entry["per_seed"].append(
                recovery(
                    seed_scored + start, seed_hits[seed_scored], drift, window, RECOVERY_SHARES
                )
            )
        table[label] = entry
    return table
