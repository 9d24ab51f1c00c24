"""A time-ordered view stream encoded to dense indices, numbered by first appearance.

Numbering users and items in order of first appearance makes "known before position
p" a prefix: the items seen in events `[0, p)` are exactly indices `[0, items_before(p))`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from streamer.events import EntityFeatures, Id, ViewEvent, id_text

IntArray = NDArray[np.int64]
BoolArray = NDArray[np.bool_]


def _first_appearance(ids: Sequence[Id]) -> tuple[IntArray, IntArray, list[Id]]:
    """(index per event, position of each index's first event, raw id per index)."""
    index: dict[str, int] = {}
    raws: list[Id] = []
    first: list[int] = []
    codes = np.empty(len(ids), dtype=np.int64)
    for position, raw in enumerate(ids):
        text = id_text(raw)
        code = index.get(text)
        if code is None:
            code = index[text] = len(raws)
            raws.append(raw)
            first.append(position)
        codes[position] = code
    return codes, np.asarray(first, dtype=np.int64), raws


@dataclass(frozen=True, eq=False)
class EncodedStream:
    """Views in stream order as index arrays, with each user's history."""

    events: Sequence[ViewEvent]
    users: IntArray
    items: IntArray
    user_first: IntArray
    item_first: IntArray
    user_ids: list[Id]
    item_ids: list[Id]
    user_positions: list[IntArray]
    user_items: list[IntArray]
    history_len: IntArray
    rewatch: BoolArray
    features: Sequence[EntityFeatures] = ()  # the items' and users', known from the start

    @classmethod
    def encode(
        cls, events: Sequence[ViewEvent], features: Sequence[EntityFeatures] = ()
    ) -> EncodedStream:
        """Encode `events` as given (they must already be in stream order)."""
        users, user_first, user_ids = _first_appearance([event.user for event in events])
        items, item_first, item_ids = _first_appearance([event.item for event in events])
        order = np.argsort(users, kind="stable")
        bounds = np.searchsorted(users[order], np.arange(len(user_ids) + 1))
        user_positions = [order[a:b] for a, b in itertools.pairwise(bounds)]
        history_len = np.empty(len(events), dtype=np.int64)
        history_len[order] = np.arange(len(events)) - bounds[users[order]]
        seen: set[tuple[int, int]] = set()
        rewatch = np.zeros(len(events), dtype=bool)
        for position, pair in enumerate(zip(users.tolist(), items.tolist(), strict=True)):
            rewatch[position] = pair in seen
            seen.add(pair)
        return cls(
            events=events,
            users=users,
            items=items,
            user_first=user_first,
            item_first=item_first,
            user_ids=user_ids,
            item_ids=item_ids,
            user_positions=user_positions,
            user_items=[items[positions] for positions in user_positions],
            history_len=history_len,
            rewatch=rewatch,
            features=features,
        )

    def __len__(self) -> int:
        return len(self.users)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def users_before(self, position: int) -> int:
        """How many users appear in events `[0, position)`: they are `[0, result)`."""
        return int(np.searchsorted(self.user_first, position))

    def items_before(self, position: int) -> int:
        """How many items appear in events `[0, position)`: they are `[0, result)`."""
        return int(np.searchsorted(self.item_first, position))

    def history(self, position: int) -> IntArray:
        """The items the event's user watched before the event at `position`."""
        return self.user_items[int(self.users[position])][: int(self.history_len[position])]

    def user_items_before(self, user: int, position: int) -> IntArray:
        """The items `user` watched in events `[0, position)`, in stream order."""
        count = int(np.searchsorted(self.user_positions[user], position))
        return self.user_items[user][:count]
