"""Models that embed what the feature topics say (consumers/model/features.py).

**features**: an item's vector is its id embedding plus the mean of its feature
tokens' embeddings (genres, year bucket, ...), a user's is its id embedding, learned
by BPR against `negatives` items per view drawn among the items viewed so far (an
item nobody viewed is never a negative); one published coordinate is an item bias
(1 for users), so the dot product is the score BPR learns. Id embeddings start near
zero (`init_std`), so an item with features and no views already has a useful vector:
it gets a row when its features arrive (cold start). A user's features (age bucket,
gender, occupation, geo) reach the score through a cold-start part of
`cold_share` of the width: the mean of their tokens' embeddings against each item's
cold embedding, learned only on the views of users with no learned view yet, on top
of their score without it held fixed, and served only to such users (after their
first micro-batch a user is their id row). Demographic tokens in every user's vector
cost the users with a history a fifth of their HR@10 on the validation split; kept
apart, a new user still starts from what users like them watch.

**content**: the features model plus a small CNN over each item's text (hashed
words -> embeddings -> width-3 convolution -> max over time -> linear) trained
online to regress the learned vectors of the batch's items (the target held
fixed). An item's published vector blends its learned vector with the CNN's
guess by its views n: `n / (n + content_views)` of the first, so a brand-new item
lands where items with similar text live, before anyone watches it.

Invariants: token and word id 0 are padding and their embeddings stay zero; the
token matrices follow the store (rebuilt from it after a restore).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Step
from consumers.model.config import SearchConfig
from consumers.model.features import PADDING, TEXT_BUCKETS, FeatureStore
from consumers.model.neural import Entity, NeuralConfig, NeuralModel, Tape
from consumers.model.optim import AdamRows
from consumers.model.token_rows import FeatureRows, TokenRows, mean_of
from streamer.events import Id

CONV_WIDTH = 3


@dataclass(frozen=True, slots=True)
class FeaturesConfig(NeuralConfig):
    """`negatives` items per view for BPR, drawn among the viewed items with weight
    views^`negative_power` (0: uniform); ids start N(0, `init_std`), feature tokens
    N(0, `feature_init_std`)."""

    learning_rate: float = 0.01
    init_std: float = 0.01
    feature_init_std: float = 0.1
    negatives: int = 8
    negative_power: float = 0.0
    cold_share: float = 0.25

    def __post_init__(self) -> None:
        NeuralConfig.__post_init__(self)
        if self.dim < 2 or self.negatives < 1 or self.feature_init_std < 0:
            raise ValueError("dim must be >= 2, negatives >= 1, feature_init_std >= 0")
        if not 0 <= self.negative_power <= 1:
            raise ValueError("negative_power must be in [0, 1]")
        if not 0 < self.cold_share < 1 or self.dim - 1 - self.cold_width < 1:
            raise ValueError("cold_share must be in (0, 1) and leave the id embedding a column")

    @property
    def cold_width(self) -> int:
        """Columns of the cold-start part (user tokens . item cold embedding)."""
        return max(1, round(self.dim * self.cold_share))


@dataclass(frozen=True, slots=True)
class ContentConfig(FeaturesConfig):
    """The text CNN: `word_dim`-wide word embeddings, `channels` filters; an item's
    learned vector weighs n / (n + `content_views`) against the CNN's after n views."""

    word_dim: int = 32
    channels: int = 64
    content_views: float = 5.0

    def __post_init__(self) -> None:
        FeaturesConfig.__post_init__(self)
        if self.word_dim < 1 or self.channels < 1 or self.content_views <= 0:
            raise ValueError("word_dim, channels must be >= 1, content_views > 0")


def _grown(counts: Tensor, rows: int) -> Tensor:
    """`counts` with zeros appended up to `rows`."""
    extra = rows - counts.shape[0]
    return torch.cat([counts, torch.zeros(extra, dtype=counts.dtype)]) if extra > 0 else counts


class FeaturesModel(NeuralModel):
    """Item vector = [id embedding + mean feature-token embedding, bias, cold embedding];
    user vector = [id embedding, 1, mean user-token embedding if no learned view else 0].
    Invariant: `user_views[u]` counts user row u's learned views."""

    config: FeaturesConfig

    def __init__(self, config: FeaturesConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        cold = config.cold_width
        width = config.dim - 1 - cold  # one coordinate carries the item bias
        self.user_ids = self.add_table("user", "user", width, config.init_std)
        self.item_ids = self.add_table("item", "item", width, config.init_std)
        self.item_bias = self.add_table("item_bias", "item", 1, 0.0)
        self.item_cold = self.add_table("item_cold", "item", cold, config.init_std)
        self.token_table = AdamRows((width,), torch.zeros(1, width), self.device)
        self.layers["tokens"] = self.token_table
        self.user_token_table = AdamRows((cold,), torch.zeros(1, cold), self.device)
        self.layers["user_tokens"] = self.user_token_table
        self.feature_rows = FeatureRows()
        self.views = torch.zeros(0, dtype=torch.float64)  # per item row
        self.user_views = torch.zeros(0, dtype=torch.float64)  # per user row

    @property
    def name(self) -> str:
        return "features"

    def read_features(self, store: FeatureStore) -> None:
        self.feature_rows.read(store)
        self._rebuild_token_rows()

    def features_arrived(self, kind: Entity, raw: Id) -> int | None:
        """Give an entity with features a row (and its tokens); None for one without
        features and without a row."""
        registry = self.users if kind == "user" else self.items
        return self.feature_rows.arrived(kind, raw, registry, self.sync_rows)

    def sync_rows(self) -> None:
        super().sync_rows()
        self.feature_rows.follow("user", self.users)
        self.feature_rows.follow("item", self.items)
        self.views = _grown(self.views, len(self.items))
        self.user_views = _grown(self.user_views, len(self.users))
        for table in (self.token_table, self.user_token_table):
            self.feature_rows.grow(table, self.generator, self.config.feature_init_std)

    def _rebuild_token_rows(self) -> None:
        self.feature_rows.reset()
        self.sync_rows()

    def _features(self, kind: Entity, rows: Tensor, tape: Tape | None) -> Tensor:
        """Mean token embedding: an item's in the id width, a user's in the cold width."""
        tokens = self.feature_rows.ids(kind, rows).to(self.device)
        table = self.user_token_table if kind == "user" else self.token_table
        embedded = table.weight[tokens] if tape is None else tape.rows(table, tokens.flatten())
        return mean_of(embedded.reshape(*tokens.shape, table.shape[0]), tokens)

    def _item(self, rows: Tensor, tape: Tape | None = None) -> Tensor:
        own = self.item_ids.weight[rows] if tape is None else tape.rows(self.item_ids, rows)
        return own + self._features("item", rows, tape)

    def _cold(self, user_rows: Tensor) -> Tensor:
        """Which of these users have no learned view yet (bool, on the device)."""
        return (self.user_views[user_rows.cpu()] == 0).to(self.device)

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        ones = torch.ones(user_rows.shape[0], 1, device=self.device)
        cold = torch.zeros(user_rows.shape[0], self.config.cold_width, device=self.device)
        new = self._cold(user_rows)
        if new.any():  # a publish is mostly of users with a history: their part is 0
            cold[new] = self._features("user", user_rows[new], None)
        return torch.cat([self.user_ids.weight[user_rows], ones, cold], 1)

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        return self._published_items(self._item(item_rows), item_rows)

    def _published_items(self, vectors: Tensor, item_rows: Tensor) -> Tensor:
        """`vectors` (id width) joined by the items' bias and cold embedding."""
        bias, cold = self.item_bias.weight[item_rows], self.item_cold.weight[item_rows]
        return torch.cat([vectors, bias, cold], 1)

    def learn(self, batch: Batch) -> Step:
        """One BPR step (Adam) over the batch's views, `negatives` drawn items each."""
        users, items, learned = self._begin(batch)
        none = np.zeros(0, dtype=np.int64)
        if users.size == 0:
            return Step(float("nan"), learned, none)
        self.views.index_add_(
            0, torch.from_numpy(items), torch.ones(items.size, dtype=torch.float64)
        )
        drawn = self._negatives(users.size)
        tape = Tape()
        user_rows, item_rows = self._device_rows(users), self._device_rows(items)
        queries = tape.rows(self.user_ids, user_rows)
        candidates = torch.cat([item_rows[:, None], drawn], 1)
        flat = candidates.flatten()
        vectors = self._learned_items(flat, tape).reshape(*candidates.shape, -1)
        biases = tape.rows(self.item_bias, flat).reshape(candidates.shape)
        scores = (vectors * queries[:, None, :]).sum(-1) + biases
        margins = scores[:, :1] - scores[:, 1:]
        weights = torch.from_numpy(batch.weights.astype(np.float32)).to(self.device)
        losses = -torch.nn.functional.logsigmoid(margins).mean(1)
        loss = (losses * weights).sum() / weights.sum() + self._extra_loss(item_rows, tape)
        cold = self._cold(user_rows)
        if cold.any():
            loss = loss + self._cold_loss(user_rows[cold], candidates[cold], scores[cold], tape) * (
                weights[cold].sum() / weights.sum()
            )
        if not torch.isfinite(loss):
            self.skipped_events += users.size
            learned[:] = False
            self.history.remove(users, items)
            return Step(float("nan"), learned, none)
        loss.backward()  # type: ignore[no-untyped-call]
        tape.step(self.optimizer)
        with torch.no_grad():
            for table in self._padded_tables():
                table.weight[PADDING] = 0.0
        self.user_views.index_add_(
            0, torch.from_numpy(users), torch.ones(users.size, dtype=torch.float64)
        )
        return Step(float(loss.detach()), learned, tape.rows_read(self.item_ids).cpu().numpy())

    def _cold_loss(self, user_rows: Tensor, candidates: Tensor, warm: Tensor, tape: Tape) -> Tensor:
        """BPR of new users' views on their warm scores (held fixed) plus their mean
        user-token embedding . each candidate's cold embedding; moves only those two."""
        tokens = self._features("user", user_rows, tape)
        cold = tape.rows(self.item_cold, candidates.flatten()).reshape(*candidates.shape, -1)
        scores = warm.detach() + (cold * tokens[:, None, :]).sum(-1)
        return -torch.nn.functional.logsigmoid(scores[:, :1] - scores[:, 1:]).mean()

    def _negatives(self, views: int) -> Tensor:
        """`negatives` draws per view among the items viewed so far, each with weight
        (its views)^`negative_power`: an item with features and no views is never pushed
        down before anyone saw it, and power > 0 takes popularity out of the scores."""
        weights = self.views**self.config.negative_power * (self.views > 0)
        picks = torch.multinomial(
            weights, views * self.config.negatives, replacement=True, generator=self.generator
        )
        return picks.reshape(views, self.config.negatives).to(self.device)

    def _padded_tables(self) -> list[AdamRows]:
        return [self.token_table, self.user_token_table]

    def _learned_items(self, item_rows: Tensor, tape: Tape) -> Tensor:
        """The item vectors BPR learns (the content model's blend is for publishing)."""
        return self._item(item_rows, tape)

    def _extra_loss(self, item_rows: Tensor, tape: Tape) -> Tensor:
        """A subclass's further loss on the batch's items (none here)."""
        return torch.zeros((), device=self.device)

    def _extra_state(self) -> dict[str, Tensor]:
        return {"item_views": self.views, "user_views": self.user_views}

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.views = tensors["item_views"].clone()
        self.user_views = tensors["user_views"].clone()
        self._rebuild_token_rows()


class ContentModel(FeaturesModel):
    """The features model, its item vectors blended with a text CNN's guess."""

    config: ContentConfig

    def __init__(self, config: ContentConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        init = torch.randn(TEXT_BUCKETS, config.word_dim, generator=self.generator) * 0.1
        init[PADDING] = 0.0
        self.words = AdamRows((config.word_dim,), init, self.device)
        self.layers["words"] = self.words
        self.conv = self.add_layer("conv", CONV_WIDTH * config.word_dim, config.channels)
        self.project = self.add_layer(
            "project", config.channels, config.dim - 1 - config.cold_width
        )
        self.word_rows = TokenRows()

    @property
    def name(self) -> str:
        return "content"

    def features_arrived(self, kind: Entity, raw: Id) -> int | None:
        """As the features model, and an item with text gets a row too."""
        row = super().features_arrived(kind, raw)
        if kind == "item":
            words = self.feature_rows.store.words([raw])[0]
            words = words[words != PADDING]
            if row is None and words.size:
                row = self.items.add(raw)
                self.sync_rows()
            if row is not None:
                self.word_rows.set(row, words)
        return row

    def sync_rows(self) -> None:
        before = self.word_rows.ids.shape[0]
        super().sync_rows()
        for row in range(before, len(self.items)):
            words = self.feature_rows.store.words([self.items.raw(row)])[0]
            self.word_rows.set(row, words[words != PADDING])
        self.word_rows.grow_to(len(self.items))

    def _rebuild_token_rows(self) -> None:
        self.word_rows = TokenRows()
        super()._rebuild_token_rows()

    def _padded_tables(self) -> list[AdamRows]:
        return [self.token_table, self.words]

    def _text_vectors(self, item_rows: Tensor, tape: Tape | None) -> Tensor:
        """CNN(text) per item: zeros for an item without text."""
        words = self.word_rows.ids[item_rows.cpu()].to(self.device)
        padded = torch.nn.functional.pad(words, (1, 1), value=PADDING)
        if tape is None:
            embedded = self.words.weight[padded]
            (conv_w, conv_b), (out_w, out_b) = (
                (self.conv[0].weight, self.conv[1].weight),
                (self.project[0].weight, self.project[1].weight),
            )
        else:
            embedded = tape.rows(self.words, padded.flatten()).reshape(
                *padded.shape, self.config.word_dim
            )
            conv_w, conv_b = tape.dense(self.conv[0]), tape.dense(self.conv[1])
            out_w, out_b = tape.dense(self.project[0]), tape.dense(self.project[1])
        windows = embedded.unfold(1, CONV_WIDTH, 1).transpose(2, 3).flatten(2)
        hidden = torch.relu(windows @ conv_w.T + conv_b)
        present = (words != PADDING).unsqueeze(-1)
        pooled = hidden.masked_fill(~present, 0.0).amax(1)
        has_text = present.any(1).to(pooled.dtype)
        result: Tensor = (pooled @ out_w.T + out_b) * has_text
        return result

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        learned = self._item(item_rows)
        guessed = self._text_vectors(item_rows, None)
        on_cpu = item_rows.cpu()
        has_text = (self.word_rows.ids[on_cpu] != PADDING).any(1).to(self.device)
        views = self.views[on_cpu].to(self.device, torch.float32)
        trust = torch.where(has_text, views / (views + self.config.content_views), 1.0)
        blended = trust[:, None] * learned + (1 - trust[:, None]) * guessed
        return self._published_items(blended, item_rows)

    def _extra_loss(self, item_rows: Tensor, tape: Tape) -> Tensor:
        """Mean squared distance of CNN(text) to the items' learned vectors (held fixed)."""
        distinct = torch.unique(item_rows)
        has_text = (self.word_rows.ids[distinct.cpu()] != PADDING).any(1).to(self.device)
        if not has_text.any():
            return torch.zeros((), device=self.device)
        distinct = distinct[has_text]
        with torch.no_grad():
            target = self._item(distinct)
        guessed = self._text_vectors(distinct, tape)
        return ((guessed - target) ** 2).sum(1).mean()
