"""Tables and id registries in shared memory, for several worker processes on one host.

Every array is a file in one directory (by default under /dev/shm), mapped
MAP_SHARED by each process. Files are sparse: a table of 10M rows costs
memory only for the rows in use, so capacities are set generously and growth
is the kernel's page allocation.

Writers of new ids take one lock; lookups take none. An id becomes visible
only once it is complete: its text, the row count, then its hash and slot are
written, in that order (x86 keeps stores in order), and a reader trusts a slot
only after comparing the text. So any row a reader finds is below `len(registry)`,
and `SharedTable.grow_to(len(registry))` (the learner's `sync_rows`, before it
touches rows) initialises it before use. Embedding rows themselves are updated
without locks (Hogwild): concurrent updates of one row may lose a little of a
step, never corrupt the table.

Each process caches the rows it has resolved (up to CACHE_LIMIT). That is safe
because ids are forgotten only by the worker that owns them (a user's views, and
so the tombstone that forgets them, reach one worker), which drops its cache entry.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from consumers.model.packing import FORGOTTEN, INTEGER, STRING, pack_ids, unpack_ids
from consumers.model.tables import RowStorage
from streamer.events import Id, id_text

EMPTY, DELETED = 0, -1  # slot values; a live slot holds row + 1
HEADER_COUNT, HEADER_TEXT, HEADER_INITIALISED = 0, 1, 2
MEAN_ID_BYTES = 24
# Rows each process caches (~110 bytes each); past it the cache starts again, so a
# host with 10M ids does not hold a private dict of them per worker (benchmarks/memory.py).
CACHE_LIMIT = 1 << 18


class Lock(Protocol):
    def __enter__(self) -> Any: ...

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
        /,
    ) -> Any: ...


class RegistryFull(RuntimeError):
    """More ids than the shared registry was created for; raise its capacity."""


def open_array(directory: Path, name: str, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    """A shared, file-backed array; created (sparse, zero) when the file is missing."""
    path = directory / f"{name}.bin"
    mode: Literal["r+", "w+"] = "r+" if path.exists() else "w+"
    # A plain ndarray view: np.memmap's own indexing costs microseconds per access.
    return np.memmap(path, dtype=dtype, mode=mode, shape=shape).view(np.ndarray)


def stable_hash(text: bytes) -> int:
    """A 63-bit hash that is the same in every process (unlike `hash`)."""
    return (zlib.crc32(text, 0x9E3779B9) << 31 | zlib.crc32(text)) & ((1 << 63) - 1)


class SharedIdRegistry:
    """`IdRegistry`'s interface over an open-addressing hash table in shared memory."""

    def __init__(self, directory: Path, name: str, capacity: int, lock: Lock) -> None:
        self.capacity = capacity
        self.lock = lock
        slots = 1 << max(4, (2 * capacity - 1).bit_length())
        self._mask = slots - 1
        self._slots = open_array(directory, f"{name}.slots", "int64", (slots,))
        self._hashes = open_array(directory, f"{name}.hashes", "int64", (slots,))
        self._offsets = open_array(directory, f"{name}.offsets", "int64", (capacity + 1,))
        self._kinds = open_array(directory, f"{name}.kinds", "uint8", (capacity,))
        self._text = open_array(directory, f"{name}.text", "uint8", (capacity * MEAN_ID_BYTES,))
        self._header = open_array(directory, f"{name}.header", "int64", (4,))
        self._cache: dict[str, int] = {}
        self._raw_cache: dict[int, Id] = {}

    def __len__(self) -> int:
        """Rows handed out, forgotten ones included."""
        return int(self._header[HEADER_COUNT])

    def __contains__(self, raw: object) -> bool:
        return isinstance(raw, str | int) and self.row(raw) is not None

    def _find(self, text: bytes, digest: int) -> tuple[int, int]:
        """(row or -1, the slot where the probe stopped)."""
        slot = digest & self._mask
        while True:
            value = int(self._slots[slot])
            if value == EMPTY:
                return -1, slot
            if value != DELETED and int(self._hashes[slot]) == digest:
                row = value - 1
                start, end = int(self._offsets[row]), int(self._offsets[row + 1])
                if self._text[start:end].tobytes() == text:
                    return row, slot
            slot = (slot + 1) & self._mask

    def row(self, raw: Id) -> int | None:
        key = id_text(raw)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        text = key.encode("utf-8")
        found, _ = self._find(text, stable_hash(text))
        if found < 0:
            return None
        self._remember(key, found)
        return found

    def _remember(self, key: str, row: int) -> None:
        if len(self._cache) >= CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = row

    def add(self, raw: Id) -> int:
        key = id_text(raw)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        text = key.encode("utf-8")
        digest = stable_hash(text)
        found, _ = self._find(text, digest)
        if found < 0:
            with self.lock:
                found, slot = self._find(text, digest)  # another writer may have won
                if found < 0:
                    found = self._insert(raw, text, digest, slot)
        self._remember(key, found)
        return found

    def _insert(self, raw: Id | None, text: bytes, digest: int, slot: int | None) -> int:
        """Append a row (a forgotten one when `raw` is None: no slot leads to it)."""
        row = int(self._header[HEADER_COUNT])
        start = int(self._header[HEADER_TEXT])
        if row >= self.capacity or start + len(text) > self._text.shape[0]:
            raise RegistryFull(f"shared registry is full at {row:,} ids; raise its capacity")
        self._text[start : start + len(text)] = np.frombuffer(text, dtype=np.uint8)
        self._offsets[row + 1] = start + len(text)
        self._kinds[row] = FORGOTTEN if raw is None else INTEGER if isinstance(raw, int) else STRING
        self._header[HEADER_TEXT] = start + len(text)
        self._header[HEADER_COUNT] = row + 1  # before the slot: found rows are counted
        if slot is not None:
            self._hashes[slot] = digest
            self._slots[slot] = row + 1  # published: readers may now find it
        return row

    def add_many(self, raws: Iterable[Id]) -> np.ndarray:
        return np.fromiter((self.add(raw) for raw in raws), dtype=np.int64)

    def raw(self, row: int) -> Id:
        """The id of a live row; None (as `IdRegistry`) for a forgotten one."""
        if self._kinds[row] == FORGOTTEN:
            return None  # type: ignore[return-value]
        start, end = int(self._offsets[row]), int(self._offsets[row + 1])
        text = self._text[start:end].tobytes().decode("utf-8")
        return int(text) if self._kinds[row] == INTEGER else text

    def raws(self, rows: Iterable[int]) -> list[Id]:
        """Ids of live rows, through a per-process cache (a publish names ~20k ids). A
        process forgets only the users it owns, the only ones it publishes, and drops
        them from its own cache; `raw` and `live_rows` read the shared state."""
        cache, out = self._raw_cache, []
        for row in rows:
            raw = cache.get(row)
            if raw is None:
                if len(cache) >= CACHE_LIMIT:
                    cache.clear()
                raw = cache[row] = self.raw(row)
            out.append(raw)
        return out

    def live_rows(self) -> np.ndarray:
        """Rows an id maps to now (forgotten ones left out), ascending."""
        return np.flatnonzero(self._kinds[: len(self)] != FORGOTTEN)

    def forget(self, raw: Id) -> int | None:
        self._cache.pop(id_text(raw), None)
        text = id_text(raw).encode("utf-8")
        with self.lock:
            found, slot = self._find(text, stable_hash(text))
            if found < 0:
                return None
            self._slots[slot] = DELETED
            self._kinds[found] = FORGOTTEN
            self._raw_cache.pop(found, None)
            return found

    def state(self) -> dict[str, Tensor]:
        kinds = self._kinds[: len(self)]
        return pack_ids(
            [None if kind == FORGOTTEN else self.raw(row) for row, kind in enumerate(kinds)]
        )

    def load_state(self, packed: dict[str, Tensor]) -> None:
        """Refill an empty registry from `pack_ids` form, rows in the same order."""
        if len(self):
            raise ValueError("load_state needs an empty shared registry")
        with self.lock:
            for raw in unpack_ids(packed):
                if raw is None:
                    self._insert(None, b"", 0, None)
                    continue
                text = id_text(raw).encode("utf-8")
                digest = stable_hash(text)
                self._insert(raw, text, digest, self._find(text, digest)[1])


class SharedTable(RowStorage):
    """`EmbeddingTable`'s interface over a fixed-capacity shared table.

    Rows are initialised N(0, init_std) once, by whichever process first needs them.
    """

    def __init__(
        self,
        directory: Path,
        name: str,
        capacity: int,
        dim: int,
        init_std: float,
        generator: torch.Generator,
        lock: Lock,
    ) -> None:
        self.dim = dim
        self.init_std = init_std
        self.lock = lock
        self._generator = generator
        self._weight = torch.from_numpy(
            open_array(directory, f"{name}.weight", "float32", (capacity, dim))
        )
        self._accumulator = torch.from_numpy(
            open_array(directory, f"{name}.accumulator", "float32", (capacity,))
        )
        self._header = open_array(directory, f"{name}.header", "int64", (4,))
        self.rows = int(self._header[HEADER_INITIALISED])

    def grow_to(self, rows: int) -> None:
        if rows <= self.rows:
            return
        if rows > self.capacity:
            raise RegistryFull(f"shared table is full at {self.capacity:,} rows")
        with self.lock:
            done = int(self._header[HEADER_INITIALISED])
            if rows > done:
                fresh = torch.randn(rows - done, self.dim, generator=self._generator)
                self._weight[done:rows] = fresh * self.init_std
                self._header[HEADER_INITIALISED] = rows
        self.rows = max(rows, int(self._header[HEADER_INITIALISED]))

    def load(self, weight: Tensor, accumulator: Tensor) -> None:
        rows = weight.shape[0]
        if rows > self.capacity:
            raise RegistryFull(f"checkpoint has {rows:,} rows, table holds {self.capacity:,}")
        with self.lock:
            self._weight[:rows] = weight
            self._accumulator[:rows] = accumulator
            self._header[HEADER_INITIALISED] = rows
        self.rows = rows
