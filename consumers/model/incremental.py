"""Incremental top-N: each user's list re-scored from candidates, a full search on a budget.

A full search (exact or HNSW, whichever index the model uses) keeps a user's top
`C = SearchConfig.candidates` items, the user vector it ran with (the anchor) and the
C-th score (the floor). A later touch re-scores only those candidates and the items
moved in the last `recent_publishes` publishes (the batch's items: what trends and what
learning changed), with the current vectors, watched items excluded. The full search
runs again for a user when:

- they have no candidates (first touch, after a restore, after being forgotten);
- this is their `full_pass_every`-th touch since the last one (catches items that moved
  earlier than the window, or that another worker moved);
- the re-scored list cannot be trusted. An item j outside the candidates that did not
  move scores `u.v_j = a.v_j + (u - a).v_j <= floor + |u - a| * max_j |v_j|` (a: the
  anchor), so the list is exact with respect to every unmoved item when its n-th score is
  at least that bound. It costs one norm per user and the largest item norm, kept per
  publish (recomputed over the table every `refresh_every` publishes, raised by the moved
  rows' norms in between, so it stays an upper bound for this process's moves).

Memory: per user slot C int32 candidates, a float32 anchor of `dim`, floor and touch
count: `4 * (C + dim + 2)` bytes (1,288 B at C = 256, dim 64), in flat arrays. Slots
are held only for the users this process ranked (a host's workers each keep their own
users' lists: nothing is shared); a forgotten user's slot is freed for reuse.
Checkpoints do not hold the lists: after a restore they start empty, so each user's
first touch runs a full search.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from consumers.model.config import SearchConfig
from consumers.model.history import History
from consumers.model.topn import largest

# (user rows, their query vectors, k) -> (scores, item rows) [users, <= k], watched
# items excluded, best first, unfilled slots -inf / -1.
FullSearch = Callable[[np.ndarray, Tensor, int], tuple[Tensor, Tensor]]
GROWTH = 1.5


class CandidateLists:
    """Per user row: candidate item rows, anchor vector, floor score and touches."""

    def __init__(self, config: SearchConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.full_searches = 0  # users ranked by a full search, since start
        self.rescored = 0  # users ranked from their candidates, since start
        self._recent: deque[np.ndarray] = deque(maxlen=config.recent_publishes)
        self._pending = np.zeros(0, dtype=np.int64)  # moved since the last ranking
        self._publishes = 0
        self._items = 0  # item rows at the last ranking
        self._max_norm = 0.0
        self.clear()

    def clear(self) -> None:
        """Forget every list (after a restore: each user's next touch searches in full)."""
        self._slot_of = np.full(0, -1, dtype=np.int32)
        self._candidates = np.full((0, self.config.candidates), -1, dtype=np.int32)
        self._anchors = np.zeros((0, self.dim), dtype=np.float32)
        self._floors = np.zeros(0, dtype=np.float32)
        self._touches = np.zeros(0, dtype=np.int32)
        self._free: list[int] = []
        self._used = 0  # slots handed out from the end

    def __len__(self) -> int:
        """Users holding a list."""
        return int((self._slot_of >= 0).sum())

    @property
    def nbytes(self) -> int:
        parts = (self._slot_of, self._candidates, self._anchors, self._floors, self._touches)
        return sum(part.nbytes for part in parts)

    def items_moved(self, item_rows: np.ndarray) -> None:
        """Item rows whose vectors changed (or that are new) since the last ranking."""
        self._pending = np.union1d(self._pending, np.asarray(item_rows, dtype=np.int64))

    def forget(self, user_row: int) -> None:
        """Drop a user's list; their slot is reused."""
        if user_row < self._slot_of.size and self._slot_of[user_row] >= 0:
            self._free.append(int(self._slot_of[user_row]))
            self._slot_of[user_row] = -1

    def recommend(
        self,
        user_rows: np.ndarray,
        queries: Tensor,
        items: Tensor,
        history: History,
        n: int,
        full_search: FullSearch,
    ) -> tuple[Tensor, Tensor]:
        """Top-`n` (scores, item rows) per user, watched items excluded; -inf / -1 pads."""
        self._start_publish(items)
        users = user_rows.size
        scores = torch.full((users, n), float("-inf"))
        rows = torch.full((users, n), -1, dtype=torch.long)
        slots = self._slots(user_rows)
        known = slots >= 0
        known[known] = self._touches[slots[known]] + 1 < self.config.full_pass_every
        rescore = np.flatnonzero(known)
        if rescore.size:
            got_s, got_r, trusted = self._rescore(
                user_rows[rescore], slots[rescore], queries[rescore], items, history, n
            )
            keep = rescore[trusted]
            scores[keep], rows[keep] = got_s[trusted], got_r[trusted]
            self._touches[slots[keep]] += 1
            self.rescored += keep.size
            known[rescore[~trusted]] = False
        full = np.flatnonzero(~known)
        if full.size:
            got_s, got_r = self._search(user_rows[full], queries[full], full_search)
            width = min(n, got_s.shape[1])
            scores[full, :width], rows[full, :width] = got_s[:, :width], got_r[:, :width]
        return scores, rows

    def _start_publish(self, items: Tensor) -> None:
        """Take the moved rows into the window and keep the largest item norm a bound."""
        added = np.arange(self._items, items.shape[0], dtype=np.int64)  # new rows moved too
        moved = np.union1d(self._pending[self._pending < items.shape[0]], added)
        self._pending, self._items = np.zeros(0, dtype=np.int64), items.shape[0]
        self._recent.append(moved)
        if self._publishes % self.config.refresh_every == 0:
            self._max_norm = float(items.norm(dim=1).max()) if items.shape[0] else 0.0
        elif moved.size:
            moved_norm = float(items[torch.from_numpy(moved)].norm(dim=1).max())
            self._max_norm = max(self._max_norm, moved_norm)
        self._publishes += 1

    def _slots(self, user_rows: np.ndarray) -> np.ndarray:
        inside = user_rows < self._slot_of.size
        slots = np.full(user_rows.size, -1, dtype=np.int64)
        slots[inside] = self._slot_of[user_rows[inside]]
        return slots

    def _rescore(
        self,
        user_rows: np.ndarray,
        slots: np.ndarray,
        queries: Tensor,
        items: Tensor,
        history: History,
        n: int,
    ) -> tuple[Tensor, Tensor, np.ndarray]:
        """Best `n` of candidates + recently moved items per user, and whether each list
        passes the floor bound."""
        moved = np.unique(np.concatenate(list(self._recent)))
        candidates = self._candidates[slots].astype(np.int64)
        pool = np.concatenate([candidates, np.broadcast_to(moved, (slots.size, moved.size))], 1)
        pool_t = torch.from_numpy(pool)
        scores = torch.empty(pool.shape, dtype=torch.float32)
        width = candidates.shape[1]
        live = pool_t[:, :width].clamp_min(0)
        scores[:, :width] = torch.einsum("ud,ucd->uc", queries, items[live])
        scores[:, width:] = queries @ items[torch.from_numpy(moved)].T
        # A candidate that also moved is scored once (in the moved part).
        dropped = history.watched(user_rows[:, None], pool)
        dropped[:, :width] |= (candidates < 0) | np.isin(candidates, moved)
        scores.masked_fill_(torch.from_numpy(dropped), float("-inf"))
        best_s, best_at = largest(scores, n)
        best_r = pool_t.gather(1, best_at.clamp_min(0)).masked_fill_(best_at < 0, -1)
        drift = (queries - torch.from_numpy(self._anchors[slots])).norm(dim=1).numpy()
        bound = self._floors[slots] + drift * self._max_norm
        nth = best_s[:, -1].numpy() if best_s.shape[1] else np.full(slots.size, -np.inf)
        trusted = (nth >= bound) | np.isneginf(self._floors[slots])
        return best_s, best_r, trusted

    def _search(
        self, user_rows: np.ndarray, queries: Tensor, full_search: FullSearch
    ) -> tuple[Tensor, Tensor]:
        """A full search of the top C; the users' candidate lists start again from it."""
        size = self.config.candidates
        found_s, found_r = full_search(user_rows, queries, size)
        slots = self._claim(user_rows)
        width = found_r.shape[1]
        self._candidates[slots] = -1
        self._candidates[slots, :width] = found_r.numpy()
        self._anchors[slots] = queries.numpy()
        # Fewer than C found: nothing outside the candidates could enter.
        self._floors[slots] = found_s[:, -1].numpy() if width == size else -np.inf
        self._touches[slots] = 0
        self.full_searches += user_rows.size
        return found_s, found_r

    def _claim(self, user_rows: np.ndarray) -> np.ndarray:
        """The slot of each user row, new ones taken from the free list or the end."""
        if user_rows.size and int(user_rows.max()) >= self._slot_of.size:
            size = max(int(user_rows.max()) + 1, int(self._slot_of.size * GROWTH))
            grown = np.full(size, -1, dtype=np.int32)
            grown[: self._slot_of.size] = self._slot_of
            self._slot_of = grown
        slots = self._slot_of[user_rows].astype(np.int64)
        for i in np.flatnonzero(slots < 0).tolist():
            slots[i] = self._free.pop() if self._free else self._next_slot()
            self._slot_of[user_rows[i]] = slots[i]
        return slots

    def _next_slot(self) -> int:
        """A slot never used yet, the arrays grown when they are full."""
        if self._used == self._floors.size:
            more = max(64, int(self._used * (GROWTH - 1)))
            self._candidates = np.concatenate(
                [self._candidates, np.full((more, self.config.candidates), -1, np.int32)]
            )
            self._anchors = np.concatenate([self._anchors, np.zeros((more, self.dim), np.float32)])
            self._floors = np.concatenate([self._floors, np.zeros(more, np.float32)])
            self._touches = np.concatenate([self._touches, np.zeros(more, np.int32)])
        self._used += 1
        return self._used - 1
