"""Where a model's ids and rows live: in this process, or shared by a host's workers."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import Tensor

from consumers.model.config import ModelConfig
from consumers.model.registry import IdRegistry
from consumers.model.shared import Lock, SharedIdRegistry, SharedTable
from consumers.model.tables import EmbeddingTable
from streamer.events import Id

# State that lives in the shared storage (written once per checkpoint, not per worker).
SHARED_STATE_PREFIXES = (
    "user_weight",
    "user_accumulator",
    "item_weight",
    "item_accumulator",
    "user_ids.",
    "item_ids.",
    "popularity_",
)


def is_shared_state(name: str) -> bool:
    return name.startswith(SHARED_STATE_PREFIXES)


class Registry(Protocol):
    def __len__(self) -> int: ...

    def __contains__(self, raw: object) -> bool: ...

    def row(self, raw: Id) -> int | None: ...

    def add(self, raw: Id) -> int: ...

    def add_many(self, raws: Iterable[Id]) -> np.ndarray: ...

    def raw(self, row: int) -> Id: ...

    def raws(self, rows: Iterable[int]) -> list[Id]: ...

    def live_rows(self) -> np.ndarray: ...

    def forget(self, raw: Id) -> int | None: ...

    def state(self) -> dict[str, Tensor]: ...

    def load_state(self, packed: dict[str, Tensor]) -> None: ...


class Table(Protocol):
    dim: int
    rows: int

    @property
    def capacity(self) -> int: ...

    @property
    def weight(self) -> Tensor: ...

    @property
    def accumulator(self) -> Tensor: ...

    def arrays(self) -> tuple[np.ndarray, np.ndarray]: ...

    def grow_to(self, rows: int) -> None: ...

    def load(self, weight: Tensor, accumulator: Tensor) -> None: ...


@dataclass(frozen=True, slots=True)
class Storage:
    users: Registry
    items: Registry
    user_table: Table
    item_table: Table


def local_storage(config: ModelConfig, generator: torch.Generator) -> Storage:
    """Growing tables and a dict registry, private to this process."""
    return Storage(
        IdRegistry(),
        IdRegistry(),
        EmbeddingTable(config.dim, config.init_std, generator),
        EmbeddingTable(config.dim, config.init_std, generator),
    )


@dataclass(frozen=True, slots=True)
class SharedLayout:
    """Where a host's shared state lives and how many ids it can hold."""

    directory: Path
    max_users: int
    max_items: int


def shared_storage(
    layout: SharedLayout, config: ModelConfig, generator: torch.Generator, lock: Lock
) -> Storage:
    """The host's shared registries and tables (created on first open)."""
    directory = layout.directory
    return Storage(
        SharedIdRegistry(directory, "users", layout.max_users, lock),
        SharedIdRegistry(directory, "items", layout.max_items, lock),
        SharedTable(
            directory, "user", layout.max_users, config.dim, config.init_std, generator, lock
        ),
        SharedTable(
            directory, "item", layout.max_items, config.dim, config.init_std, generator, lock
        ),
    )
