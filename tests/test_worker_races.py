"""A host's workers hard at work on few ids, in real processes over real shared memory:
no popularity increment is lost, and no row is seen before it is initialised."""

from __future__ import annotations

import multiprocessing
import os
import queue
from pathlib import Path
from typing import Any

import numpy as np
import torch

from consumers.model.popularity import Popularity
from consumers.model.shared import SharedIdRegistry, SharedTable, open_array

SPAWN = multiprocessing.get_context("spawn")
WORKERS, IDS = 3, 1500
HOT, ROUNDS = np.array([0, 1, 2] * 500), 3000


def _hammer(directory: str, lock: Any, start: Any, index: int, out: queue.Queue[int]) -> None:
    """Worker `index` adds every WORKERS-th id; the others look each up as soon as it
    appears and take its row as the learner does (grow the table to the registry).
    Then every worker counts views of a few hot items, many times."""
    where = Path(directory)
    registry = SharedIdRegistry(where, "items", IDS, lock)
    table = SharedTable(where, "item", IDS, 4, 0.1, torch.Generator().manual_seed(index), lock)
    popularity = Popularity(shared=(open_array(where, "popularity", "float64", (IDS,)), lock))
    unready = 0
    start.wait()
    for n in range(IDS):
        if n % WORKERS == index:
            row = registry.add(f"i{n}")
        else:
            while (found := registry.row(f"i{n}")) is None:
                os.sched_yield()
            row = found
        table.grow_to(len(registry))  # `sync_rows`, before the kernel touches rows
        unready += row >= table.rows or not bool(table.weight[row].any())
        popularity.add(np.array([row]))
    start.wait()
    for _ in range(ROUNDS):
        popularity.add(HOT)
    out.put(unready)


def test_workers_lose_no_count_and_see_no_unready_row(tmp_path: Path) -> None:
    lock, start, results = SPAWN.Lock(), SPAWN.Barrier(WORKERS, timeout=120), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_hammer, args=(str(tmp_path), lock, start, k, results))
        for k in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    unready = [results.get(timeout=240) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    assert unready == [0] * WORKERS
    counts = open_array(tmp_path, "popularity", "float64", (IDS,))
    expected = np.full(IDS, WORKERS, dtype=np.float64)  # each id's row, once per worker
    np.add.at(expected, HOT, WORKERS * ROUNDS)
    np.testing.assert_array_equal(counts, expected)
