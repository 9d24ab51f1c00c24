"""Incremental top-N: each user's list re-scored from candidates, a full search on a budget.

A full search (exact or HNSW, whichever index the model uses) keeps a user's top
`C = SearchConfig.candidates` items, the user vector it ran with (the anchor) and the
C-th score (the floor). A later touch re-scores only those candidates and the items
moved since (`items_moved`: the batches' positives, what trends, and negatives), with the
current vectors, watched items excluded. The full search
runs again for a user when:

- they have no candidates (first touch, after a restore, after being forgotten);
- their last full search is more than `recent_publishes` publishes old (the moved rows
  are kept that long, so every item this process moved since a list's search is
  re-scored: the lists are exact when the bound below holds), or this is their
  `full_pass_every`-th touch since it (catches items that another worker moved, and
  approximate searches' misses);
- the items told moved in the window and the candidates pass a quarter of the catalogue
  (re-scoring would cost about as much as the full search): then every user gets a
  plain full search of the top n and no list is kept (small catalogues, where a batch
  moves a large share of the items);
- the re-scored list cannot be trusted. With every item vector within `radius` of a
  `centre` c, an item j outside the candidates that did not move scores
  `u.v_j = a.v_j + (u - a).c + (u - a).(v_j - c) <= floor + (u - a).c + |u - a| * radius`
  (a: the anchor), so the list is exact with respect to every unmoved item when its
  n-th score is at least that bound: one dot product and one norm per user. The ball is
  refit over the table every `refresh_every` publishes (c: the mean item) and widened by
  the moved rows in between, so it holds every row this process moved.

Memory: per user slot C int32 candidates, a float32 anchor of `dim`, floor, touch count
and search time: `4 * (C + dim + 3)` bytes (1,292 B at C = 256, dim 64), in flat arrays. Slots
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
# Re-scoring stops when candidates + moved items pass this share of the catalogue (with
# the masking around it, it would cost about a full search).
MAX_POOL_SHARE = 0.25


class CandidateLists:
    """Per user row: candidate item rows, anchor vector, floor score and touches."""

    def __init__(self, config: SearchConfig, dim: int) -> None:
        self.config = config
        self.dim = dim
        self.full_searches = 0  # users ranked by a full search, since start
        self.rescored = 0  # users ranked from their candidates, since start
        self.first_touches = 0  # full searches for users without a list
        self.untrusted = 0  # full searches after a re-scored list failed the bound
        # (publish, item rows moved just before it), for the last `recent_publishes`.
        self._recent: deque[tuple[int, np.ndarray]] = deque(maxlen=config.recent_publishes)
        self._told: deque[int] = deque(maxlen=config.recent_publishes)  # rows per items_moved
        self._pending = np.zeros(0, dtype=np.int64)  # moved since the last ranking
        self._publishes = 0
        self._items = 0  # item rows at the last ranking
        self._centre = torch.zeros(dim)
        self._radius = 0.0
        self._position = np.full(0, -1, dtype=np.int64)  # scratch: item row -> moved index
        self.clear()

    def clear(self) -> None:
        """Forget every list (after a restore: each user's next touch searches in full)."""
        self._slot_of = np.full(0, -1, dtype=np.int32)
        self._candidates = np.full((0, self.config.candidates), -1, dtype=np.int32)
        self._anchors = np.zeros((0, self.dim), dtype=np.float32)
        self._floors = np.zeros(0, dtype=np.float32)
        self._touches = np.zeros(0, dtype=np.int32)
        self._searched_at = np.zeros(0, dtype=np.int32)  # the publish of the full search
        self._free: list[int] = []
        self._used = 0  # slots handed out from the end

    def __len__(self) -> int:
        """Users holding a list."""
        return int((self._slot_of >= 0).sum())

    @property
    def nbytes(self) -> int:
        parts = (
            self._slot_of,
            self._candidates,
            self._anchors,
            self._floors,
            self._touches,
            self._searched_at,
        )
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
        window = sum(self._told) + min(self.config.candidates, items.shape[0])
        if window > items.shape[0] * MAX_POOL_SHARE:  # no list could be re-scored cheaply
            self.full_searches += user_rows.size
            return full_search(user_rows, queries, n)
        users = user_rows.size
        scores = torch.full((users, n), float("-inf"))
        rows = torch.full((users, n), -1, dtype=torch.long)
        slots = self._slots(user_rows)
        known = slots >= 0
        self.first_touches += int((~known).sum())
        known[known] = self._touches[slots[known]] + 1 < self.config.full_pass_every
        # Lists older than the window of moved items cannot see every move since.
        age = self._publishes - self._searched_at[slots[known]]
        known[known] = age <= self.config.recent_publishes
        moved = self._moved_since(int(self._searched_at[slots[known]].min(initial=1 << 30)))
        rescore = np.flatnonzero(known)
        if rescore.size:
            got_s, got_r, trusted = self._rescore(
                user_rows[rescore], slots[rescore], queries[rescore], items, history, n, moved
            )
            keep = rescore[trusted]
            scores[keep], rows[keep] = got_s[trusted], got_r[trusted]
            self._touches[slots[keep]] += 1
            self.rescored += keep.size
            self.untrusted += rescore.size - keep.size
            known[rescore[~trusted]] = False
        full = np.flatnonzero(~known)
        if full.size:
            got_s, got_r = self._search(user_rows[full], queries[full], full_search)
            width = min(n, got_s.shape[1])
            scores[full, :width], rows[full, :width] = got_s[:, :width], got_r[:, :width]
        return scores, rows

    def _start_publish(self, items: Tensor) -> None:
        """Take the moved rows into the window and keep the items' bounding ball: every
        item within `radius` of `centre` (refit every `refresh_every` publishes, widened
        by the moved rows in between)."""
        added = np.arange(self._items, items.shape[0], dtype=np.int64)  # new rows moved too
        told = self._pending[self._pending < items.shape[0]]
        self._told.append(told.size)
        moved = np.union1d(told, added)
        self._pending, self._items = np.zeros(0, dtype=np.int64), items.shape[0]
        if self._publishes % self.config.refresh_every == 0 and items.shape[0]:
            self._centre = items.mean(dim=0)
            self._radius = float((items - self._centre).norm(dim=1).max())
        elif moved.size:
            spread = (items[torch.from_numpy(moved)] - self._centre).norm(dim=1)
            self._radius = max(self._radius, float(spread.max()))
        self._publishes += 1
        self._recent.append((self._publishes, moved))

    def _moved_since(self, publish: int) -> np.ndarray:
        """The item rows moved after `publish` (within the window), ascending."""
        after = [moved for at, moved in self._recent if at > publish]
        return np.unique(np.concatenate(after)) if after else np.zeros(0, dtype=np.int64)

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
        moved: np.ndarray,
    ) -> tuple[Tensor, Tensor, np.ndarray]:
        """Best `n` of candidates + `moved` items per user, and whether each list passes
        the floor bound."""
        candidates = self._candidates[slots].astype(np.int64)
        width = candidates.shape[1]
        position = self._position_of(moved, items.shape[0])
        pool = np.concatenate([candidates, np.broadcast_to(moved, (slots.size, moved.size))], 1)
        pool_t = torch.from_numpy(pool)
        scores = torch.empty(pool.shape, dtype=torch.float32)
        scores[:, :width] = torch.einsum(
            "ud,ucd->uc", queries, items[pool_t[:, :width].clamp_min(0)]
        )
        scores[:, width:] = queries @ items[torch.from_numpy(moved)].T
        # Dropped: empty candidate slots, candidates that also moved (scored once, in the
        # moved part) and watched items (probed in the candidates, looked up in the moved).
        dropped = np.zeros(pool.shape, dtype=np.bool_)
        dropped[:, :width] = (candidates < 0) | (position[candidates.clip(0)] >= 0)
        dropped[:, :width] |= history.watched(user_rows[:, None], candidates)
        offsets, watched = history.lists(user_rows)
        owners = np.repeat(np.arange(slots.size), np.diff(offsets))
        at = position[watched]
        dropped[owners[at >= 0], width + at[at >= 0]] = True
        position[moved] = -1
        scores.masked_fill_(torch.from_numpy(dropped), float("-inf"))
        best_s, best_at = largest(scores, n)
        best_r = pool_t.gather(1, best_at.clamp_min(0)).masked_fill_(best_at < 0, -1)
        shift = queries - torch.from_numpy(self._anchors[slots])
        slack = (shift @ self._centre + shift.norm(dim=1) * self._radius).numpy()
        nth = best_s[:, -1].numpy() if best_s.shape[1] else np.full(slots.size, -np.inf)
        trusted = (nth >= self._floors[slots] + slack) | np.isneginf(self._floors[slots])
        return best_s, best_r, trusted

    def _position_of(self, moved: np.ndarray, items: int) -> np.ndarray:
        """Per item row, its index in `moved` or -1 (the caller resets the moved rows)."""
        if self._position.size < items:
            self._position = np.full(max(items, int(self._position.size * GROWTH)), -1)
        self._position[moved] = np.arange(moved.size)
        return self._position

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
        self._searched_at[slots] = self._publishes
        self.full_searches += user_rows.size
        return found_s, found_r

    def _claim(self, user_rows: np.ndarray) -> np.ndarray:
        """The slot of each user row, new ones taken from the free list or the end."""
        if user_rows.size and int(user_rows.max()) >= self._slot_of.size:
            size = max(int(user_rows.max()) + 1, int(self._slot_of.size * GROWTH))
            grown = np.full(size, -1, dtype=np.int32)
            grown[: self._slot_of.size] = self._slot_of
            self._slot_of = grown
        slots: np.ndarray = self._slot_of[user_rows].astype(np.int64)
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
            self._searched_at = np.concatenate([self._searched_at, np.zeros(more, np.int32)])
        self._used += 1
        return self._used - 1
