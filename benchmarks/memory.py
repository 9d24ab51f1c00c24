"""Memory: resident bytes per user row (embedding + optimizer state + id map) at 1M and
10M ids, against the raw float32 bytes of the embedding (dim x 4).

Each case runs in a fresh process that registers N ids ("user-0000123"), gives each a
table row (initialised, as the learner does) and touches its Adagrad accumulator;
resident bytes are that process's VmRSS growth (private memory plus the shared-memory
pages it mapped and touched), cross-checked with the bytes the shared files hold.

- shared: what `consume --workers N` uses (consumers/model/shared.py): an open-addressing
  registry and a fixed table in /dev/shm, one copy for every worker of the host;
- local: what one learner uses (consumers/model/registry.py + tables.py): a dict
  registry and a table grown by 1.5x steps.

    PYTHONPATH=. python benchmarks/memory.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

sys.path.insert(0, __file__.rsplit("/", 2)[0])
from benchmarks.common import Timer, describe, machine, pin_threads, verdict, write

DIM = 64
RAW = DIM * 4
TARGET = 1.5  # x raw table bytes, at 10M ids


def rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("RssAnon", "RssFile", "RssShmem")):
            name, value = line.split(":")
            out[name] = int(value.split()[0]) * 1024
    return out


def child(kind: str, n: int) -> dict[str, Any]:
    import torch

    from consumers.model.config import ModelConfig
    from consumers.model.storage import SharedLayout, local_storage, shared_storage

    pin_threads(1)
    config = ModelConfig(dim=DIM)
    directory = Path(tempfile.mkdtemp(prefix="recstream-memory-", dir="/dev/shm"))
    warm = local_storage(config, torch.Generator())  # every import and lazy load done
    warm.users.add_many(["warm-up"])
    warm.user_table.grow_to(1)
    try:
        before, detail_before = rss(), status()
        with Timer() as t:
            if kind == "shared":
                storage = shared_storage(
                    SharedLayout(directory, max_users=n, max_items=1), config,
                    torch.Generator(), threading.Lock(),
                )  # fmt: skip
                users, table = storage.users, storage.user_table
            else:
                storage = local_storage(config, torch.Generator())
                users, table = storage.users, storage.user_table
            step = 1_000_000
            for start in range(0, n, step):
                users.add_many(f"user-{i:07d}" for i in range(start, min(start + step, n)))
                table.grow_to(len(users))
                table.accumulator[start:] = 0.1  # every row has had an update
        grown = rss() - before
        detail = {k: v - detail_before.get(k, 0) for k, v in status().items()}
        files = sum(os.stat(p).st_blocks * 512 for p in directory.iterdir())
        return {
            "kind": kind,
            "ids": n,
            "seconds": round(t.seconds, 1),
            "resident_bytes": grown,
            "resident_detail": detail,
            "shared_file_bytes": files,
            "bytes_per_row": round(grown / n, 1),
            "ratio_to_raw": round(grown / n / RAW, 3),
            "table_capacity": table.capacity,
        }
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="1M ids only")
    parser.add_argument("--child", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], int(args.child[1]))))
        return
    info = machine()
    print(f"machine: {describe(info)}; dim {DIM}: raw {RAW} bytes per row")
    sizes = [1_000_000] if args.quick else [1_000_000, 10_000_000]
    cases = []
    for kind in ("shared", "local"):
        for n in sizes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(n)],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
            )
            case = json.loads(out.stdout.strip().splitlines()[-1])
            cases.append(case)
            print(
                f"{kind:>6} {n:>11,} ids: {case['bytes_per_row']:>7.1f} bytes/row = "
                f"{case['ratio_to_raw']:.2f}x raw ({case['seconds']} s to fill)"
            )
    at = max(sizes)
    best = min(c["ratio_to_raw"] for c in cases if c["ids"] == at)
    met = at == 10_000_000 and best <= TARGET
    print(f"at {at:,} ids: best {best:.2f}x raw table bytes; target <= {TARGET}x: {verdict(met)}")
    write(
        "memory",
        {
            "machine": info,
            "dim": DIM,
            "raw_bytes_per_row": RAW,
            "cases": cases,
            "target_ratio_at_10M": TARGET,
            "met": met,
        },
    )


if __name__ == "__main__":
    main()
