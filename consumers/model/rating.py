"""The rating model: biased matrix factorisation regressed on explicit ratings.

Predicted rating = global mean + user bias + item bias + user factors . item factors.
Published vectors fold the biases in so that nearest-neighbour search ranks by the
predicted rating: a user's vector is (factors, 1), an item's (factors, bias), so their
dot product is the prediction less the terms that are the same for every item of that
user. Views without a rating join the history (and are never recommended again) but
teach nothing. Item factors come from `_item_factors`, the place where item features
join in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from consumers.model.base import Batch, Floats, Rows, Step
from consumers.model.config import SearchConfig
from consumers.model.neural import NeuralConfig, NeuralModel, Tape


@dataclass(frozen=True, slots=True)
class RatingConfig(NeuralConfig):
    """Biased MF: `dim - 1` factors per user and item (the last published coordinate
    carries the item bias); `l2` decays the rows a step reads."""

    # chosen by prequential RMSE on the first 80% of ML-100K in micro-batches of 512
    learning_rate: float = 0.05
    l2: float = 0.0
    init_std: float = 0.01
    epochs: int = 1  # Adam steps per micro-batch
    item_shrinkage: float = 25.0
    user_shrinkage: float = 10.0


class BiasedRating(NeuralModel):
    """Invariant: `rating_sum / rating_count` is the mean of every rating learned."""

    config: RatingConfig

    def __init__(self, config: RatingConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        factors = config.dim - 1
        self.user_factors = self.add_table("user", "user", factors, config.init_std)
        self.item_factors = self.add_table("item", "item", factors, config.init_std)
        # (sum of residuals, count) per row: see `_biases`
        self.user_residuals = self.add_table("user_residuals", "user", 2, 0.0)
        self.item_ratings = self.add_table("item_ratings", "item", 2, 0.0)
        self.ratings = torch.zeros(2, dtype=torch.float64)  # sum, count

    @property
    def name(self) -> str:
        return "rating"

    @property
    def mean_rating(self) -> float:
        total, count = self.ratings.tolist()
        return total / count if count else 0.0

    def _item_bias(self, item_rows: Tensor) -> Tensor:
        """Each item's mean rating less the global mean, shrunk toward 0 by
        `item_shrinkage` ratings' worth of the global mean."""
        total, count = self.item_ratings.weight[item_rows].unbind(1)
        return (total - count * self.mean_rating) / (count + self.config.item_shrinkage)

    def _user_bias(self, user_rows: Tensor) -> Tensor:
        """Each user's mean residual after the global mean and the items' biases (as they
        stood when each rating was learned), shrunk by `user_shrinkage`."""
        total, count = self.user_residuals.weight[user_rows].unbind(1)
        return (total - count * self.mean_rating) / (count + self.config.user_shrinkage)

    def _item_factors(self, item_factors: Tensor, item_rows: Tensor) -> Tensor:
        """Each item's factors as the dot product sees them (item features add here)."""
        return item_factors

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        ones = torch.ones(user_rows.shape[0], 1, device=self.device)
        return torch.cat([self.user_factors.weight[user_rows], ones], 1)

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        factors = self._item_factors(self.item_factors.weight[item_rows], item_rows)
        return torch.cat([factors, self._item_bias(item_rows).unsqueeze(1)], 1)

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Predicted ratings of every user for every item: [users, items]."""
        self.sync_rows()
        with torch.no_grad():
            users = self._device_rows(user_rows)
            dots = self._user_vectors(users) @ self._item_vectors(self._device_rows(item_rows)).T
            predicted = dots + self._user_bias(users).unsqueeze(1) + self.mean_rating
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
            predicted[known_user] += self._user_bias(users[known_user])
            predicted[known_item] += self._item_bias(items[known_item])
            both = known_user & known_item
            item_factors = self._item_factors(self.item_factors.weight[items[both]], items[both])
            predicted[both] += (self.user_factors.weight[users[both]] * item_factors).sum(1)
        values: Floats = predicted.cpu().numpy()
        return values

    def learn(self, batch: Batch) -> Step:
        """`epochs` Adam steps on the weighted squared error of the batch's rated views;
        the errors reported are those of the model from before the batch."""
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
        ones = torch.ones_like(target)
        self.item_ratings.weight.index_add_(0, item_rows, torch.stack([target, ones], 1))
        residuals = target - self._item_bias(item_rows)
        self.user_residuals.weight.index_add_(0, user_rows, torch.stack([residuals, ones], 1))
        residuals = residuals - self._user_bias(user_rows) - self.mean_rating
        for _ in range(self.config.epochs):
            tape = Tape()
            item_factors = self._item_factors(tape.rows(self.item_factors, item_rows), item_rows)
            predicted = (tape.rows(self.user_factors, user_rows) * item_factors).sum(1)
            loss = (weights * (predicted - residuals) ** 2).sum() / weights.sum()
            loss.backward()  # type: ignore[no-untyped-call]
            tape.step(self.optimizer)
        return Step(float(np.average(errors**2, weights=batch.weights[rated])), learned, none, errors)

    def _extra_state(self) -> dict[str, Tensor]:
        return {"ratings": self.ratings}

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.ratings = tensors["ratings"].clone()
