"""Each entity row's feature token ids, kept beside the model's id registries, so that a
step or a publish reads them by row instead of looking every raw id up in the store."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from consumers.model.features import PADDING, FeatureStore
from consumers.model.neural import Entity
from consumers.model.optim import AdamRows
from consumers.model.registry import IdRegistry
from streamer.events import Id


class TokenRows:
    """A padded `[rows, width]` matrix of token ids per entity row (0: padding)."""

    def __init__(self) -> None:
        self.ids = torch.zeros((0, 1), dtype=torch.int64)

    def grow_to(self, rows: int) -> None:
        if rows > self.ids.shape[0]:
            fresh = torch.zeros((rows - self.ids.shape[0], self.ids.shape[1]), dtype=torch.int64)
            self.ids = torch.cat([self.ids, fresh])

    def set(self, row: int, tokens: np.ndarray) -> None:
        self.grow_to(row + 1)
        if tokens.size > self.ids.shape[1]:
            wider = torch.zeros((self.ids.shape[0], tokens.size), dtype=torch.int64)
            wider[:, : self.ids.shape[1]] = self.ids
            self.ids = wider
        self.ids[row] = PADDING
        self.ids[row, : tokens.size] = torch.from_numpy(tokens)


class FeatureRows:
    """The feature store a model reads and a `TokenRows` per entity kind that follows it.
    Invariant: after `follow(kind, registry)` row r holds the tokens of `registry.raw(r)`
    as they were when the row was added or last `set` (features arriving later: `set`)."""

    def __init__(self) -> None:
        self.store = FeatureStore()
        self.rows: dict[Entity, TokenRows] = {"user": TokenRows(), "item": TokenRows()}

    def read(self, store: FeatureStore) -> None:
        """Follow `store` from now on; every row is read again by the next `follow`."""
        self.store = store
        self.reset()

    def reset(self) -> None:
        self.rows = {"user": TokenRows(), "item": TokenRows()}

    def has(self, kind: Entity, raw: Id) -> bool:
        return bool((self.store.tokens(kind, [raw]) != PADDING).any())

    def set(self, kind: Entity, row: int, raw: Id) -> None:
        tokens = self.store.tokens(kind, [raw])[0]
        self.rows[kind].set(row, tokens[tokens != PADDING])

    def arrived(
        self, kind: Entity, raw: Id, registry: IdRegistry, sync_rows: Callable[[], None]
    ) -> int | None:
        """`raw`'s features changed: its row in `registry` (added, and the model's tables
        grown by `sync_rows`, if it had none), its tokens read again; None for an entity
        with neither a row nor features."""
        if raw not in registry and not self.has(kind, raw):
            return None
        row = registry.add(raw)
        sync_rows()
        self.set(kind, row, raw)
        return row

    def follow(self, kind: Entity, registry: IdRegistry) -> None:
        """Read the tokens of the rows `registry` added since the last call."""
        rows = self.rows[kind]
        for row in range(rows.ids.shape[0], len(registry)):
            self.set(kind, row, registry.raw(row))
        rows.grow_to(len(registry))

    def ids(self, kind: Entity, rows: Tensor) -> Tensor:
        """[len(rows), widest] token ids of these rows (PADDING after each row's own)."""
        return self.rows[kind].ids[rows.cpu()]

    def grow(self, table: AdamRows, generator: torch.Generator, init_std: float) -> None:
        """Give `table` an embedding row, N(0, init_std), per token the store has met."""
        vocabulary = len(self.store.vocabulary)
        if vocabulary > table.rows:
            fresh = torch.randn(vocabulary - table.rows, table.shape[0], generator=generator)
            table.append(fresh * init_std)


def mean_of(embeddings: Tensor, tokens: Tensor) -> Tensor:
    """Mean of the non-padding rows' embeddings per entity ([n, width, d] -> [n, d])."""
    mask = (tokens != PADDING).unsqueeze(-1).to(embeddings.dtype)
    return (embeddings * mask).sum(1) / mask.sum(1).clamp(min=1.0)
