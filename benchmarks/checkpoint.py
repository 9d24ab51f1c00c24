"""Checkpoint cost at production size: 1M users x 64 dims, 100k items, ~20 views per user.

Builds a learner state of that size through the public API (registries of string ids,
tables, histories, popularity), then times what the service does:

- write: `OnlineLearner.state()` and `Publisher.state()` + `LocalCheckpoints.write` (a
  host of one: shared part and worker part in safetensors, JSON manifest, sha256, fsync,
  atomic rename);
- read + restore: `LocalCheckpoints.read` (sha256 verified, parts united) +
  `OnlineLearner.load_state` and `Publisher.load_state`;

and, as the baseline measured in the same run, a raw dump of the two float32 tables
(`numpy.tofile` + fsync) and its read back. Reads follow writes, so they hit the page
cache (a cold read adds disk time). One torch thread, as in a learner process.

    PYTHONPATH=. python benchmarks/checkpoint.py [--users 1000000] [--dir /tmp/x]

Prints a summary and writes `benchmarks/results/checkpoint.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import machine, pin_threads
from consumers.durability.manifest import WorkerManifest
from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.learner import OnlineLearner
from consumers.model.config import ModelConfig
from consumers.model.mf import MatrixFactorization
from consumers.publisher import Publisher
from consumers.service import load_process_state, process_state
from consumers.sinks.memory import MemoryStore

RESULTS = Path(__file__).resolve().parent / "results" / "checkpoint.json"


def build(users: int, items: int, dim: int, history: int, seed: int) -> Publisher:
    """A learner (and its publisher) holding `users` x `dim` and `items` x `dim` tables
    and histories."""
    model = MatrixFactorization(ModelConfig(dim=dim, seed=seed))
    learner = OnlineLearner(model)
    model.users.add_many(f"u{n}" for n in range(users))
    model.items.add_many(f"i{n}" for n in range(items))
    model.sync_rows()  # tables initialised N(0, init_std), one history per user
    rng = np.random.default_rng(seed)
    watched = rng.integers(0, items, size=(users, history))
    model.history.add(np.repeat(np.arange(users), history), watched.ravel())
    learner.popularity.add(watched[:, 0].copy())
    return Publisher(learner, MemoryStore())


def tables(publisher: Publisher) -> MatrixFactorization:
    model = publisher.learner.model
    assert isinstance(model, MatrixFactorization)
    return model


def timed(action: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = action()
    return result, time.perf_counter() - started


def raw_baseline(publisher: Publisher, directory: Path) -> tuple[float, float, int]:
    """Dump the float32 tables as bare bytes (+ fsync) and read them back: the floor."""
    path = directory / "tables.f32"
    model = tables(publisher)
    weights = [model.user_table.weight, model.item_table.weight]

    def write() -> None:
        with path.open("wb") as handle:
            for weight in weights:
                weight.numpy().tofile(handle)
            handle.flush()
            os.fsync(handle.fileno())

    _, write_s = timed(write)
    _, read_s = timed(lambda: np.fromfile(path, dtype=np.float32))
    size = path.stat().st_size
    path.unlink()
    return write_s, read_s, size


def directory_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--history", type=int, default=20, help="views per user")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    pin_threads(1)

    print(f"building {args.users:,} users x {args.dim} + {args.items:,} items ...", flush=True)
    publisher, build_s = timed(
        lambda: build(args.users, args.items, args.dim, args.history, seed=0)
    )
    print(f"  built in {build_s:.1f} s", flush=True)
    root = Path(tempfile.mkdtemp(prefix="recstream-ckpt-bench-", dir=args.dir))
    directory = root / "checkpoints"
    checkpoints = LocalCheckpoints(CheckpointPolicy(directory, keep=2))
    runs: list[dict[str, float]] = []
    try:
        for _ in range(args.repeats):
            raw_write_s, raw_read_s, raw_bytes = raw_baseline(publisher, root)
            (tensors, entries), state_s = timed(
                partial(process_state, publisher.learner, publisher)
            )
            offsets = [["recstream.views", 0, args.users * args.history]]
            manifest = WorkerManifest.from_json(dict(entries, positions=offsets, applied=offsets))
            _, write_s = timed(
                partial(checkpoints.write, lambda t=tensors, m=manifest: (t, m), True)
            )
            del tensors
            read, read_s = timed(checkpoints.read)
            assert read is not None
            restored = Publisher(
                OnlineLearner(MatrixFactorization(tables(publisher).config)), MemoryStore()
            )
            _, restore_s = timed(
                partial(
                    load_process_state,
                    restored.learner,
                    restored,
                    read.tensors,
                    read.manifest.to_json(),
                )
            )
            want, got = tables(publisher), tables(restored)
            assert torch.equal(got.user_table.weight, want.user_table.weight)
            last = len(want.users) - 1
            assert np.array_equal(got.history.items(last), want.history.items(last))
            runs.append(
                {
                    "state_s": state_s,
                    "write_file_s": write_s,
                    "write_s": state_s + write_s,
                    "read_verify_s": read_s,
                    "restore_s": restore_s,
                    "read_restore_s": read_s + restore_s,
                    "bytes_on_disk": directory_bytes(max(directory.glob("ckpt-*"))),
                    "raw_table_write_s": raw_write_s,
                    "raw_table_read_s": raw_read_s,
                    "raw_table_bytes": raw_bytes,
                }
            )
            del read, restored
            print(
                f"  write {runs[-1]['write_s']:.2f} s (state {state_s:.2f} + file {write_s:.2f}),"
                f" read+restore {runs[-1]['read_restore_s']:.2f} s"
                f" (read+verify {read_s:.2f} + restore {restore_s:.2f});"
                f" raw tables: write {raw_write_s:.2f} s, read {raw_read_s:.2f} s",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)

    # Medians: the box may be shared (its load average is recorded with the machine).
    median = {name: float(np.median([run[name] for run in runs])) for name in runs[0]}
    result = {
        "benchmark": "checkpoint write and restore",
        "machine": machine(),
        "shape": {
            "users": args.users,
            "items": args.items,
            "dim": args.dim,
            "history_per_user": args.history,
        },
        "repeats": args.repeats,
        "median": median,
        "runs": runs,
        "ratios": {
            "bytes_on_disk_per_raw_table_byte": median["bytes_on_disk"] / median["raw_table_bytes"],
            "write_per_raw_table_write": median["write_s"] / median["raw_table_write_s"],
            "read_restore_per_raw_table_read": median["read_restore_s"]
            / median["raw_table_read_s"],
        },
        "notes": "reads follow writes (page cache warm); times are medians of the repeats",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    mib = 1 << 20
    print(
        f"\n{result['machine']['cpu']}, {result['machine']['cores']} cores, 1 torch thread\n"
        f"{args.users:,} users x {args.dim} + {args.items:,} items, "
        f"{args.history} views per user (median of {args.repeats}):\n"
        f"  write        {median['write_s']:6.2f} s   "
        f"({result['ratios']['write_per_raw_table_write']:.1f}x a raw table dump)\n"
        f"  read+restore {median['read_restore_s']:6.2f} s   "
        f"({result['ratios']['read_restore_per_raw_table_read']:.1f}x a raw table read)\n"
        f"  on disk      {median['bytes_on_disk'] / mib:6.0f} MiB "
        f"({result['ratios']['bytes_on_disk_per_raw_table_byte']:.2f}x the raw float32 tables,"
        f" {median['raw_table_bytes'] / mib:.0f} MiB)\n"
        f"wrote {args.out}"
    )


if __name__ == "__main__":
    main()
