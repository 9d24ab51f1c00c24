"""Raw ids (strings or integers, as producers sent them) to dense table rows."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

import numpy as np
from torch import Tensor

from consumers.model.packing import pack_ids, unpack_ids
from streamer.events import Id, id_text


class IdRegistry:
    """Grows without a restart; an id's canonical text is its identity.

    `42` and `"42"` are one id (they share a Kafka key and a Redis key); the
    first form seen is kept so ids leave recstream exactly as they came in.
    """

    def __init__(self) -> None:
        self._rows: dict[str, int] = {}
        self._ids: list[Any] = []  # Id, or None for a forgotten row

    def __len__(self) -> int:
        """Rows handed out, forgotten ones included."""
        return len(self._ids)

    def __contains__(self, raw: object) -> bool:
        return isinstance(raw, str | int) and id_text(raw) in self._rows

    def row(self, raw: Id) -> int | None:
        return self._rows.get(id_text(raw))

    def add(self, raw: Id) -> int:
        """The row of `raw`, appending a new row for an unseen id."""
        text = id_text(raw)
        found = self._rows.get(text)
        if found is not None:
            return found
        row = len(self._ids)
        self._rows[text] = row
        self._ids.append(raw)
        return row

    def add_many(self, raws: Iterable[Id]) -> np.ndarray:
        return np.fromiter((self.add(raw) for raw in raws), dtype=np.int64)

    def raw(self, row: int) -> Id:
        """The id of a live row; None for a forgotten one."""
        return cast(Id, self._ids[row])

    def raws(self, rows: Iterable[int]) -> list[Id]:
        ids = self._ids
        return [ids[row] for row in rows]

    def live_rows(self) -> np.ndarray:
        """Rows an id maps to now (forgotten ones left out), ascending."""
        return np.fromiter(sorted(self._rows.values()), dtype=np.int64, count=len(self._rows))

    def forget(self, raw: Id) -> int | None:
        """Unmap `raw`; its row stays allocated but nothing reaches it again."""
        row = self._rows.pop(id_text(raw), None)
        if row is not None:
            self._ids[row] = None
        return row

    def state(self) -> dict[str, Tensor]:
        return pack_ids(self._ids)

    def load_state(self, packed: dict[str, Tensor]) -> None:
        """Replace the contents with a checkpoint's (`state` form)."""
        self._ids = unpack_ids(packed)
        self._rows = {id_text(raw): row for row, raw in enumerate(self._ids) if raw is not None}
