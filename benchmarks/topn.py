"""Top-N search: exact users/s at 10k, 100k, 1M items; ANN libraries compared; the chosen
index (hnswlib, through consumers/model/ann.py) at 1M items: users/s, recall@10 against
exact, and recall as item vectors move (staleness). `--crossover`: the catalogue size from
which the full search of the incremental lists (the top `SearchConfig.candidates`) costs
less through HNSW than exact, which `--topn-index auto` uses as `ann_min_items`.

Vectors are synthetic but shaped like learned MF embeddings: items and users around
shared cluster centres, item norms log-normal (popular items have long vectors).
Each user excludes 20 watched items, as the publisher does. One thread for every search;
users/s are per CPU second of this process (the machine may be shared: wall time would
count other people's work).

    PYTHONPATH=. python benchmarks/topn.py [--quick | --crossover]
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import Timer, describe, machine, pin_threads, verdict, write

DIM, K, WATCHED, CLUSTERS = 64, 10, 20, 256


def vectors(n: int, rng: np.random.Generator, centres: np.ndarray, spread: float) -> np.ndarray:
    which = rng.integers(0, len(centres), n)
    v = centres[which] + spread * rng.standard_normal((n, DIM)).astype(np.float32)
    return v.astype(np.float32)


def catalogue(items: int, users: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((CLUSTERS, DIM)).astype(np.float32) / np.sqrt(DIM)
    item_vectors = vectors(items, rng, centres, 0.6 / np.sqrt(DIM))
    item_vectors *= rng.lognormal(0.0, 0.35, (items, 1)).astype(np.float32)
    return item_vectors, vectors(users, rng, centres, 0.6 / np.sqrt(DIM))


def watched(users: int, items: int, seed: int = 1) -> list[set[int]]:
    rng = np.random.default_rng(seed)
    return [set(rng.integers(0, items, WATCHED).tolist()) for _ in range(users)]


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def exact(items: np.ndarray, queries: np.ndarray, seen: list[set[int]]) -> tuple[np.ndarray, float]:
    import torch

    from consumers.model.ann import exact_top_k

    table, q = torch.from_numpy(items), torch.from_numpy(queries)
    exact_top_k(q[:8], table, K, seen[:8])  # warm
    with Timer() as t:
        _, rows = exact_top_k(q, table, K, seen)
    return rows.numpy(), len(queries) / t.cpu_seconds


def exact_rates(sizes: list[int], users: int) -> list[dict[str, Any]]:
    out = []
    for size in sizes:
        n = max(64, min(users, 50_000_000 // size))
        items, queries = catalogue(size, n)
        _, rate = exact(items, queries, watched(n, size))
        out.append({"items": size, "users": n, "users_per_s": round(rate, 1)})
        print(f"exact top-{K}: {size:>9,} items  {rate:>10,.0f} users/s")
    return out


def compare_libraries(size: int, users: int) -> dict[str, Any]:
    """hnswlib vs faiss HNSW vs usearch on the same data: build, query, recall, update."""
    items, queries = catalogue(size, users, seed=2)
    truth, exact_rate = exact(items, queries, [set()] * users)
    moved = np.arange(0, size, 10)
    rng = np.random.default_rng(3)
    shift = 0.3 * rng.standard_normal((moved.size, DIM)).astype(np.float32) / np.sqrt(DIM)
    results: dict[str, Any] = {"items": size, "users": users, "exact_users_per_s": exact_rate}
    for name, build in LIBRARIES.items():
        try:
            entry = build(items, queries, truth, moved, items[moved] + shift)
        except ImportError as error:
            entry = {"error": f"not installed: {error}"}
        results[name] = entry
        print(f"{name:>8}: {entry}")
    return results


def _sweep(search: Any, queries: np.ndarray, truth: np.ndarray) -> list[dict[str, Any]]:
    points = []
    for ef in (16, 32, 64, 128):
        with Timer() as t:
            rows = search(queries, ef)
        rate = round(len(queries) / t.cpu_seconds)
        points.append({"ef": ef, "users_per_s": rate, "recall@10": recall(rows, truth)})
    return points


def _hnswlib(items, queries, truth, moved, new) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import hnswlib

    index = hnswlib.Index(space="ip", dim=DIM)
    index.init_index(max_elements=len(items), M=16, ef_construction=64, random_seed=0)
    with Timer() as build:
        index.add_items(items, np.arange(len(items)), num_threads=1)

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        index.set_ef(ef)
        return index.knn_query(q, k=K, num_threads=1)[0]

    with Timer() as update:
        index.add_items(new, moved, num_threads=1)  # an existing label: replaced in place
    return {
        "version": getattr(hnswlib, "__version__", "0.8.0"),
        "build_items_per_s": round(len(items) / build.seconds),
        "sweep": _sweep(search, queries, truth),
        "update": "in place (add_items on an existing label re-links the point)",
        "update_rows_per_s": round(len(moved) / update.seconds),
        "count_after_update": int(index.get_current_count()),
    }


def _faiss(items, queries, truth, moved, new) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexHNSWFlat(DIM, 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 64
    with Timer() as build:
        index.add(items)

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        index.hnsw.efSearch = ef
        return index.search(q, K)[1]

    try:
        index.remove_ids(moved)
        update = "remove_ids works"
    except RuntimeError as error:
        update = f"none: {str(error).splitlines()[0][:120]} (a moved vector needs a rebuild)"
    return {
        "version": faiss.__version__,
        "build_items_per_s": round(len(items) / build.seconds),
        "sweep": _sweep(search, queries, truth),
        "update": update,
    }


def _usearch(items, queries, truth, moved, new) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    import usearch
    from usearch.index import Index

    index = Index(ndim=DIM, metric="ip", dtype="f32", connectivity=16, expansion_add=64)
    with Timer() as build:
        index.add(np.arange(len(items)), items, threads=1)

    def search(q: np.ndarray, ef: int) -> np.ndarray:
        index.expansion_search = ef
        return np.asarray(index.search(q, K, threads=1).keys)

    with Timer() as update:
        index.remove(moved)
        index.add(moved, new, threads=1)
    return {
        "version": usearch.__version__,
        "build_items_per_s": round(len(items) / build.seconds),
        "sweep": _sweep(search, queries, truth),
        "update": "remove + add (removed nodes are tombstones until compaction)",
        "update_rows_per_s": round(len(moved) / update.seconds),
        "count_after_update": len(index),
    }


LIBRARIES = {"hnswlib": _hnswlib, "faiss": _faiss, "usearch": _usearch}


def chosen_at(size: int, users: int, exact_rate: float) -> dict[str, Any]:
    """Our ANN path at `size` items: LiveSearch over HnswIndex, exclusions, live re-scoring."""
    import torch

    from consumers.model.ann import HnswIndex, LiveSearch, exact_top_k
    from consumers.model.config import SearchConfig

    items, queries = catalogue(size, users, seed=4)
    seen = watched(users, size)
    table, q = torch.from_numpy(items.copy()), torch.from_numpy(queries)
    truth = exact_top_k(q, table, K, seen)[1].numpy()
    config = SearchConfig()  # the defaults the learner uses
    index = HnswIndex(DIM, "ip", config.m, config.ef_construction, capacity=size, threads=2)
    live = LiveSearch(index, config.refresh_every, config.sweep_rows, config.overfetch)
    with Timer() as build:
        live.sync(table)  # the first search adds every row (2 threads)
    index.threads = 1
    points = []
    for ef in (24, 32, 48, 64, 96):
        index.ef_search = ef
        live.search(q[:16], table, K, seen[:16])  # warm
        with Timer() as t:
            _, rows = live.search(q, table, K, seen)
        rate = users / t.cpu_seconds
        points.append(
            {
                "ef": ef,
                "users_per_s": round(rate),
                "recall@10": round(recall(rows.numpy(), truth), 4),
                "speedup_vs_exact": round(rate / exact_rate, 1),
            }
        )
        print(f"hnswlib via LiveSearch at {size:,} items: {points[-1]}")
    good = [p for p in points if p["recall@10"] >= 0.95]
    best = max(good, key=lambda p: p["users_per_s"]) if good else points[-1]
    index.ef_search = best["ef"]

    # Staleness: 10% of item rows move (a learning step's worth, many times over).
    rng = np.random.default_rng(6)
    moved = rng.choice(size, size // 10, replace=False)
    table[moved] += (
        0.5
        * torch.from_numpy(rng.standard_normal((moved.size, DIM)).astype(np.float32))
        * table[moved].norm(dim=1, keepdim=True)
        / np.sqrt(DIM)
    )
    truth = exact_top_k(q, table, K, seen)[1].numpy()
    live.refresh_every = 10**9  # search without refreshing: candidates from the stale graph
    stale = recall(live.search(q, table, K, seen)[1].numpy(), truth)
    live.mark_moved(moved.tolist())
    live.refresh_every, live.sweep_rows = 1, 0
    with Timer() as refresh:
        live.sync(table)
    fresh = recall(live.search(q, table, K, seen)[1].numpy(), truth)
    print(f"moved 10% of items: recall@10 {stale:.4f} stale, {fresh:.4f} after refresh")
    return {
        "items": size,
        "users": users,
        "build_seconds_2_threads": round(build.seconds, 1),
        "sweep": points,
        "chosen_ef": best["ef"],
        "users_per_s": best["users_per_s"],
        "recall@10": best["recall@10"],
        "speedup_vs_exact": best["speedup_vs_exact"],
        "staleness": {
            "moved_rows": int(moved.size),
            "recall@10_before_refresh": round(stale, 4),
            "recall@10_after_refresh": round(fresh, 4),
            "refresh_rows_per_s_1_thread": round(moved.size / refresh.seconds),
        },
    }


def live_rate(size: int, users: int, k: int) -> tuple[float, float, np.ndarray]:
    """Exact and LiveSearch (HNSW, the defaults) users/s for the top `k`, and the graph's
    recall@10 against exact."""
    import torch

    from consumers.model.ann import HnswIndex, LiveSearch, exact_top_k
    from consumers.model.config import SearchConfig

    items, queries = catalogue(size, users, seed=7)
    seen = watched(users, size)
    table, q = torch.from_numpy(items), torch.from_numpy(queries)
    exact_top_k(q[:8], table, k, seen[:8])  # warm
    with Timer() as t:
        exact_top_k(q, table, k, seen)
    exact_rate = users / t.cpu_seconds
    config = SearchConfig()
    index = HnswIndex(DIM, "ip", config.m, config.ef_construction, config.ef_search, size)
    live = LiveSearch(index, config.refresh_every, config.sweep_rows, config.overfetch)
    live.search(q[:8], table, k, seen[:8])  # builds the graph
    with Timer() as t:
        found = live.search(q, table, k, seen)[1].numpy()
    return exact_rate, users / t.cpu_seconds, found[:, :K]


def crossover(sizes: list[int], users: int) -> dict[str, Any]:
    """Exact vs HNSW users/s per size for a full search: the incremental lists' top C
    where they are on, else the published list's top N."""
    from consumers.model.config import ModelConfig, SearchConfig

    k = SearchConfig().candidates or ModelConfig().top_n
    points = []
    for size in sizes:
        exact_rate, hnsw_rate, found = live_rate(size, users, k)
        items, queries = catalogue(size, users, seed=7)
        truth, _ = exact(items, queries, watched(users, size))
        points.append(
            {
                "items": size,
                "exact_users_per_s": round(exact_rate),
                "hnsw_users_per_s": round(hnsw_rate),
                "hnsw_over_exact": round(hnsw_rate / exact_rate, 2),
                "hnsw_recall@10": round(recall(found, truth), 4),
            }
        )
        print(f"top-{k} at {size:>9,} items: {points[-1]}")
    faster = [p["items"] for p in points if p["hnsw_over_exact"] > 1]
    return {"k": k, "users": users, "points": points, "hnsw_faster_from": min(faster, default=None)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="100k items instead of 1M")
    parser.add_argument("--crossover", action="store_true", help="only the auto threshold")
    args = parser.parse_args()
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}")
    if args.crossover:
        sizes = [10_000, 20_000, 50_000, 100_000, 200_000]
        write("topn_crossover", {"machine": info, "threads": 1, **crossover(sizes, 500)})
        return
    big = 100_000 if args.quick else 1_000_000
    sizes = [10_000, 100_000] + ([] if args.quick else [1_000_000])
    exact_part = exact_rates(sizes, users=512)
    libraries = compare_libraries(50_000 if args.quick else 200_000, 1000)
    big_exact = next(e["users_per_s"] for e in exact_part if e["items"] == big)
    chosen = chosen_at(big, 2000, big_exact)
    met = chosen["recall@10"] >= 0.95 and chosen["speedup_vs_exact"] >= 50
    print(
        f"ANN at {big:,} items: {chosen['users_per_s']:,} users/s = "
        f"{chosen['speedup_vs_exact']}x exact ({big_exact:,.0f}/s), recall@10 "
        f"{chosen['recall@10']}; target >= 50x and >= 0.95: {verdict(met)}"
    )
    write(
        "topn",
        {
            "machine": info,
            "k": K,
            "dim": DIM,
            "watched_per_user": WATCHED,
            "threads": 1,
            "exact": exact_part,
            "libraries": libraries,
            "ann": chosen,
            "target": {"recall@10": 0.95, "speedup_vs_exact": 50, "items": big},
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
