"""Online matrix factorisation: one pairwise update per micro-batch of views."""

from __future__ import annotations

from collections.abc import Callable, Collection
from functools import partial

import torch
from torch import Tensor

from consumers.model.ann import LiveSearch, make_index
from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.losses import PairwiseLoss, bpr_loss, triplet_loss
from consumers.model.packing import pack_lists, section, unpack_lists
from consumers.model.sampling import hardest_negatives, uniform_candidates
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
        search: SearchConfig | None = None,
    ) -> None:
        """`search` picks exact or approximate top-N (default: exact)."""
        self.config = config
        self.search = search or SearchConfig()
        self._live_search: dict[str, LiveSearch] = {}
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

    def sample_negatives(self, item_rows: Tensor, user_rows: Tensor | None = None) -> Tensor | None:
        """One negative per positive; None while fewer than two items exist.

        Draws `config.negatives` uniform candidates per positive and, given the users,
        keeps the one each user scores highest among those they have not watched (this
        batch's positives included). Without users: the first draw, plain uniform.
        """
        self.sync_rows()
        if self.item_table.rows < 2:
            return None
        candidates = uniform_candidates(
            item_rows, self.item_table.rows, self.config.negatives, self.generator
        )
        if user_rows is None or self.config.negatives == 1:
            return candidates[:, 0]
        users = self.user_table.weight[user_rows].unsqueeze(1)
        scores = (users * self.item_table.weight[candidates]).sum(dim=2)
        return hardest_negatives(
            candidates, scores, self._watched(user_rows, item_rows, candidates)
        )

    def _watched(self, user_rows: Tensor, item_rows: Tensor, candidates: Tensor) -> Tensor:
        """Whether each candidate is in its user's history or among their positives here."""
        batch: dict[int, set[int]] = {}
        users = user_rows.tolist()
        for user, item in zip(users, item_rows.tolist(), strict=True):
            batch.setdefault(user, set()).add(item)
        return torch.tensor(
            [
                [item in self.history[user] or item in batch[user] for item in row]
                for user, row in zip(users, candidates.tolist(), strict=True)
            ],
            dtype=torch.bool,
        ).reshape(candidates.shape)

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

    def items_moved(self, item_rows: Collection[int]) -> None:
        """Tell the approximate indexes (if any) which item rows changed."""
        for live in self._live_search.values():
            live.mark_moved(item_rows)

    def _approximate(self, kind: str) -> LiveSearch | None:
        """The ANN search for `kind` ("recommend" or "similar"), or None for exact search."""
        search = self.search
        if search.index != "ann" or self.item_table.rows < search.ann_min_items:
            return None
        live = self._live_search.get(kind)
        if live is None:
            index = make_index(
                "hnsw",
                self.config.dim,
                m=search.m,
                ef_construction=search.ef_construction,
                ef_search=search.ef_search,
                capacity=self.item_table.capacity,
                seed=self.config.seed,
            )
            live = LiveSearch(
                index,
                search.refresh_every,
                search.sweep_rows,
                search.overfetch,
                normalise=kind == "similar",
            )
            self._live_search[kind] = live
        return live

    def recommend(self, user_rows: Tensor, n: int) -> tuple[Tensor, Tensor]:
        """Top-`n` (scores, item rows) per user, excluding what each already watched."""
        self.sync_rows()
        watched = [self.history[row] for row in user_rows.tolist()]
        approximate = self._approximate("recommend")
        if approximate is not None:
            return approximate.search(
                self.user_table.weight[user_rows], self.item_table.weight, n, watched
            )
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
        approximate = self._approximate("similar")
        if approximate is not None:
            queries = torch.nn.functional.normalize(self.item_table.weight[item_rows], dim=1)
            itself = [(row,) for row in item_rows.tolist()]
            return approximate.search(queries, self.item_table.weight, n, itself)
        normed = torch.nn.functional.normalize(self.item_table.weight, dim=1)
        return top_n(normed[item_rows], normed, n, torch.arange(len(item_rows)), item_rows)
