"""Shared-memory registries and tables: one consistent id space across processes."""

from __future__ import annotations

import multiprocessing
import queue
import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from consumers.model.registry import IdRegistry
from consumers.model.shared import RegistryFull, SharedIdRegistry, SharedTable

SPAWN = multiprocessing.get_context("spawn")


def _register(directory: str, lock: Any, offset: int, out: queue.Queue[dict[str, int]]) -> None:
    registry = SharedIdRegistry(Path(directory), "users", 20_000, lock)
    ids = [f"u{(i * 7 + offset) % 5000}" for i in range(10_000)]
    out.put(dict(zip(ids, registry.add_many(ids).tolist(), strict=True)))


def test_two_processes_registering_the_same_ids_get_the_same_rows(tmp_path: Path) -> None:
    lock, results = SPAWN.Lock(), SPAWN.Queue()
    workers = [
        SPAWN.Process(target=_register, args=(str(tmp_path), lock, k, results)) for k in range(2)
    ]
    for worker in workers:
        worker.start()
    seen = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
        assert worker.exitcode == 0
    registry = SharedIdRegistry(tmp_path, "users", 20_000, lock)
    assert len(registry) == 5000
    assert seen[0] == seen[1]
    assert sorted(seen[0].values()) == list(range(5000))
    assert all(registry.raw(row) == raw for raw, row in seen[0].items())


def test_the_shared_registry_behaves_like_the_local_one(tmp_path: Path) -> None:
    shared = SharedIdRegistry(tmp_path, "items", 100, SPAWN.Lock())
    local = IdRegistry()
    ids = ["a", 7, "b", "7", "a", "ünï", 12345678901234]
    assert shared.add_many(ids).tolist() == local.add_many(ids).tolist()
    assert shared.raws(range(len(shared))) == local.raws(range(len(local)))
    assert shared.forget(7) == local.forget(7) == 1
    assert shared.row("7") is None and "7" not in shared and "b" in shared
    assert shared.state().keys() == local.state().keys()
    for name, tensor in shared.state().items():
        assert torch.equal(tensor, local.state()[name]), name
    assert shared.add("7") == 5  # a forgotten id comes back as a new row


def test_a_registry_restores_from_checkpoint_form(tmp_path: Path) -> None:
    lock = SPAWN.Lock()
    first = (
        SharedIdRegistry(tmp_path / "a", "users", 100, lock)
        if (tmp_path / "a").mkdir() is None
        else None
    )
    assert first is not None
    first.add_many(["x", "y", 3])
    first.forget("y")
    (tmp_path / "b").mkdir()
    restored = SharedIdRegistry(tmp_path / "b", "users", 100, lock)
    restored.load_state(first.state())
    assert len(restored) == 3
    assert restored.row("x") == 0 and restored.row("y") is None and restored.row(3) == 2
    assert restored.add("z") == 3


def test_a_full_registry_says_so(tmp_path: Path) -> None:
    registry = SharedIdRegistry(tmp_path, "users", 2, SPAWN.Lock())
    registry.add_many(["a", "b"])
    with pytest.raises(RegistryFull):
        registry.add("c")


def test_shared_tables_initialise_rows_once_and_are_seen_by_every_opener(tmp_path: Path) -> None:
    lock = SPAWN.Lock()
    first = SharedTable(tmp_path, "items", 50, 4, 0.1, torch.Generator().manual_seed(1), lock)
    second = SharedTable(tmp_path, "items", 50, 4, 0.1, torch.Generator().manual_seed(2), lock)
    first.grow_to(10)
    second.grow_to(10)
    torch.testing.assert_close(first.weight, second.weight)
    second.weight[3] += 1.0
    torch.testing.assert_close(first.weight[3], second.weight[3])
    assert torch.all(first.weight.abs().sum(1) > 0)
    with pytest.raises(RegistryFull):
        first.grow_to(51)


class Preempted:
    """A shared array whose writer is interrupted after every store, while `look` runs."""

    def __init__(self, array: Any, look: Any) -> None:
        self.array, self.look, self.shape = array, look, array.shape

    def __getitem__(self, key: Any) -> Any:
        return self.array[key]

    def __setitem__(self, key: Any, value: Any) -> None:
        self.array[key] = value
        self.look()


def test_a_reader_never_finds_a_row_the_registry_does_not_count(tmp_path: Path) -> None:
    writer = SharedIdRegistry(tmp_path, "items", 100, SPAWN.Lock())
    reader = SharedIdRegistry(tmp_path, "items", 100, SPAWN.Lock())  # another process's view
    raw, seen = "", []

    def look() -> None:  # what another worker could see at this moment
        row = reader.row(raw)
        if row is not None:
            seen.append((row, len(reader)))

    for name in ("_slots", "_hashes", "_header", "_offsets", "_kinds"):
        setattr(writer, name, Preempted(getattr(writer, name), look))
    for n in range(20):
        raw = f"i{n}"
        writer.add(raw)
    assert seen and all(row < count for row, count in seen)


def test_shared_ids_come_back_through_the_cache_and_forgotten_rows_leave_it(
    tmp_path: Path,
) -> None:
    registry = SharedIdRegistry(tmp_path, "users", 100, threading.Lock())
    rows = registry.add_many(["a", 7, "b"]).tolist()
    assert registry.raws(rows) == ["a", 7, "b"]
    assert registry.raws(rows[::-1]) == ["b", 7, "a"]
    row = registry.forget("a")
    assert row == rows[0] and row not in registry._raw_cache
    assert registry.row("a") is None
