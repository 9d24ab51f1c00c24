"""What every torch-trained model shares: registries, history, growing tables and
layers learned by Adam (consumers/model/optim.py), the random generator, checkpoints
and top-N over published vectors.

A subclass registers its tables and layers, and defines how a batch is learned
(`learn`) and what a user's and an item's published vectors are
(`_user_vectors`, `_item_vectors`); `recommend` and `similar` then rank item vectors
through the same exact/ANN search as mf (consumers/model/search.py). Invariants:
every user table has a row per registered user and every item table a row per item
once `sync_rows` ran; `state()` holds every tensor, optimizer moments and the
generator included, so `load_state(state())` resumes bit for bit. Registries are
private to the process: these models do not run with `--workers > 1`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from consumers.model.base import Batch, Floats, Ranking, Rows, TableSize
from consumers.model.config import SearchConfig
from consumers.model.history import History
from consumers.model.optim import AdamRows, AdamSettings
from consumers.model.packing import section
from consumers.model.registry import IdRegistry
from consumers.model.search import ItemSearch
from streamer.events import Id

DeviceName = Literal["cpu", "cuda"]
Entity = Literal["user", "item"]


@dataclass(frozen=True, slots=True)
class NeuralConfig:
    """What every torch-trained model's config holds (each model's config extends it)."""

    dim: int = 64
    learning_rate: float = 0.002
    l2: float = 0.0
    init_std: float = 0.1
    top_n: int = 20
    seed: int = 0
    device: DeviceName = "cpu"

    def __post_init__(self) -> None:
        if self.dim < 1 or self.top_n < 1:
            raise ValueError("dim and top_n must be >= 1")
        if self.learning_rate <= 0 or self.l2 < 0 or self.init_std < 0:
            raise ValueError("learning_rate must be > 0, l2 and init_std >= 0")


class EntityTable(AdamRows):
    """A table with one row per user or per item, new rows drawn N(0, init_std)."""

    def __init__(self, entity: Entity, width: int, init_std: float, device: torch.device) -> None:
        super().__init__((width,), torch.zeros(0, width), device)
        self.entity = entity
        self.init_std = init_std

    def grow_to(self, rows: int, generator: torch.Generator) -> None:
        if rows > self.rows:
            fresh = torch.randn(rows - self.rows, self.shape[0], generator=generator)
            self.append(fresh * self.init_std)


class Tape:
    """The parameters one step reads, as autograd leaves; after `backward`, `step`
    moves exactly the rows read, each table's rows once."""

    def __init__(self) -> None:
        self._read: list[tuple[AdamRows, Tensor | None, Tensor]] = []

    def rows(self, table: AdamRows, rows: Tensor) -> Tensor:
        """`table.weight[rows]`, differentiable; `rows` may repeat."""
        distinct, inverse = torch.unique(rows, return_inverse=True)
        leaf = table.weight[distinct].clone().requires_grad_()
        self._read.append((table, distinct, leaf))
        return leaf[inverse]

    def dense(self, table: AdamRows) -> Tensor:
        """Every row of `table` (a layer), differentiable."""
        leaf = table.weight.clone().requires_grad_()
        self._read.append((table, None, leaf))
        return leaf

    def rows_read(self, table: AdamRows) -> Tensor:
        """The distinct rows of `table` this step read (all of them for a layer)."""
        read = [
            torch.arange(table.rows, device=table.device) if rows is None else rows
            for source, rows, _ in self._read
            if source is table
        ]
        return torch.unique(torch.cat(read)) if read else torch.zeros(0, dtype=torch.int64)

    def step(self, settings: AdamSettings) -> None:
        for table, rows, leaf in self._read:
            if leaf.grad is None:
                continue
            if rows is None:
                table.step_all(leaf.grad, settings)
            else:
                table.step(rows, leaf.grad, settings)


class NeuralModel(ABC):
    """The shared half of a torch-trained `Model` (consumers/model/base.py)."""

    config: NeuralConfig

    def __init__(self, config: NeuralConfig, search: SearchConfig | None = None) -> None:
        if config.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device cuda was asked for, but torch sees no CUDA device")
        self.config = config
        self.device = torch.device(config.device)
        self.generator = torch.Generator().manual_seed(config.seed)
        self.users = IdRegistry()
        self.items = IdRegistry()
        self.history = History()
        self.skipped_events = 0
        self.search = ItemSearch(search or SearchConfig(), config.dim, config.seed)
        self.optimizer = AdamSettings(config.learning_rate, weight_decay=config.l2)
        self.tables: dict[str, EntityTable] = {}
        self.layers: dict[str, AdamRows] = {}

    def add_table(self, name: str, entity: Entity, width: int, init_std: float) -> EntityTable:
        table = EntityTable(entity, width, init_std, self.device)
        self.tables[name] = table
        return table

    def add_layer(self, name: str, fan_in: int, fan_out: int) -> tuple[AdamRows, AdamRows]:
        """A linear layer's weight `[fan_out, fan_in]` (Glorot) and bias `[fan_out]`."""
        bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
        init = (torch.rand(fan_out, fan_in, generator=self.generator) * 2 - 1) * bound
        weight = AdamRows((fan_in,), init, self.device)
        bias = AdamRows((), torch.zeros(fan_out), self.device)
        self.layers[f"{name}.weight"], self.layers[f"{name}.bias"] = weight, bias
        return weight, bias

    def sync_rows(self) -> None:
        """Give every registered id its table rows (and every user a history)."""
        sizes = {"user": len(self.users), "item": len(self.items)}
        for table in self.tables.values():
            table.grow_to(sizes[table.entity], self.generator)
        self.history.grow_to(len(self.users))
        self._grow_users(len(self.users))

    def _begin(self, batch: Batch) -> tuple[Rows, Rows, npt.NDArray[np.bool_]]:
        """What every `learn` does first: rows for the batch's ids, its views in their
        users' histories; the views' (user rows, item rows, all marked learned)."""
        self.sync_rows()
        users = batch.users.astype(np.int64, copy=False)
        items = batch.items.astype(np.int64, copy=False)
        self.history.add(users, items)
        return users, items, np.ones(users.size, dtype=np.bool_)

    def _grow_users(self, users: int) -> None:  # noqa: B027 (an optional hook)
        """Per-user state besides tables and history (a subclass's hook)."""

    def _forget_row(self, row: int) -> None:  # noqa: B027 (an optional hook)
        """Drop per-user state besides tables and history (a subclass's hook)."""

    def forget_user(self, raw: Id) -> int | None:
        """Drop a user's rows, optimizer state and history; their row becomes a hole."""
        row = self.users.forget(raw)
        if row is None:
            return None
        self.sync_rows()
        index = torch.tensor([row], device=self.device)
        for table in self.tables.values():
            if table.entity == "user":
                table.zero_rows(index)
        self.history.forget(row)
        self.search.forget_user(row)
        self._forget_row(row)
        return row

    @abstractmethod
    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        """Published vectors of these user rows, on the model's device."""

    @abstractmethod
    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        """Published vectors of these item rows, on the model's device."""

    def _every_item(self) -> Tensor:
        return torch.arange(len(self.items), device=self.device)

    def _device_rows(self, rows: Rows) -> Tensor:
        return torch.from_numpy(np.asarray(rows, dtype=np.int64)).to(self.device)

    def user_vectors(self, user_rows: Rows) -> Floats:
        self.sync_rows()
        with torch.no_grad():
            vectors: Floats = self._user_vectors(self._device_rows(user_rows)).cpu().numpy()
        return vectors

    def item_vectors(self, item_rows: Rows) -> Floats:
        self.sync_rows()
        with torch.no_grad():
            vectors: Floats = self._item_vectors(self._device_rows(item_rows)).cpu().numpy()
        return vectors

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Dot products of every user's with every item's vector: [users, items]."""
        users = torch.from_numpy(self.user_vectors(user_rows))
        scores: Floats = (users @ torch.from_numpy(self.item_vectors(item_rows)).T).numpy()
        return scores

    def recommend(self, user_rows: Rows, n: int) -> Ranking:
        """Top-`n` (score, item row) per user by dot product, watched items excluded."""
        queries = torch.from_numpy(self.user_vectors(user_rows))
        with torch.no_grad():
            items = self._item_vectors(self._every_item()).cpu()
        return self.search.recommend(queries, items, self.history, user_rows, n, len(self.items))

    def _similarity_vectors(self, item_rows: Tensor) -> Tensor:
        """The vectors `similar` compares by cosine (a subclass may zero coordinates)."""
        return self._item_vectors(item_rows)

    def similar(self, item_rows: Rows, n: int) -> Ranking:
        """Top-`n` (cosine, item row) per item, the item itself excluded."""
        self.sync_rows()
        with torch.no_grad():
            items = self._similarity_vectors(self._every_item()).cpu()
        return self.search.similar(item_rows, items, n, len(self.items))

    def items_moved(self, item_rows: Collection[int]) -> None:
        self.search.items_moved(item_rows)

    def table_sizes(self) -> dict[str, TableSize]:
        return {
            "user": TableSize(len(self.users), len(self.users)),
            "item": TableSize(len(self.items), len(self.items)),
        }

    def _extra_state(self) -> dict[str, Tensor]:
        """Tensors besides tables, layers, history and registries (a subclass's hook)."""
        return {}

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:  # noqa: B027 (an optional hook)
        """Restore `_extra_state()` (a subclass's hook)."""

    def state(self) -> dict[str, Tensor]:
        """Every tensor needed to resume exactly: registries, history, tables and layers
        with their Adam moments, the generator."""
        self.sync_rows()
        history_offsets, history_items = self.history.pack()
        tensors = {
            "history_offsets": history_offsets,
            "history_items": history_items,
            "generator": self.generator.get_state(),
            **self._extra_state(),
        }
        for name, table in {**self.tables, **self.layers}.items():
            tensors.update(table.state(f"param.{name}"))
        tensors.update({f"user_ids.{k}": v for k, v in self.users.state().items()})
        tensors.update({f"item_ids.{k}": v for k, v in self.items.state().items()})
        return tensors

    def load_state(self, tensors: dict[str, Tensor], shared: bool = True) -> None:
        """Restore `state()`. Nothing is shared between processes (one worker per
        host), so `shared` changes nothing."""
        self.users.load_state(section(tensors, "user_ids."))
        self.items.load_state(section(tensors, "item_ids."))
        for name, table in {**self.tables, **self.layers}.items():
            table.load_state(tensors, f"param.{name}")
        self.history.load(tensors["history_offsets"], tensors["history_items"])
        self.generator.set_state(tensors["generator"])
        self.search.clear()
        self._load_extra_state(tensors)
