"""The learner's hot path without services: OnlineLearner.learn then Publisher.add
(prequential scoring, learning, publishing to the in-memory store) over the synthetic
stream in micro-batches of 512, as `recstream demo` and each `consume` worker run it.
Prints events per second of wall time and of CPU time (this process's: steadier on a
busy machine), and with --profile the pyinstrument tree. Compare two trees with `--tree DIR` (e.g. a
`git worktree` of an older commit): both run in this one process, interleaved.

    PYTHONPATH=. python benchmarks/hot_path.py [--tree OLD_CHECKOUT] [--profile]
        [--users 50000 --items 20000]   # the end-to-end benchmark's world
"""

from __future__ import annotations

import argparse
import importlib
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import describe, machine, pin_threads, write

EVENTS, WARM, BATCH = 60_000, 20_000, 512


def load(tree: Path) -> dict[str, Any]:
    """The hot path's modules as `tree` has them (a fresh import of the `consumers` package);
    a tree from before learner and publisher were split has `consumers.pipeline` instead."""
    for name in [m for m in sys.modules if m.split(".")[0] in ("consumers", "streamer")]:
        del sys.modules[name]
    sys.path.insert(0, str(tree))
    split = (tree / "consumers" / "learner.py").exists()
    try:
        return {
            **(
                {
                    "learner": importlib.import_module("consumers.learner"),
                    "publisher": importlib.import_module("consumers.publisher"),
                    "mf": importlib.import_module("consumers.model.mf"),
                }
                if split
                else {"pipeline": importlib.import_module("consumers.pipeline")}
            ),
            "config": importlib.import_module("consumers.model.config"),
            "memory": importlib.import_module("consumers.sinks.memory"),
            "datasets": importlib.import_module("streamer.datasets"),
        }
    finally:
        sys.path.remove(str(tree))


def processor(modules: dict[str, Any]) -> Callable[[list[Any]], object]:
    """One micro-batch through the learner, then the publisher, as the service runs them."""
    config, store = modules["config"].ModelConfig(), modules["memory"].MemoryStore()
    if "pipeline" in modules:
        return modules["pipeline"].OnlineRecommender(config, store).process  # type: ignore[no-any-return]
    learner = modules["learner"].OnlineLearner(modules["mf"].MatrixFactorization(config))
    publisher = modules["publisher"].Publisher(learner, store)
    return lambda events: publisher.add(learner.learn(events, publisher.served))


def run(modules: dict[str, Any], profile: bool, world: dict[str, int]) -> dict[str, float]:
    stream = modules["datasets"].open_dataset("synthetic", **world)
    events = list(itertools.islice(stream, EVENTS))
    process = processor(modules)
    for start in range(0, WARM, BATCH):
        process(events[start : start + BATCH])
    profiler = None
    if profile:
        from pyinstrument import Profiler

        profiler = Profiler(interval=0.001)
        profiler.start()
    wall, cpu = time.perf_counter(), time.process_time()
    for start in range(WARM, EVENTS, BATCH):
        process(events[start : start + BATCH])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler is not None:
        profiler.stop()
        print(profiler.output_text(unicode=False, color=False))
    n = EVENTS - WARM
    return {"events_per_s": round(n / wall), "events_per_cpu_s": round(n / cpu)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tree", type=Path, help="an older checkout to compare against")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--users", type=int, default=2_000, help="synthetic world (its default)")
    parser.add_argument("--items", type=int, default=1_000)
    args = parser.parse_args()
    world = {"n_users": args.users, "n_items": args.items}
    pin_threads(1)
    info = machine()
    print(f"machine: {describe(info)}; one thread")
    here = Path(__file__).resolve().parents[1]
    trees = {"this tree": here} | ({"before": args.tree.resolve()} if args.tree else {})
    best: dict[str, dict[str, float]] = {}
    for round_ in range(args.rounds):
        for name, tree in trees.items():
            result = run(load(tree), args.profile and round_ == 0, world)
            print(f"{name:>10}: {result}")
            kept = best.setdefault(name, result)
            for key, value in result.items():
                kept[key] = max(kept[key], value)
    report: dict[str, Any] = {
        "machine": info,
        "batch": BATCH,
        "events": EVENTS - WARM,
        "world": world,
    }
    report["best_of_rounds"] = best
    if "before" in best:
        report["speedup_cpu"] = round(
            best["this tree"]["events_per_cpu_s"] / best["before"]["events_per_cpu_s"], 2
        )
        print(f"this tree / before, events per CPU second: {report['speedup_cpu']}x")
    suffix = "" if world == {"n_users": 2_000, "n_items": 1_000} else f"_{args.items}_items"
    write(f"hot_path{suffix}", report)


if __name__ == "__main__":
    main()
