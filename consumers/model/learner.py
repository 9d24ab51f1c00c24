"""Online matrix factorisation: one pairwise update per micro-batch of views."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor

from consumers.model.config import ModelConfig
from consumers.model.losses import PairwiseLoss, bpr_loss, triplet_loss
from consumers.model.packing import pack_lists, section, unpack_lists
from consumers.model.sampling import uniform_negatives
from consumers.model.storage import Storage, local_storage
from consumers.model.tables import adagrad_rows, coalesce, sgd_rows
from consumers.model.topn import top_n
from streamer.events import Id

RowUpdate = Callable[[Tensor, Tensor, Tensor, float], tuple[Tensor, Tensor]]
UPDATES: dict[str, RowUpdate] = {"adagrad": adagrad_rows, "sgd": sgd_rows}


def pairwise_loss(config: ModelConfig) -> PairwiseLoss:
    if config.loss == "triplet":
        return partial(triplet_loss, margin=config.margin)
    return bpr_loss


class MatrixFactorization:
    """User and item tables; the score of (user, item) is their dot product.

    `learn` takes rows already mapped by the registries, so the caller decides
    when ids become rows; `history` holds each user's watched item rows, which
    top-N excludes.
    """

    def __init__(
        self,
        config: ModelConfig,
        storage: Callable[[ModelConfig, torch.Generator], Storage] = local_storage,
    ) -> None:
        self.config = config
        self.generator = torch.Generator().manual_seed(config.seed)
        ids_and_rows = storage(config, self.generator)
        self.users = ids_and_rows.users
        self.items = ids_and_rows.items
        self.user_table = ids_and_rows.user_table
        self.item_table = ids_and_rows.item_table
        self.history: list[set[int]] = []
        self._loss = pairwise_loss(config)
        self._update = UPDATES[config.optimizer]
        self.skipped_batches = 0

    def sync_rows(self) -> None:
        """Give every registered id a table row (and every user a history)."""
        self.user_table.grow_to(len(self.users))
        self.item_table.grow_to(len(self.items))
        self.history.extend(set() for _ in range(len(self.users) - len(self.history)))

    def forget_user(self, raw: Id) -> int | None:
        """Drop a user's embedding, optimizer state and history; their row becomes a hole."""
        row = self.users.forget(raw)
        if row is not None and row < self.user_table.rows:
            self.user_table.weight[row] = 0.0
            self.user_table.accumulator[row] = 0.0
            self.history[row] = set()
        return row

    def state(self) -> dict[str, Tensor]:
        """Every tensor needed to resume exactly, the sampler's random state included."""
        self.sync_rows()
        history_offsets, history_items = pack_lists(self.history)
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
        self.history = [
            set(items)
            for items in unpack_lists(tensors["history_offsets"], tensors["history_items"])
        ]
        self.generator.set_state(tensors["generator"])

    def sample_negatives(self, item_rows: Tensor) -> Tensor | None:
        """A random other item per positive; None while fewer than two items exist."""
        self.sync_rows()
        if self.item_table.rows < 2:
            return None
        return uniform_negatives(item_rows, self.item_table.rows, self.generator)

    def learn(
        self, user_rows: Tensor, item_rows: Tensor, negatives: Tensor | None, weights: Tensor
    ) -> float:
        """One pairwise step on the batch; returns the weighted mean loss (nan if none)."""
        self.sync_rows()
        if negatives is None or user_rows.numel() == 0:
            self._remember(user_rows, item_rows)
            return float("nan")
        users = self.user_table.weight[user_rows]
        positives = self.item_table.weight[item_rows]
        negative_vectors = self.item_table.weight[negatives]
        contrast = positives - negative_vectors
        loss, dloss = self._loss((users * contrast).sum(dim=1))
        dloss = (dloss * weights).unsqueeze(1)
        l2 = self.config.l2
        user_grads = dloss * contrast + l2 * users
        item_grads = torch.cat(
            (dloss * users + l2 * positives, -dloss * users + l2 * negative_vectors)
        )
        updates = [
            (self.user_table, *coalesce(user_rows, user_grads)),
            (self.item_table, *coalesce(torch.cat((item_rows, negatives)), item_grads)),
        ]
        lr = self.config.learning_rate
        new_rows = [
            (table, rows, *self._update(table.weight[rows], table.accumulator[rows], grads, lr))
            for table, rows, grads in updates
        ]
        mean_loss = (loss * weights).sum() / weights.sum()
        finite = bool(torch.isfinite(mean_loss)) and all(
            bool(torch.isfinite(weight).all() and torch.isfinite(accumulator).all())
            for _, _, weight, accumulator in new_rows
        )
        if not finite:
            # A poisoned batch (overflowing weights, diverging rows) is dropped whole,
            # histories included.
            self.skipped_batches += 1
            return float("nan")
        for table, rows, weight, accumulator in new_rows:
            table.weight[rows] = weight
            table.accumulator[rows] = accumulator
        self._remember(user_rows, item_rows)
        return float(mean_loss)

    def _remember(self, user_rows: Tensor, item_rows: Tensor) -> None:
        for user, item in zip(user_rows.tolist(), item_rows.tolist(), strict=True):
            self.history[user].add(item)

    def recommend(self, user_rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Top-`n` (scores, item rows) per user, excluding what each already watched."""
        self.sync_rows()
        watched = [self.history[row] for row in user_rows.tolist()]
        exclude_rows = torch.repeat_interleave(
            torch.arange(len(watched)),
            torch.tensor([len(seen) for seen in watched], dtype=torch.long),
        )
        exclude_items = torch.tensor([item for seen in watched for item in seen], dtype=torch.long)
        return top_n(
            self.user_table.weight[user_rows],
            self.item_table.weight,
            n,
            exclude_rows,
            exclude_items,
        )

    def similar(self, item_rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Top-`n` (cosine, item rows) per item, the item itself excluded."""
        self.sync_rows()
        normed = torch.nn.functional.normalize(self.item_table.weight, dim=1)
        return top_n(normed[item_rows], normed, n, torch.arange(len(item_rows)), item_rows)
