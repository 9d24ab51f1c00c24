"""Top-N over item vectors, exact or through an HNSW graph: what every model's
`recommend` and `similar` call (mf and the torch-trained models alike)."""

from __future__ import annotations

from collections.abc import Collection

import numpy as np
import torch
from torch import Tensor

from consumers.model.ann import LiveSearch, make_index
from consumers.model.base import Ranking, Rows
from consumers.model.config import SearchConfig
from consumers.model.history import History
from consumers.model.topn import top_n


class ItemSearch:
    """Ranks item vectors for user queries (watched items excluded) and for items
    (cosine, the item itself excluded); `search.index="ann"` switches to a live HNSW
    graph once the catalogue reaches `search.ann_min_items`."""

    def __init__(self, search: SearchConfig, dim: int, seed: int) -> None:
        self.search = search
        self.dim = dim
        self.seed = seed
        self.live: dict[str, LiveSearch] = {}

    def items_moved(self, item_rows: Collection[int]) -> None:
        """Tell the approximate indexes (if any) which item rows changed."""
        for live in self.live.values():
            live.mark_moved(item_rows)

    def _approximate(self, kind: str, items: int, capacity: int) -> LiveSearch | None:
        """The ANN search for `kind` ("recommend" or "similar"), or None for exact search."""
        search = self.search
        if search.index != "ann" or items < search.ann_min_items:
            return None
        live = self.live.get(kind)
        if live is None:
            index = make_index(
                "hnsw",
                self.dim,
                m=search.m,
                ef_construction=search.ef_construction,
                ef_search=search.ef_search,
                capacity=capacity,
                seed=self.seed,
            )
            live = LiveSearch(
                index,
                search.refresh_every,
                search.sweep_rows,
                search.overfetch,
                normalise=kind == "similar",
            )
            self.live[kind] = live
        return live

    def recommend(
        self,
        queries: Tensor,
        items: Tensor,
        history: History,
        user_rows: Rows,
        n: int,
        capacity: int,
    ) -> Ranking:
        """Top-`n` (score, item row) per query, the items its user watched excluded."""
        offsets, watched = history.lists(user_rows)
        approximate = self._approximate("recommend", items.shape[0], capacity)
        if approximate is not None:
            per_user = np.split(watched, offsets[1:-1])
            return _ranking(approximate.search(queries, items, n, per_user))
        exclude_rows = np.repeat(np.arange(offsets.size - 1), np.diff(offsets))
        return _ranking(
            top_n(queries, items, n, torch.from_numpy(exclude_rows), torch.from_numpy(watched))
        )

    def similar(self, item_rows: Rows, items: Tensor, n: int, capacity: int) -> Ranking:
        """Top-`n` (cosine, item row) per item, the item itself excluded."""
        rows = torch.from_numpy(item_rows)
        approximate = self._approximate("similar", items.shape[0], capacity)
        if approximate is not None:
            queries = torch.nn.functional.normalize(items[rows], dim=1)
            itself = [(row,) for row in item_rows.tolist()]
            return _ranking(approximate.search(queries, items, n, itself))
        normed = torch.nn.functional.normalize(items, dim=1)
        return _ranking(top_n(normed[rows], normed, n, torch.arange(len(rows)), rows))


def _ranking(found: tuple[Tensor, Tensor]) -> Ranking:
    scores, items = found
    return Ranking(scores.numpy(), items.numpy())
