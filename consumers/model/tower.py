"""The history model: YouTube-style candidate generation, learned online.

A user's vector is computed, never stored: the mean of the vectors of their last
`history_length` viewed items, plus a residual MLP over that mean and the example's
age. An item's vector is its id embedding, plus (`item_features`) the mean of its
feature tokens' embeddings (genres, year bucket, ...: consumers/model/features.py);
one for the history and one for the output (published; lists are a nearest-neighbour
search over it). With features, an item gets a row when they arrive, so it has a
useful vector before its first view (cold start). Learning is a sampled softmax of
each view's item against the batch's other items and `sampled_negatives` uniform
draws, each logit corrected by the log of how often its item is drawn (logQ). No user
table: a user has a vector after their first view, and a brand-new user gets the MLP's
cold vector. A served score adds `popularity_weight` times the log of the item's
recent views (the logQ counts): the last published coordinate carries it (a user's:
the weight; an item's: its log count, up to a constant that only a rebase changes).
Invariants: feature token 0 is padding and its embeddings stay zero; the item token
matrix follows the feature store (rebuilt from it after a restore); an item's
popularity coordinate changes only with its own views or a rebase, which moves all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Step
from consumers.model.config import SearchConfig
from consumers.model.features import PADDING, FeatureStore
from consumers.model.neural import Entity, EntityTable, NeuralConfig, NeuralModel, Tape
from consumers.model.optim import AdamRows
from consumers.model.token_rows import FeatureRows, mean_of
from streamer.events import Id

SECONDS_PER_HOUR = 3600.0
POPULARITY_FLOOR = 1e-3  # added to counts before the log: an unviewed item's is finite
# the served popularity's shared constant grows by ln 2 per half-life; past this it is
# reset and every item's coordinate rewritten (~29 half-lives: 58k views at defaults),
# which keeps the coordinate (a log count plus at most 20) small beside the HNSW graph's
REBASE_NATS = 20.0


@dataclass(frozen=True, slots=True)
class HistoryConfig(NeuralConfig):
    """`history_length` last views make a user; `sampled_negatives` uniform draws per
    batch join the in-batch negatives; the residual MLP has one `hidden`-wide layer.
    The defaults were chosen on ML-100K's validation split at micro-batch 512: learning
    rate and logQ half-life on a 10% tail (model_grid-history-step512*.json), then
    `history_length`, `hidden` and `init_std` on the 20% tail shaped like the test
    (temporal NDCG@10 0.191 -> 0.211, model_grid-history-validation20*.json), and
    `popularity_weight` there too."""

    learning_rate: float = 0.005
    init_std: float = 0.02
    history_length: int = 20
    sampled_negatives: int = 2048
    hidden: int = 2048
    tied: bool = False  # one embedding per item for the history and the output
    # item frequencies behind the in-batch logQ forget with this half-life in views
    # (0: all-time counts); recent popularity is what the next views follow
    frequency_half_life: int = 2000
    # add the mean of an item's feature-token embeddings to its vectors: cold items get
    # useful vectors, but temporal NDCG@10 on validation fell 0.178 -> 0.158
    # (benchmarks/results/model_grid-history-features*.json), so off by default
    item_features: bool = False
    feature_init_std: float = 0.05
    # served score = user . item + this x log(the item's recent views): the softmax's
    # logQ correction takes the sampling popularity out of what it learns, and part of it
    # back raised temporal NDCG@10 on validation 0.201 -> 0.222 over 11 seeds
    # (history-popularity-seeds.json); weights 0-5 in model_grid-history-popularity-*.json:
    # 2 is the smallest on the plateau (2-5 within 0.001). 0: `dim` learned widths
    popularity_weight: float = 2.0

    def __post_init__(self) -> None:
        NeuralConfig.__post_init__(self)
        if self.history_length < 1 or self.sampled_negatives < 0 or self.hidden < 1:
            raise ValueError("history_length, hidden >= 1 and sampled_negatives >= 0")
        if self.feature_init_std < 0:
            raise ValueError("feature_init_std must be >= 0")
        if self.popularity_weight < 0 or (self.popularity_weight > 0 and self.dim < 2):
            raise ValueError("popularity_weight must be >= 0, and dim >= 2 with it")

    @property
    def width(self) -> int:
        """The learned width of user and item vectors (one published coordinate carries
        the popularity term when it is on)."""
        return self.dim - 1 if self.popularity_weight else self.dim


class HistoryTower(NeuralModel):
    """User vector = mean of recent item vectors + MLP(mean, age); item vector = its
    embedding (+ mean of its feature-token embeddings). Invariant: `recent[u]` is a ring
    of user row u's last views (-1: empty), `pushed[u]` how many views went into it."""

    config: HistoryConfig

    def __init__(self, config: HistoryConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        width = config.width
        self.embeddings = self.add_table("item", "item", width, config.init_std)
        self.outputs = (
            self.embeddings
            if config.tied
            else self.add_table("item_output", "item", width, config.init_std)
        )
        self.feature_rows = FeatureRows()
        self.token_embeddings = self._add_tokens("item_tokens")
        self.token_outputs = (
            self.token_embeddings if config.tied else self._add_tokens("item_output_tokens")
        )
        self.hidden = self.add_layer("hidden", width + 1, config.hidden)
        self.output = self.add_layer("output", config.hidden, width)
        self.recent = torch.full((0, config.history_length), -1, dtype=torch.int64)
        self.pushed = torch.zeros(0, dtype=torch.int64)
        self.item_counts = torch.zeros(0, dtype=torch.float64)
        self.newest = torch.zeros(1, dtype=torch.float64)  # latest view time seen
        # log of the decay applied to `item_counts` since the last rebase: counts times
        # its exp is what an item's own views alone change (its served popularity)
        self.popularity_offset = torch.zeros(1, dtype=torch.float64)

    @property
    def name(self) -> str:
        return "history"

    def _add_tokens(self, name: str) -> AdamRows | None:
        """A feature-token table (row 0: padding, zero), or None without item features."""
        if not self.config.item_features:
            return None
        width = self.config.width
        table = AdamRows((width,), torch.zeros(1, width), self.device)
        self.layers[name] = table
        return table

    def read_features(self, store: FeatureStore) -> None:
        self.feature_rows.read(store)
        self.sync_rows()

    def features_arrived(self, kind: Entity, raw: Id) -> int | None:
        """Give an item with features a row (and its tokens); a user's row if known (the
        tower embeds no user features), else None."""
        if kind == "user" or not self.config.item_features:
            return (self.users if kind == "user" else self.items).row(raw)
        return self.feature_rows.arrived("item", raw, self.items, self.sync_rows)

    def sync_rows(self) -> None:
        super().sync_rows()
        if not self.config.item_features:
            return
        self.feature_rows.follow("item", self.items)
        for table in self._token_tables():
            self.feature_rows.grow(table, self.generator, self.config.feature_init_std)

    def _token_tables(self) -> list[AdamRows]:
        """The distinct feature-token tables (one when tied, none without features)."""
        tables = [self.token_embeddings, self.token_outputs]
        return [
            table for i, table in enumerate(tables) if table is not None and table not in tables[:i]
        ]

    def _item_rows(
        self, ids: EntityTable, tokens: AdamRows | None, rows: Tensor, tape: Tape | None
    ) -> Tensor:
        """Id embedding + mean feature-token embedding of item `rows` (tape: differentiable)."""
        own = ids.weight[rows] if tape is None else tape.rows(ids, rows)
        if tokens is None:
            return own
        ids_of_tokens = self.feature_rows.ids("item", rows).to(self.device)
        embedded = (
            tokens.weight[ids_of_tokens]
            if tape is None
            else tape.rows(tokens, ids_of_tokens.flatten()).reshape(
                *ids_of_tokens.shape, tokens.shape[0]
            )
        )
        return own + mean_of(embedded, ids_of_tokens)

    def _grow_users(self, users: int) -> None:
        extra = users - self.recent.shape[0]
        if extra > 0:
            empty = torch.full((extra, self.config.history_length), -1, dtype=torch.int64)
            self.recent = torch.cat([self.recent, empty])
            self.pushed = torch.cat([self.pushed, torch.zeros(extra, dtype=torch.int64)])
        extra = len(self.items) - self.item_counts.shape[0]
        if extra > 0:
            self.item_counts = torch.cat(
                [self.item_counts, torch.zeros(extra, dtype=torch.float64)]
            )

    def _forget_row(self, row: int) -> None:
        self.recent[row] = -1
        self.pushed[row] = 0

    def _push(self, users: np.ndarray, items: np.ndarray) -> None:
        """Append views, in order, to their users' rings."""
        recent, pushed, length = self.recent.numpy(), self.pushed.numpy(), self.recent.shape[1]
        for user, item in zip(users.tolist(), items.tolist(), strict=True):
            recent[user, pushed[user] % length] = item
            pushed[user] += 1

    def _queries(
        self, user_rows: Tensor, ages: Tensor, tape: Tape | None, extra: Tensor
    ) -> tuple[Tensor, Tensor]:
        """User vectors from their rings, and the output vectors of `extra` item rows
        (read in the same pass when tied, so a step moves each row once)."""
        recent = self.recent[user_rows.cpu()].to(self.device)
        valid = recent >= 0
        watched = int(valid.sum())
        tied = self.outputs is self.embeddings
        rows = torch.cat([recent[valid], extra]) if tied else recent[valid]
        read = self._item_rows(self.embeddings, self.token_embeddings, rows, tape)
        if tape is None:
            outputs = self._item_rows(self.outputs, self.token_outputs, extra, None)
            layers = [table.weight for pair in (self.hidden, self.output) for table in pair]
        else:
            outputs = (
                read[watched:]
                if tied
                else self._item_rows(self.outputs, self.token_outputs, extra, tape)
            )
            layers = [tape.dense(table) for pair in (self.hidden, self.output) for table in pair]
        slots = torch.zeros(*recent.shape, self.config.width, device=self.device)
        slots[valid] = read[:watched]
        mean = slots.sum(1) / valid.sum(1, keepdim=True).clamp(min=1)
        hidden_weight, hidden_bias, output_weight, output_bias = layers
        hidden = torch.relu(torch.cat([mean, ages[:, None]], 1) @ hidden_weight.T + hidden_bias)
        return mean + hidden @ output_weight.T + output_bias, outputs

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        ages = torch.zeros(user_rows.shape[0], device=self.device)  # served now: age 0
        empty = torch.zeros(0, dtype=torch.int64, device=self.device)
        queries = self._queries(user_rows, ages, None, empty)[0]
        if not self.config.popularity_weight:
            return queries
        weight = queries.new_full((queries.shape[0], 1), self.config.popularity_weight)
        return torch.cat([queries, weight], 1)

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        vectors = self._similarity_vectors(item_rows)
        if self.config.popularity_weight:
            vectors[:, -1] = self._popularity(item_rows)
        return vectors

    def _similarity_vectors(self, item_rows: Tensor) -> Tensor:
        """Item vectors with the popularity coordinate 0: similar items are items alike,
        not items alike in how often they are watched."""
        vectors = self._item_rows(self.outputs, self.token_outputs, item_rows, None)
        if not self.config.popularity_weight:
            return vectors
        return torch.cat([vectors, vectors.new_zeros(vectors.shape[0], 1)], 1)

    def _popularity(self, item_rows: Tensor) -> Tensor:
        """log(recent views) of these items, up to a constant shared by every item until
        the next rebase (`_decay_counts`), so an item's changes only with its own views."""
        counts = self.item_counts[item_rows.cpu()] * torch.exp(self.popularity_offset)
        return torch.log(counts + POPULARITY_FLOOR).float().to(self.device)

    def _decay_counts(self, views: int) -> bool:
        """Let the logQ counts forget `views` views' worth; True when the served
        popularity was rebased (every item's coordinate moved)."""
        if not self.config.frequency_half_life:
            return False
        halvings = views / self.config.frequency_half_life
        self.item_counts *= 0.5**halvings
        self.popularity_offset += halvings * np.log(2.0)
        if float(self.popularity_offset) <= REBASE_NATS:
            return False
        self.popularity_offset.zero_()
        return bool(self.config.popularity_weight)

    def learn(self, batch: Batch) -> Step:
        """One sampled-softmax step over the batch, users as they were before it; then
        the views join the users' histories and rings."""
        users, items, learned = self._begin(batch)
        if users.size == 0:
            return Step(float("nan"), learned, np.zeros(0, dtype=np.int64))
        rebased = self._decay_counts(users.size)
        self.item_counts.index_add_(
            0, torch.from_numpy(items), torch.from_numpy(batch.weights.astype(np.float64))
        )
        self.newest = torch.maximum(self.newest, torch.tensor([batch.timestamps.max()]))
        loss, moved = self._step(users, items, batch)
        if not np.isfinite(loss):
            self.skipped_events += users.size
            learned[:] = False
            self.history.remove(users, items)
        self._push(users[learned], items[learned])
        if rebased:
            moved = np.arange(len(self.items), dtype=np.int64)
        return Step(loss, learned, moved)

    def _step(self, users: np.ndarray, items: np.ndarray, batch: Batch) -> tuple[float, np.ndarray]:
        """The weighted mean sampled-softmax loss, stepped unless non-finite (then nan),
        and the output rows it moved."""
        config, device = self.config, self.device
        catalogue = len(self.items)
        drawn = torch.randint(0, catalogue, (config.sampled_negatives,), generator=self.generator)
        positives = torch.from_numpy(items)
        candidates = torch.cat([positives, drawn]).to(device)
        hours = (self.newest.item() - batch.timestamps) / SECONDS_PER_HOUR
        ages = torch.from_numpy(np.log1p(np.maximum(hours, 0.0)).astype(np.float32)).to(device)
        tape = Tape()
        queries, vectors = self._queries(self._device_rows(users), ages, tape, candidates)
        logits = queries @ vectors.T
        size = users.size
        # an item in the batch was drawn at least once, whatever its views' weights
        counts = self.item_counts
        frequency = counts[positives].clamp(min=1.0) / counts.sum().clamp(min=1.0)
        in_batch = torch.log(size * frequency).float().to(device)
        uniform = torch.full(
            (config.sampled_negatives,),
            np.log(max(config.sampled_negatives, 1) / catalogue),
            device=device,
        )
        logits = logits - torch.cat([in_batch, uniform])[None, :]
        target = candidates[:size]
        accidental = candidates[None, :] == target[:, None]
        accidental[torch.arange(size), torch.arange(size)] = False
        logits = logits.masked_fill(accidental, float("-inf"))
        weights = torch.from_numpy(batch.weights.astype(np.float32)).to(device)
        losses = torch.nn.functional.cross_entropy(
            logits, torch.arange(size, device=device), reduction="none"
        )
        loss = (losses * weights).sum() / weights.sum()
        if not torch.isfinite(loss):
            return float("nan"), np.zeros(0, dtype=np.int64)
        loss.backward()  # type: ignore[no-untyped-call]
        tape.step(self.optimizer)
        with torch.no_grad():
            for table in self._token_tables():
                table.weight[PADDING] = 0.0
        return float(loss.detach()), tape.rows_read(self.outputs).cpu().numpy()

    def _extra_state(self) -> dict[str, Tensor]:
        return {
            "recent": self.recent,
            "recent_pushed": self.pushed,
            "item_counts": self.item_counts,
            "newest": self.newest,
            "popularity_offset": self.popularity_offset,
        }

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.recent = tensors["recent"].clone()
        self.pushed = tensors["recent_pushed"].clone()
        self.item_counts = tensors["item_counts"].clone()
        self.newest = tensors["newest"].clone()
        self.popularity_offset = tensors["popularity_offset"].clone()
        self.feature_rows.reset()  # the registry was restored: every row read again
        self.sync_rows()
