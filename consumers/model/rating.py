"""The rating model: biased matrix factorisation regressed on explicit ratings.

Predicted rating = global mean + user bias + item bias + user factors . item factors.
Published vectors fold the biases in so that nearest-neighbour search ranks by the
predicted rating: a user's vector is (factors, 1), an item's (factors, bias), so their
dot product is the prediction less the terms that are the same for every item of that
user. Views without a rating join the history (and are never recommended again) but
teach nothing.

The biases are not stepped by the optimizer but kept as running totals, which is
what lets them keep up when a user's whole burst of ratings lands in one micro-batch
(one Adam step moves a row by about the learning rate, however many ratings it saw):
an item's bias is its mean rating less the global mean, a user's the mean of their
ratings less the global mean and each item's bias, each shrunk toward a prior by
`item_shrinkage` / `user_shrinkage` ratings' worth. The prior is the mean of the same
shrunk means over the entity's feature tokens (consumers/model/features.py: age,
gender, occupation; genres), 0 without features, so a user first seen in this batch
starts from what users like them rated. Factors are learned by Adam on what the
biases leave. Item factors come from `_item_factors`, the place where item features
could join in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Floats, Rows, Step
from consumers.model.config import SearchConfig
from consumers.model.features import PADDING, FeatureStore
from consumers.model.neural import Entity, EntityTable, NeuralConfig, NeuralModel, Tape
from consumers.model.token_rows import FeatureRows
from streamer.events import Id


@dataclass(frozen=True, slots=True)
class RatingConfig(NeuralConfig):
    """Biased MF: `dim - 1` factors per user and item (the last published coordinate
    carries the item bias); `l2` decays the rows a step reads."""

    # chosen by prequential RMSE on the first 80% of ML-100K in micro-batches of 512, each
    # inside its grid (benchmarks/rating_grid.py, results/rating_grid.json)
    learning_rate: float = 0.02
    l2: float = 0.0
    init_std: float = 0.01
    item_shrinkage: float = 3.0  # ratings' worth of the prior in an item's bias
    user_shrinkage: float = 25.0
    feature_shrinkage: float = 25.0

    def __post_init__(self) -> None:
        NeuralConfig.__post_init__(self)
        if min(self.item_shrinkage, self.user_shrinkage, self.feature_shrinkage) <= 0:
            raise ValueError("item_shrinkage, user_shrinkage and feature_shrinkage must be > 0")


class BiasedRating(NeuralModel):
    """Invariant: `rating_sum / rating_count` is the mean of every rating learned."""

    config: RatingConfig

    def __init__(self, config: RatingConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        factors = config.dim - 1
        self.user_factors = self.add_table("user", "user", factors, config.init_std)
        self.item_factors = self.add_table("item", "item", factors, config.init_std)
        # (sum, count) of what each row's bias is the shrunk mean of: see `_bias`
        self.user_residuals = self.add_table("user_residuals", "user", 2, 0.0)
        self.item_ratings = self.add_table("item_ratings", "item", 2, 0.0)
        self.ratings = torch.zeros(2, dtype=torch.float64)  # sum, count
        self.feature_rows = FeatureRows()
        self.token_totals = torch.zeros(1, 2, dtype=torch.float64)  # per feature token

    @property
    def name(self) -> str:
        return "rating"

    @property
    def mean_rating(self) -> float:
        total, count = self.ratings.tolist()
        return total / count if count else 0.0

    def read_features(self, store: FeatureStore) -> None:
        self.feature_rows.read(store)
        self.sync_rows()

    def features_arrived(self, kind: Entity, raw: Id) -> int | None:
        """Give an entity with features a row, so that its bias starts from them."""
        registry = self.users if kind == "user" else self.items
        return self.feature_rows.arrived(kind, raw, registry, self.sync_rows)

    def sync_rows(self) -> None:
        super().sync_rows()
        self.feature_rows.follow("user", self.users)
        self.feature_rows.follow("item", self.items)
        grown = len(self.feature_rows.store.vocabulary) - self.token_totals.shape[0]
        if grown > 0:
            fresh = torch.zeros(grown, 2, dtype=torch.float64)
            self.token_totals = torch.cat([self.token_totals, fresh])

    def _bias(self, kind: Entity, rows: Tensor) -> Tensor:
        """The shrunk mean of each row's (sum, count), less the global mean, shrunk toward
        its features' prior: the mean of its tokens' shrunk means (0 without features)."""
        table, shrinkage = (
            (self.user_residuals, self.config.user_shrinkage)
            if kind == "user"
            else (self.item_ratings, self.config.item_shrinkage)
        )
        tokens = self.feature_rows.ids(kind, rows)
        total, count = self.token_totals[tokens].unbind(2)
        means = (total - count * self.mean_rating) / (count + self.config.feature_shrinkage)
        present = tokens != PADDING
        prior = (means * present).sum(1) / present.sum(1).clamp(min=1)
        total, count = table.weight[rows].double().unbind(1)
        bias = (total - count * self.mean_rating + shrinkage * prior.to(self.device)) / (
            count + shrinkage
        )
        return bias.float()

    def _learn_biases(
        self, user_rows: Tensor, item_rows: Tensor, target: Tensor, weights: Tensor
    ) -> Tensor:
        """Add the weighted ratings to the items' and their tokens' totals, then the
        residuals after the items' biases to the users' and theirs; those residuals."""
        self._add_totals("item", self.item_ratings, item_rows, target, weights)
        residuals = target - self._bias("item", item_rows)
        self._add_totals("user", self.user_residuals, user_rows, residuals, weights)
        return residuals

    def _add_totals(
        self, kind: Entity, table: EntityTable, rows: Tensor, values: Tensor, weights: Tensor
    ) -> None:
        """(weight * value, weight) added to the rows' totals and their tokens'."""
        totals = torch.stack([values * weights, weights], 1)
        table.weight.index_add_(0, rows, totals)
        tokens = self.feature_rows.ids(kind, rows)
        present = tokens != PADDING
        per_token = totals.cpu().double().unsqueeze(1).expand(-1, tokens.shape[1], -1)
        self.token_totals.index_add_(0, tokens[present], per_token[present])

    def _item_factors(self, item_factors: Tensor, item_rows: Tensor) -> Tensor:
        """Each item's factors as the dot product sees them (item features add here)."""
        return item_factors

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        ones = torch.ones(user_rows.shape[0], 1, device=self.device)
        return torch.cat([self.user_factors.weight[user_rows], ones], 1)

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        factors = self._item_factors(self.item_factors.weight[item_rows], item_rows)
        return torch.cat([factors, self._bias("item", item_rows).unsqueeze(1)], 1)

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Predicted ratings of every user for every item: [users, items]."""
        self.sync_rows()
        with torch.no_grad():
            users = self._device_rows(user_rows)
            dots = self._user_vectors(users) @ self._item_vectors(self._device_rows(item_rows)).T
            predicted = dots + self._bias("user", users).unsqueeze(1) + self.mean_rating
        scores: Floats = predicted.cpu().numpy()
        return scores

    def predict(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Predicted rating of each (user row, item row) pair; a row of -1 is an id not
        seen yet, which adds neither bias nor factors (the global mean alone for two)."""
        self.sync_rows()
        with torch.no_grad():
            users, items = self._device_rows(user_rows), self._device_rows(item_rows)
            predicted = torch.full(users.shape, self.mean_rating, device=self.device)
            known_user, known_item = users >= 0, items >= 0
            predicted[known_user] += self._bias("user", users[known_user])
            predicted[known_item] += self._bias("item", items[known_item])
            both = known_user & known_item
            item_factors = self._item_factors(self.item_factors.weight[items[both]], items[both])
            predicted[both] += (self.user_factors.weight[users[both]] * item_factors).sum(1)
        values: Floats = predicted.cpu().numpy()
        return values

    def learn(self, batch: Batch) -> Step:
        """Add the batch's rated views to the bias totals, then one Adam step of the
        factors on the weighted squared error of what the biases leave; the errors
        reported are those of the model from before the batch."""
        users, items, learned = self._begin(batch)
        rated = np.isfinite(batch.ratings)
        none = np.zeros(0, dtype=np.int64)
        if not rated.any():
            return Step(float("nan"), learned, none)
        ratings = batch.ratings[rated].astype(np.float64)
        user_rows, item_rows = self._device_rows(users[rated]), self._device_rows(items[rated])
        target = torch.from_numpy(ratings.astype(np.float32)).to(self.device)
        weights = torch.from_numpy(batch.weights[rated].astype(np.float32)).to(self.device)
        errors = self.predict(users[rated], items[rated]) - ratings.astype(np.float32)
        if not (np.isfinite(errors).all() and np.isfinite(batch.weights[rated]).all()):
            self.skipped_events += int(rated.sum())
            learned[rated] = False
            self.history.remove(users[rated], items[rated])
            return Step(float("nan"), learned, none)
        self.ratings += torch.tensor([ratings.sum(), float(ratings.size)], dtype=torch.float64)
        residuals = self._learn_biases(user_rows, item_rows, target, weights)
        residuals = residuals - self._bias("user", user_rows) - self.mean_rating
        tape = Tape()
        item_factors = self._item_factors(tape.rows(self.item_factors, item_rows), item_rows)
        predicted = (tape.rows(self.user_factors, user_rows) * item_factors).sum(1)
        loss = (weights * (predicted - residuals) ** 2).sum() / weights.sum()
        loss.backward()  # type: ignore[no-untyped-call]
        tape.step(self.optimizer)
        return Step(
            float(np.average(errors**2, weights=batch.weights[rated])), learned, none, errors
        )

    def _extra_state(self) -> dict[str, Tensor]:
        return {"ratings": self.ratings, "token_totals": self.token_totals}

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.ratings = tensors["ratings"].clone()
        self.token_totals = tensors["token_totals"].clone()
        self.feature_rows.reset()  # the registry was restored: every row read again
        self.sync_rows()
