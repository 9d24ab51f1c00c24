"""Item search for top-N lists: exact (one matmul + top-k) or an HNSW graph (hnswlib).

An `ItemIndex` holds a copy of item vectors under their table rows:

- `update(rows, vectors)` adds rows it has not seen and replaces the vectors of
  rows it has (hnswlib re-links a replaced point in place: no rebuild);
- `search(queries, k, exclude)` returns `(scores, rows)`, each `[queries, k]`,
  best first; `exclude[i]` holds rows query i may not get (a user's watched
  items). Slots that could not be filled have score -inf and row -1.

`LiveSearch` keeps an index in step with a table that keeps changing (the
learner moves item rows every batch) and re-scores the index's candidates with
the table's current vectors, so published scores are always current and only
the candidate set can lag. Its staleness policy: new rows are added at every
search; rows marked moved are re-inserted every `refresh_every` searches; and a
rolling sweep re-inserts `sweep_rows` further rows per refresh, so rows moved by
another process (a host's other workers) are re-inserted at least once every
`ceil(rows / sweep_rows)` refreshes.

hnswlib (chosen over faiss's HNSW and usearch by benchmarks/topn.py: it alone
replaces a point in place; see benchmarks/README.md) is imported lazily: exact
search needs only torch.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor

from consumers.model.topn import top_n

Space = Literal["ip", "cosine"]
Exclusions = Sequence[Collection[int]]
FETCH_STEP = 8
GROWTH = 1.5


class ItemIndex(Protocol):
    dim: int

    def __len__(self) -> int:
        """Rows held."""

    def update(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        """Add new rows, replace the vectors of known ones."""

    def search(
        self, queries: np.ndarray, k: int, exclude: Exclusions | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(scores float32, rows int64), each `[len(queries), k]`, best first."""


def _pad(n: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.full((n, k), -np.inf, dtype=np.float32), np.full((n, k), -1, dtype=np.int64)


def _last_write(rows: np.ndarray, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row once, with the last vector given for it."""
    unique, first = np.unique(np.asarray(rows, dtype=np.int64)[::-1], return_index=True)
    return unique, np.asarray(vectors, dtype=np.float32)[::-1][first]


def exact_top_k(
    queries: Tensor,
    vectors: Tensor,
    k: int,
    exclude: Exclusions | None = None,
    absent: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Exact top-`k` (scores, rows) by inner product (`top_n`, with exclusions given
    per query). `absent` (bool per row) marks rows that may never be returned. Slots
    left without a candidate have score -inf and row -1."""
    exclude_rows = exclude_items = None
    if exclude is not None:
        lengths = torch.tensor([len(seen) for seen in exclude], dtype=torch.long)
        owners = torch.repeat_interleave(torch.arange(len(exclude)), lengths)
        items = torch.tensor([i for seen in exclude for i in seen], dtype=torch.long)
        keep = items < vectors.shape[0]
        exclude_rows, exclude_items = owners[keep], items[keep]
    return top_n(queries, vectors, k, exclude_rows, exclude_items, absent)


class ExactIndex:
    """All vectors in one matrix; search is one matmul + top-k per chunk of queries."""

    def __init__(self, dim: int, capacity: int = 1024) -> None:
        self.dim = dim
        self._vectors = torch.zeros(capacity, dim)
        self._present = torch.zeros(capacity, dtype=torch.bool)
        self._rows = 0  # one past the highest row held
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def update(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        if rows.size == 0:
            return
        rows, vectors = _last_write(rows, vectors)
        needed = int(rows.max()) + 1
        capacity = self._vectors.shape[0]
        if needed > capacity:
            capacity = max(needed, int(capacity * GROWTH))
            grown = torch.zeros(capacity, self.dim)
            grown[: self._rows] = self._vectors[: self._rows]
            present = torch.zeros(capacity, dtype=torch.bool)
            present[: self._rows] = self._present[: self._rows]
            self._vectors, self._present = grown, present
        at = torch.from_numpy(np.ascontiguousarray(rows, dtype=np.int64))
        self._count += int((~self._present[torch.unique(at)]).sum())
        self._vectors[at] = torch.from_numpy(np.ascontiguousarray(vectors, dtype=np.float32))
        self._present[at] = True
        self._rows = max(self._rows, needed)

    def search(
        self, queries: np.ndarray, k: int, exclude: Exclusions | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(queries)
        out_s, out_r = _pad(n, k)
        if not self._count or not n:
            return out_s, out_r
        present = self._present[: self._rows]
        scores, rows = exact_top_k(
            torch.from_numpy(np.ascontiguousarray(queries, dtype=np.float32)),
            self._vectors[: self._rows],
            k,
            exclude,
            None if bool(present.all()) else ~present,
        )
        s, r = scores.numpy(), rows.numpy()
        found = np.isfinite(s)
        width = s.shape[1]
        out_s[:, :width] = np.where(found, s, -np.inf)
        out_r[:, :width] = np.where(found, r, -1)
        return out_s, out_r


class HnswIndex:
    """An hnswlib graph (inner product or cosine); replaced rows are re-linked in place.

    Exclusions are honoured by over-fetching `k + len(exclude[i])` candidates
    (queries grouped by that size, rounded up to a power of two) and filtering;
    a query whose exclusions exceed `max_fetch` may come back short.
    """

    def __init__(
        self,
        dim: int,
        space: Space = "ip",
        m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 64,
        capacity: int = 1024,
        threads: int = 1,
        seed: int = 0,
        max_fetch: int = 2048,
    ) -> None:
        import hnswlib

        self.dim = dim
        self.space = space
        self.ef_search = ef_search
        self.threads = threads
        self.max_fetch = max_fetch
        self._index: Any = hnswlib.Index(space=space, dim=dim)
        self._index.init_index(
            max_elements=capacity, M=m, ef_construction=ef_construction, random_seed=seed
        )
        self._ef = 0

    def __len__(self) -> int:
        return int(self._index.get_current_count())

    def update(self, rows: np.ndarray, vectors: np.ndarray) -> None:
        if rows.size == 0:
            return
        rows, vectors = _last_write(rows, vectors)
        capacity = int(self._index.get_max_elements())
        new = len(self) + rows.size  # an upper bound: some rows may be replacements
        if new > capacity:
            self._index.resize_index(max(new, int(capacity * GROWTH)))
        self._index.add_items(vectors, rows, num_threads=self.threads)

    def _set_ef(self, fetch: int) -> None:
        ef = max(self.ef_search, fetch)
        if ef != self._ef:
            self._index.set_ef(ef)
            self._ef = ef

    def search(
        self, queries: np.ndarray, k: int, exclude: Exclusions | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        n, count = len(queries), len(self)
        out_s, out_r = _pad(n, k)
        if not count or not n:
            return out_s, out_r
        sizes = np.zeros(n, dtype=np.int64) if exclude is None else _sizes(exclude)
        # Queries grouped by how many candidates they need (k + exclusions, in steps of
        # FETCH_STEP): one knn_query per group, ef no larger than the group needs.
        fetch = np.minimum(-(-(k + sizes) // FETCH_STEP) * FETCH_STEP, max(self.max_fetch, k))
        fetch = np.minimum(fetch, count)
        for size in np.unique(fetch).tolist():
            group = np.flatnonzero(fetch == size)
            self._set_ef(size)
            rows, distances = self._index.knn_query(
                queries[group], k=size, num_threads=self.threads
            )
            rows = rows.astype(np.int64)
            scores = (1.0 - distances).astype(np.float32)  # distances: 1 - ip, 1 - cosine
            if exclude is not None and sizes[group].any():
                banned = _excluded(rows, [exclude[i] for i in group.tolist()])
                scores[banned] = -np.inf
                # hnswlib returns candidates best first: move the kept ones to the front.
                order = np.argsort(banned, axis=1, kind="stable")
                rows = np.take_along_axis(rows, order, axis=1)
                scores = np.take_along_axis(scores, order, axis=1)
            width = min(k, size)
            rows, scores = rows[:, :width], scores[:, :width]
            out_s[group, :width] = scores
            out_r[group, :width] = np.where(np.isfinite(scores), rows, -1)
        return out_s, out_r


def _sizes(exclude: Exclusions) -> np.ndarray:
    return np.fromiter(map(len, exclude), np.int64, len(exclude))


def _excluded(rows: np.ndarray, exclude: Exclusions) -> np.ndarray:
    """Whether `rows[i, j]` is in `exclude[i]`, for every slot at once."""
    sizes = _sizes(exclude)
    owner = np.repeat(np.arange(len(exclude), dtype=np.int64), sizes)
    items = np.fromiter((r for seen in exclude for r in seen), np.int64, int(sizes.sum()))
    span = int(max(rows.max(initial=0), items.max(initial=0))) + 1
    keys = np.arange(len(rows), dtype=np.int64)[:, None] * span + rows
    return np.isin(keys, owner * span + items)


def make_index(
    kind: Literal["exact", "hnsw"], dim: int, space: Space = "ip", **options: Any
) -> ItemIndex:
    if kind == "exact":
        if space != "ip":
            raise ValueError("ExactIndex searches by inner product: normalise for cosine")
        return ExactIndex(dim)
    return HnswIndex(dim, space, **options)


class LiveSearch:
    """An index kept in step with a changing table; candidates re-scored live.

    `search` first syncs (new rows always; moved rows and a sweep slice every
    `refresh_every` searches), fetches `k * overfetch` candidates, re-scores them
    with the table's current vectors and keeps the best `k`. Queries whose lists
    come back short (exclusions past the index's reach) fall back to exact search.
    """

    def __init__(
        self,
        index: ItemIndex,
        refresh_every: int = 10,
        sweep_rows: int = 2_000,
        overfetch: float = 1.5,
        normalise: bool = False,
    ) -> None:
        if refresh_every < 1:
            raise ValueError("refresh_every must be >= 1")
        self.index = index
        self.refresh_every = refresh_every
        self.sweep_rows = sweep_rows
        self.overfetch = overfetch
        self.normalise = normalise
        self.indexed = 0  # rows [0, indexed) are in the index
        self.searches = 0
        self.refreshed_rows = 0
        self._moved: set[int] = set()
        self._sweep_at = 0

    def mark_moved(self, rows: Collection[int]) -> None:
        self._moved.update(rows)

    def _vectors(self, table: Tensor, rows: np.ndarray) -> np.ndarray:
        vectors = table[torch.from_numpy(rows)]
        if self.normalise:
            vectors = torch.nn.functional.normalize(vectors, dim=1)
        return vectors.numpy()

    def sync(self, table: Tensor) -> None:
        """Add rows the table gained; every `refresh_every` calls, re-insert moved rows."""
        total = table.shape[0]
        fresh = np.arange(self.indexed, total, dtype=np.int64)
        self.searches += 1
        if self.searches % self.refresh_every == 0 and self.indexed:
            moved = np.fromiter((r for r in self._moved if r < self.indexed), np.int64)
            end = min(self._sweep_at + self.sweep_rows, self.indexed)
            sweep = np.arange(self._sweep_at, end, dtype=np.int64)
            self._sweep_at = 0 if end >= self.indexed else end
            stale = np.union1d(moved, sweep)
            self._moved.clear()
            self.index.update(stale, self._vectors(table, stale))
            self.refreshed_rows += stale.size
        if fresh.size:
            self.index.update(fresh, self._vectors(table, fresh))
            self.indexed = total

    def search(
        self, queries: Tensor, table: Tensor, k: int, exclude: Exclusions | None = None
    ) -> tuple[Tensor, Tensor]:
        """Top-`k` (scores, rows) per query against the table's current vectors;
        unfilled slots have score -inf."""
        self.sync(table)
        n = queries.shape[0]
        k = min(k, table.shape[0])
        fetch = max(k, int(np.ceil(k * self.overfetch)))
        _, candidates = self.index.search(queries.numpy(), fetch, exclude)
        found = torch.from_numpy(candidates)
        valid = found >= 0
        live = table[found.clamp_min(0)]
        if self.normalise:
            live = torch.nn.functional.normalize(live, dim=2)
        scores = torch.einsum("nd,nkd->nk", queries, live).masked_fill_(~valid, float("-inf"))
        top = torch.topk(scores, min(k, fetch), dim=1)
        values, rows = top.values, found.gather(1, top.indices)
        excluded = [0] * n if exclude is None else [len(e) for e in exclude]
        short = [
            i
            for i, filled in enumerate(torch.isfinite(values).sum(dim=1).tolist())
            if filled < min(k, table.shape[0] - excluded[i])
        ]
        if short:
            at = torch.tensor(short, dtype=torch.long)
            target = torch.nn.functional.normalize(table, dim=1) if self.normalise else table
            exact_s, exact_r = exact_top_k(
                queries[at], target, k, None if exclude is None else [exclude[i] for i in short]
            )
            values[at, : exact_s.shape[1]] = exact_s
            rows[at, : exact_r.shape[1]] = exact_r
        return values, rows
