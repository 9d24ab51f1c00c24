"""The mlp model: two stages, retrieval by dot product, ranking by an MLP.

An MLP over the concatenated user and item embeddings scores a (user, item) pair; its
score is not a dot product, so no vector search can rank the catalogue by it. Instead a
matrix factorisation (consumers/model/mf.py, learned on the same views) retrieves each
user's `candidates` best items, and the MLP ranks them: the published lists say so
(`stages`). Similar-item lists and the published vectors are the retrieval's.

The ranker has its own user and item embeddings and learns by the triplet loss: each
view's item against the highest-ranked of `negatives` uniform draws the user has not
watched, by a margin.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Floats, ListKind, Ranking, Rows, Step, TableSize
from consumers.model.config import ModelConfig, SearchConfig
from consumers.model.mf import MatrixFactorization
from consumers.model.neural import NeuralConfig, NeuralModel, Tape
from consumers.model.storage import Storage, local_storage
from streamer.events import Id

RETRIEVAL_STAGE, RANKING_STAGE = "retrieve:mf", "rank:mlp"


@dataclass(frozen=True, slots=True)
class MlpConfig(NeuralConfig):
    """`candidates` retrieved per user and ranked; a ranker of one `ranker_width`-wide
    hidden layer; triplet `margin`; the hardest of `negatives` draws per view."""

    candidates: int = 200
    ranker_width: int = 64
    margin: float = 1.0
    negatives: int = 8

    def __post_init__(self) -> None:
        NeuralConfig.__post_init__(self)
        if self.candidates < 1 or self.ranker_width < 1 or self.negatives < 1:
            raise ValueError("candidates, ranker_width and negatives must be >= 1")
        if self.margin < 0:
            raise ValueError("margin must be >= 0")


def retrieval_config(config: MlpConfig) -> ModelConfig:
    """The retrieval stage: mf's defaults at the mlp model's dim, list length and seed."""
    return ModelConfig(dim=config.dim, top_n=config.top_n, seed=config.seed)


class MlpRanker(NeuralModel):
    """An mf retrieval stage and an MLP ranking stage sharing registries and history.

    Invariant: the ranker's tables have a row per id of the retrieval's registries
    (which are this model's); every view is learned by both stages or by neither.
    """

    config: MlpConfig

    def __init__(self, config: MlpConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        self.retrieval = MatrixFactorization(retrieval_config(config), self._storage, search)
        self.history = self.retrieval.history
        dim = config.dim
        self.user_embeddings = self.add_table("user", "user", dim, config.init_std)
        self.item_embeddings = self.add_table("item", "item", dim, config.init_std)
        self.hidden_layer = self.add_layer("rank.hidden", 2 * dim, config.ranker_width)
        self.output_layer = self.add_layer("rank.output", config.ranker_width, 1)

    def _storage(self, config: ModelConfig, generator: torch.Generator) -> Storage:
        """The retrieval's tables, over this model's registries."""
        tables = local_storage(config, generator)
        return Storage(self.users, self.items, tables.user_table, tables.item_table)

    @property
    def name(self) -> str:
        return "mlp"

    def stages(self, kind: ListKind) -> tuple[str, ...]:
        """Which stages made a published list of `kind` ("recommend" or "similar")."""
        return (RETRIEVAL_STAGE, RANKING_STAGE) if kind == "recommend" else (RETRIEVAL_STAGE,)

    def forget_user(self, raw: Id) -> int | None:
        row = self.retrieval.forget_user(raw)
        if row is not None:
            self.sync_rows()
            index = torch.tensor([row], device=self.device)
            self.user_embeddings.zero_rows(index)
        return row

    def _rank(self, users: Tensor, items: Tensor, tape: Tape | None = None) -> Tensor:
        """MLP scores of the pairs (users[j], items[j]) (rows of the ranker's tables)."""
        if tape is None:
            user_vectors = self.user_embeddings.weight[users]
            item_vectors = self.item_embeddings.weight[items]
            layers = [
                table.weight for pair in (self.hidden_layer, self.output_layer) for table in pair
            ]
        else:
            user_vectors = tape.rows(self.user_embeddings, users)
            item_vectors = tape.rows(self.item_embeddings, items)
            layers = [
                tape.dense(table)
                for pair in (self.hidden_layer, self.output_layer)
                for table in pair
            ]
        hidden_weight, hidden_bias, output_weight, output_bias = layers
        pairs = torch.cat([user_vectors, item_vectors], dim=-1)
        hidden = torch.relu(pairs @ hidden_weight.T + hidden_bias)
        return (hidden @ output_weight.T + output_bias).squeeze(-1)

    def learn(self, batch: Batch) -> Step:
        """The retrieval learns the batch (its history takes the views), then the ranker
        one triplet step on the views the retrieval learned."""
        step = self.retrieval.learn(batch)
        self.skipped_events = self.retrieval.skipped_events
        self.sync_rows()
        users = batch.users.astype(np.int64, copy=False)[step.learned]
        items = batch.items.astype(np.int64, copy=False)[step.learned]
        if users.size == 0 or len(self.items) < 2:
            return step
        config, device = self.config, self.device
        user_rows, item_rows = self._device_rows(users), self._device_rows(items)
        drawn = torch.randint(
            0, len(self.items), (users.size, config.negatives), generator=self.generator
        ).to(device)
        with torch.no_grad():
            scores = self._rank(user_rows[:, None].expand_as(drawn), drawn)
            watched = torch.from_numpy(self.history.watched(users[:, None], drawn.cpu().numpy()))
            scores = scores.masked_fill(watched.to(device), float("-inf"))
        negatives = drawn[torch.arange(users.size, device=device), scores.argmax(dim=1)]
        tape = Tape()
        both = self._rank(
            torch.cat([user_rows, user_rows]), torch.cat([item_rows, negatives]), tape
        )
        positive, negative = both[: users.size], both[users.size :]
        weights = torch.from_numpy(batch.weights[step.learned].astype(np.float32)).to(device)
        losses = torch.relu(config.margin - positive + negative)
        loss = (losses * weights).sum() / weights.sum()
        if torch.isfinite(loss):
            loss.backward()  # type: ignore[no-untyped-call]
            tape.step(self.optimizer)
        return step

    def recommend(self, user_rows: Rows, n: int) -> Ranking:
        """The retrieval's top `candidates` (watched excluded), ranked by the MLP."""
        retrieved = self.retrieval.recommend(user_rows, max(self.config.candidates, n))
        return _top(self._ranked(user_rows, retrieved), retrieved.items, n)

    def _ranked(self, user_rows: Rows, retrieved: Ranking) -> Tensor:
        """MLP scores of the retrieved items, -inf in the retrieval's empty slots."""
        self.sync_rows()
        items = torch.from_numpy(retrieved.items).to(self.device)
        found = torch.from_numpy(np.isfinite(retrieved.scores)).to(self.device)
        users = self._device_rows(user_rows)[:, None].expand_as(items)
        with torch.no_grad():
            scores = self._rank(users, items.clamp(min=0))
        return scores.masked_fill(~found, float("-inf")).cpu()

    def similar(self, item_rows: Rows, n: int) -> Ranking:
        return self.retrieval.similar(item_rows, n)

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """The MLP's score of each item among the user's retrieved candidates; -inf for
        items the retrieval did not keep (or already watched)."""
        retrieved = self.retrieval.recommend(user_rows, self.config.candidates)
        ranked = self._ranked(user_rows, retrieved).numpy()
        position = np.full(len(self.items), -1, dtype=np.int64)
        position[item_rows] = np.arange(item_rows.size)
        scores = np.full((user_rows.size, item_rows.size), -np.inf, dtype=np.float32)
        columns = position[np.maximum(retrieved.items, 0)]
        kept = np.isfinite(ranked) & (columns >= 0)
        scores[np.nonzero(kept)[0], columns[kept]] = ranked[kept]
        return scores

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        """The retrieval's (mf's): the published vectors are the first stage's."""
        vectors = self.retrieval.user_vectors(user_rows.cpu().numpy())
        return torch.from_numpy(vectors).to(self.device)

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        vectors = self.retrieval.item_vectors(item_rows.cpu().numpy())
        return torch.from_numpy(vectors).to(self.device)

    def items_moved(self, item_rows: Collection[int]) -> None:
        self.retrieval.items_moved(item_rows)

    def table_sizes(self) -> dict[str, TableSize]:
        return self.retrieval.table_sizes()

    def state(self) -> dict[str, Tensor]:
        """The retrieval's state as mf's (registries, history and tables under mf's
        names, so a host checkpoint splits and merges them as mf's), the ranker's tables
        and layers with their Adam moments, and the ranker's generator."""
        self.sync_rows()
        tensors = self.retrieval.state()
        tensors["ranker_generator"] = self.generator.get_state()
        for name, table in {**self.tables, **self.layers}.items():
            tensors.update(table.state(f"param.{name}"))
        return tensors

    def load_state(self, tensors: dict[str, Tensor], shared: bool = True) -> None:
        """Restore `state()` (nothing is shared between processes: `shared` is moot)."""
        self.retrieval.load_state(tensors)
        for name, table in {**self.tables, **self.layers}.items():
            table.load_state(tensors, f"param.{name}")
        self.generator.set_state(tensors["ranker_generator"])


def _top(scores: Tensor, items: Rows, n: int) -> Ranking:
    """The `n` best of each row's scored items, best first (-inf slots last)."""
    k = min(n, scores.shape[1])
    best, order = torch.topk(scores, k, dim=1)
    chosen = np.take_along_axis(items, order.numpy(), axis=1)
    ranking = Ranking(best.numpy().astype(np.float32), chosen.astype(np.int64))
    if k < n:  # fewer candidates than asked: pad with empty slots
        pad = n - k
        return Ranking(
            np.pad(ranking.scores, ((0, 0), (0, pad)), constant_values=-np.inf),
            np.pad(ranking.items, ((0, 0), (0, pad)), constant_values=-1),
        )
    return ranking
