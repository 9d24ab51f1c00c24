"""Online matrix factorisation: one pairwise update per micro-batch of views."""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Floats, Ranking, Rows, Step, TableSize
from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.history import History
from consumers.model.kernel import hyper_parameters, pairwise_step
from consumers.model.packing import section
from consumers.model.search import ItemSearch
from consumers.model.storage import Storage, local_storage
from streamer.events import Id

SEEDS = 1 << 62  # the kernel's sampler is seeded per batch from the model's generator


class MatrixFactorization:
    """User and item tables; the score of (user, item) is their dot product.

    The first `Model` (consumers/model/base.py). `learn` takes rows already mapped by
    the registries, so the caller decides when ids become rows; `history` holds each
    user's watched item rows, which top-N excludes.
    """

    def __init__(
        self,
        config: ModelConfig,
        storage: Callable[[ModelConfig, torch.Generator], Storage] = local_storage,
        search: SearchConfig | None = None,
    ) -> None:
        """`search` picks exact or approximate top-N (default: exact)."""
        self.config = config
        self.search = ItemSearch(search or SearchConfig(), config.dim, config.seed)
        self.generator = torch.Generator().manual_seed(config.seed)
        ids_and_rows = storage(config, self.generator)
        self.users = ids_and_rows.users
        self.items = ids_and_rows.items
        self.user_table = ids_and_rows.user_table
        self.item_table = ids_and_rows.item_table
        self.history = History()
        self.skipped_events = 0

    @property
    def name(self) -> str:
        return f"mf-{self.config.loss}"

    def sync_rows(self) -> None:
        """Give every registered id a table row (and every user a history)."""
        self.user_table.grow_to(len(self.users))
        self.item_table.grow_to(len(self.items))
        self.history.grow_to(len(self.users))

    def forget_user(self, raw: Id) -> int | None:
        """Drop a user's embedding, optimizer state and history; their row becomes a hole."""
        row = self.users.forget(raw)
        if row is not None and row < self.user_table.rows:
            self.user_table.weight[row] = 0.0
            self.user_table.accumulator[row] = 0.0
            self.history.forget(row)
        return row

    def state(self) -> dict[str, Tensor]:
        """Every tensor needed to resume exactly, the sampler's random state included."""
        self.sync_rows()
        history_offsets, history_items = self.history.pack()
        tensors = {
            "user_weight": self.user_table.weight,
            "user_accumulator": self.user_table.accumulator,
            "item_weight": self.item_table.weight,
            "item_accumulator": self.item_table.accumulator,
            "history_offsets": history_offsets,
            "history_items": history_items,
            "generator": self.generator.get_state(),
        }
        tensors.update({f"user_ids.{k}": v for k, v in self.users.state().items()})
        tensors.update({f"item_ids.{k}": v for k, v in self.items.state().items()})
        return tensors

    def load_state(self, tensors: dict[str, Tensor], shared: bool = True) -> None:
        """Restore; `shared=False` leaves registries and tables (a host's shared storage,
        restored once for all its workers) alone."""
        if shared:
            self.users.load_state(section(tensors, "user_ids."))
            self.items.load_state(section(tensors, "item_ids."))
            self.user_table.load(tensors["user_weight"], tensors["user_accumulator"])
            self.item_table.load(tensors["item_weight"], tensors["item_accumulator"])
        self.history.load(tensors["history_offsets"], tensors["history_items"])
        self.generator.set_state(tensors["generator"])

    def learn(self, batch: Batch) -> Step:
        """`config.passes` steps on one batch of views, with fresh negatives each pass.

        The views join the users' histories first (so a user's other positives here
        are never their negatives). A view whose update would leave the tables
        non-finite in the first pass is skipped (counted in `skipped_events`, not learned
        in later passes, taken back out of the history after them); the rest of the batch
        is learned. Candidates are drawn in the kernel, seeded from `self.generator`.
        """
        self.sync_rows()
        users = batch.users.astype(np.int64, copy=False)
        items = batch.items.astype(np.int64, copy=False)
        added = self.history.add(users, items)
        learned = np.ones(users.size, dtype=np.bool_)
        if self.item_table.rows < 2 or users.size == 0:  # nothing to contrast yet
            return Step(float("nan"), learned, np.zeros(0, dtype=np.int64))
        config, user_table, item_table = self.config, self.user_table, self.item_table
        seed = int(torch.randint(0, SEEDS, (1,), generator=self.generator))
        candidates = np.empty((users.size, config.negatives), dtype=np.int64)
        negatives = np.empty((config.passes, users.size), dtype=np.int64)
        loss_sum, weight_sum, skipped = pairwise_step(
            user_table.weight.numpy(),
            user_table.accumulator.numpy(),
            item_table.weight.numpy(),
            item_table.accumulator.numpy(),
            self.history.slots,
            users,
            items,
            batch.weights.astype(np.float32, copy=False),
            candidates,
            negatives,
            seed,
            *hyper_parameters(config),
        )
        loss = loss_sum / weight_sum if weight_sum > 0 else float("nan")
        if skipped:
            learned = negatives[0] >= 0
            self.skipped_events += skipped
            self.history.remove(users[added & ~learned], items[added & ~learned])
        return Step(loss, learned, negatives[negatives >= 0])

    def items_moved(self, item_rows: Collection[int]) -> None:
        """Tell the approximate indexes (if any) which item rows changed."""
        self.search.items_moved(item_rows)

    def recommend(self, user_rows: Rows, n: int) -> Ranking:
        """Top-`n` (scores, item rows) per user, excluding what each already watched."""
        self.sync_rows()
        queries = self.user_table.weight[torch.from_numpy(user_rows)]
        items = self.item_table.weight
        return self.search.recommend(
            queries, items, self.history, user_rows, n, self.item_table.capacity
        )

    def similar(self, item_rows: Rows, n: int) -> Ranking:
        """Top-`n` (cosine, item rows) per item, the item itself excluded."""
        self.sync_rows()
        return self.search.similar(item_rows, self.item_table.weight, n, self.item_table.capacity)

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Dot products of every user with every item: [users, items]."""
        self.sync_rows()
        users = self.user_table.weight[torch.from_numpy(user_rows)]
        scores: Floats = (users @ self.item_table.weight[torch.from_numpy(item_rows)].T).numpy()
        return scores

    def user_vectors(self, user_rows: Rows) -> Floats:
        self.sync_rows()
        vectors: Floats = self.user_table.weight[torch.from_numpy(user_rows)].numpy()
        return vectors

    def item_vectors(self, item_rows: Rows) -> Floats:
        self.sync_rows()
        vectors: Floats = self.item_table.weight[torch.from_numpy(item_rows)].numpy()
        return vectors

    def table_sizes(self) -> dict[str, TableSize]:
        return {
            "user": TableSize(self.user_table.rows, self.user_table.capacity),
            "item": TableSize(self.item_table.rows, self.item_table.capacity),
        }
