"""Each user's watched item rows, in flat arrays that compiled code can read.

A set of (user, item) pairs in an open-addressing hash table (int64 keys, linear
probing) answers "has this user watched this item?" inside the learning kernel
(`consumers/model/kernel.py`); a chain per user (newest first) lists what a user
watched, for top-N exclusions and checkpoints. 24 to 40 bytes per pair (the table is
kept under half full), against 60-100 for a Python set of ints per user. Pairs taken out
(`remove`, `forget`) leave a tombstone in the table and a dead chain entry; both are
reclaimed while running: the table is rehashed when keys and tombstones pass half of it,
and the chains are compacted when they are full and at least half dead, so the bytes
held follow the pairs held (at most ~4x the bytes of the live pairs' entries).
"""

from __future__ import annotations

import numba as nb
import numpy as np
import torch
from torch import Tensor

from consumers.model.prefetch import prefetch

EMPTY, DELETED = -1, -2
MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing
MIN_SLOTS = 1 << 10
MIN_ENTRIES = 1 << 10
AHEAD = 8  # pairs whose slots are requested before they are needed
# Per user: head entry, count; per entry: item, next entry (-1 ends a chain). int32 each.
Chains = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


@nb.njit(cache=True, nogil=True, inline="always")
def pair_key(user: int, item: int) -> int:
    return int((np.int64(user) << 32) | np.int64(item))


@nb.njit(cache=True, nogil=True, inline="always")
def _home(key: int, mask: int) -> int:
    return int(np.int64((np.uint64(key) * MULTIPLIER) >> np.uint64(32)) & mask)


@nb.njit(cache=True, nogil=True, inline="always")
def home_slot(slots: np.ndarray, user: int, item: int) -> int:
    """Where the search for (user, item) starts in `slots`."""
    return _home(pair_key(user, item), slots.shape[0] - 1)


@nb.njit(cache=True, nogil=True, inline="always")
def contains_pair(slots: np.ndarray, user: int, item: int) -> bool:
    """Whether (user, item) is in the table `slots` (a power-of-two length)."""
    key = pair_key(user, item)
    mask = slots.shape[0] - 1
    at = _home(key, mask)
    while slots[at] != EMPTY:
        if slots[at] == key:
            return True
        at = (at + 1) & mask
    return False


@nb.njit(cache=True, nogil=True)
def _contains_pairs(
    slots: np.ndarray, users: np.ndarray, items: np.ndarray, found: np.ndarray
) -> None:
    for i in range(users.shape[0]):
        found[i] = contains_pair(slots, users[i], items[i])


@nb.njit(cache=True, nogil=True)
def _insert_key(slots: np.ndarray, key: int) -> bool:
    """Put `key` in; False if it was there. Needs a free slot (load is kept under half)."""
    mask = slots.shape[0] - 1
    at = _home(key, mask)
    reusable = -1
    while slots[at] != EMPTY:
        if slots[at] == key:
            return False
        if slots[at] == DELETED and reusable < 0:
            reusable = at
        at = (at + 1) & mask
    slots[at if reusable < 0 else reusable] = key
    return True


@nb.njit(cache=True, nogil=True)
def _delete_key(slots: np.ndarray, key: int) -> None:
    mask = slots.shape[0] - 1
    at = _home(key, mask)
    while slots[at] != EMPTY:
        if slots[at] == key:
            slots[at] = DELETED
            return
        at = (at + 1) & mask


@nb.njit(cache=True, nogil=True)
def add_pairs(
    slots: np.ndarray,
    chains: Chains,
    used: int,
    users: np.ndarray,
    items: np.ndarray,
    added: np.ndarray,
) -> int:
    """Insert pairs, `added[i]` set to whether pair i was new; how many were. Needs the
    room `History.room_for` makes (`used` is the first free chain entry)."""
    head, count, item_of, next_of = chains
    first = used
    for i in range(users.shape[0]):
        if i + AHEAD < users.shape[0]:
            prefetch(slots, home_slot(slots, users[i + AHEAD], items[i + AHEAD]))
            prefetch(head, users[i + AHEAD])
        user, item = users[i], items[i]
        added[i] = _insert_key(slots, pair_key(user, item))
        if added[i]:
            item_of[used] = item
            next_of[used] = head[user]
            head[user] = used
            count[user] += 1
            used += 1
    return used - first


@nb.njit(cache=True, nogil=True)
def _remove_pairs(slots: np.ndarray, chains: Chains, users: np.ndarray, items: np.ndarray) -> int:
    """Take pairs out (their entries left dead); returns how many were there."""
    head, count, item_of, next_of = chains
    removed = 0
    for i in range(users.shape[0]):
        user, item = users[i], items[i]
        if not contains_pair(slots, user, item):
            continue
        _delete_key(slots, pair_key(user, item))
        previous, entry = -1, head[user]
        while item_of[entry] != item:  # recent pairs sit near the head
            previous, entry = entry, next_of[entry]
        if previous < 0:
            head[user] = next_of[entry]
        else:
            next_of[previous] = next_of[entry]
        count[user] -= 1
        removed += 1
    return removed


@nb.njit(cache=True, nogil=True)
def _forget_user(slots: np.ndarray, chains: Chains, user: int) -> None:
    head, count, item_of, next_of = chains
    entry = head[user]
    while entry >= 0:
        _delete_key(slots, pair_key(user, item_of[entry]))
        entry = next_of[entry]
    head[user] = -1
    count[user] = 0


@nb.njit(cache=True, nogil=True)
def _rehash(old: np.ndarray, slots: np.ndarray) -> None:
    for key in old:
        if key >= 0:
            _insert_key(slots, key)


@nb.njit(cache=True, nogil=True)
def _compact(chains: Chains, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Live entries copied into new (item, next) arrays of `size`, each chain kept in
    order; `head` is rewritten to match."""
    head, _, item_of, next_of = chains
    items = np.empty(size, dtype=np.int32)
    nexts = np.empty(size, dtype=np.int32)
    used = 0
    for user in range(head.shape[0]):
        entry, previous = head[user], -1
        while entry >= 0:
            items[used], nexts[used] = item_of[entry], -1
            if previous < 0:
                head[user] = used
            else:
                nexts[previous] = used
            previous, used = used, used + 1
            entry = next_of[entry]
    return items, nexts


@nb.njit(cache=True, nogil=True)
def _lists(chains: Chains, users: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Concatenated item lists of `users` (each sorted), given their `offsets`."""
    head, _, item_of, next_of = chains
    values = np.empty(offsets[-1], dtype=np.int64)
    for i in range(users.shape[0]):
        at, entry = offsets[i], head[users[i]]
        while entry >= 0:
            values[at] = item_of[entry]
            at += 1
            entry = next_of[entry]
        values[offsets[i] : offsets[i + 1]].sort()
    return values


class History:
    """The watched item rows of every user row: add, remove, forget, list, pack."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.slots = np.full(MIN_SLOTS, EMPTY, dtype=np.int64)
        self._occupied = 0  # keys plus tombstones
        self._head = np.full(0, -1, dtype=np.int32)
        self._count = np.zeros(0, dtype=np.int32)
        self._item_of = np.empty(MIN_ENTRIES, dtype=np.int32)
        self._next_of = np.empty(MIN_ENTRIES, dtype=np.int32)
        self._used = 0

    def _chains(self) -> Chains:
        return self._head, self._count, self._item_of, self._next_of

    @property
    def users(self) -> int:
        return self._head.shape[0]

    def grow_to(self, users: int) -> None:
        """Give user rows `[self.users, users)` an empty history."""
        if users > self.users:
            extra = users - self.users
            self._head = np.concatenate([self._head, np.full(extra, -1, dtype=np.int32)])
            self._count = np.concatenate([self._count, np.zeros(extra, dtype=np.int32)])

    def room_for(self, pairs: int) -> tuple[np.ndarray, Chains, int]:
        """Make room for `pairs` more pairs; (slots, chains, first free entry) for
        `add_pairs`, whose count of new pairs goes to `inserted` next. The arrays are
        valid until the next call (they may be reallocated)."""
        if 2 * (self._occupied + pairs) > self.slots.shape[0]:
            size = self.slots.shape[0]
            while 2 * (int(self._count.sum()) + pairs) > size:
                size *= 2
            old, self.slots = self.slots, np.full(size, EMPTY, dtype=np.int64)
            _rehash(old, self.slots)
            self._occupied = int(self._count.sum())
        needed = self._used + pairs
        if needed > self._item_of.shape[0]:
            live = int(self._count.sum())
            if 2 * live <= self._used:  # at least half of the entries are dead
                size = max(MIN_ENTRIES, 2 * (live + pairs))
                self._item_of, self._next_of = _compact(self._chains(), size)
                self._used = live
            else:
                size = max(needed, 2 * self._item_of.shape[0])
                self._item_of = np.resize(self._item_of, size)
                self._next_of = np.resize(self._next_of, size)
        return self.slots, self._chains(), self._used

    def inserted(self, new: int) -> None:
        """Count the `new` pairs `add_pairs` put in the room made by `room_for`."""
        self._used += new
        self._occupied += new

    def add(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Record watched pairs (user rows must exist); which of them were new."""
        users = np.ascontiguousarray(users, dtype=np.int64)
        items = np.ascontiguousarray(items, dtype=np.int64)
        added = np.empty(users.shape[0], dtype=np.bool_)
        self.inserted(add_pairs(*self.room_for(users.shape[0]), users, items, added))
        return added

    @property
    def nbytes(self) -> int:
        """Bytes of every array held."""
        arrays = (self.slots, self._head, self._count, self._item_of, self._next_of)
        return sum(array.nbytes for array in arrays)

    def remove(self, users: np.ndarray, items: np.ndarray) -> None:
        """Take these pairs out of the history (those absent are ignored)."""
        _remove_pairs(
            self.slots,
            self._chains(),
            np.ascontiguousarray(users, dtype=np.int64),
            np.ascontiguousarray(items, dtype=np.int64),
        )

    def forget(self, user: int) -> None:
        """Empty one user's history."""
        _forget_user(self.slots, self._chains(), user)

    def counts(self, users: np.ndarray) -> np.ndarray:
        """How many items each of these users watched."""
        return np.asarray(self._count[users], dtype=np.int64)

    def watched(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Whether each user watched each item (the arrays broadcast together)."""
        users, items = np.broadcast_arrays(
            np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64)
        )
        found = np.empty(users.shape, dtype=np.bool_)
        _contains_pairs(self.slots, users.ravel(), items.ravel(), found.reshape(-1))
        return found

    def lists(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """CSR form of these users' histories: (offsets, sorted items per user)."""
        users = np.ascontiguousarray(users, dtype=np.int64)
        offsets = np.zeros(users.shape[0] + 1, dtype=np.int64)
        np.cumsum(self._count[users], out=offsets[1:])
        return offsets, _lists(self._chains(), users, offsets)

    def items(self, user: int) -> np.ndarray:
        return self.lists(np.array([user]))[1]

    def pack(self) -> tuple[Tensor, Tensor]:
        """Every user's history in CSR form (checkpoints)."""
        offsets, values = self.lists(np.arange(self.users))
        return torch.from_numpy(offsets), torch.from_numpy(values)

    def load(self, offsets: Tensor, values: Tensor) -> None:
        """Replace everything with a packed history (`pack`'s output)."""
        self._reset()
        self.merge(offsets, values)

    def merge(self, offsets: Tensor, values: Tensor) -> None:
        """Add a packed history's pairs to this one (workers unite their parts)."""
        lengths = np.diff(offsets.numpy())
        self.grow_to(lengths.shape[0])
        users = np.repeat(np.arange(lengths.shape[0], dtype=np.int64), lengths)
        self.add(users, values.numpy())
