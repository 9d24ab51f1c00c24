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


class BiasedRating(NeuralModel):
    """Invariant: `rating_sum / rating_count` is the mean of every rating learned."""

    config: RatingConfig

    def __init__(self, config: RatingConfig, search: SearchConfig | None = None) -> None:
        super().__init__(config, search)
        factors = config.dim - 1
        self.user_factors = self.add_table("user", "user", factors, config.init_std)
        self.item_factors = self.add_table("item", "item", factors, config.init_std)
        self.user_bias = self.add_table("user_bias", "user", 1, 0.0)
        self.item_bias = self.add_table("item_bias", "item", 1, 0.0)
        self.ratings = torch.zeros(2, dtype=torch.float64)  # sum, count

    @property
    def name(self) -> str:
        return "rating"

    @property
    def mean_rating(self) -> float:
        total, count = self.ratings.tolist()
        return total / count if count else 0.0

    def _item_factors(self, item_factors: Tensor, item_rows: Tensor) -> Tensor:
        """Each item's factors as the dot product sees them (item features add here)."""
        return item_factors

    def _user_vectors(self, user_rows: Tensor) -> Tensor:
        ones = torch.ones(user_rows.shape[0], 1, device=self.device)
        return torch.cat([self.user_factors.weight[user_rows], ones], 1)

    def _item_vectors(self, item_rows: Tensor) -> Tensor:
        factors = self._item_factors(self.item_factors.weight[item_rows], item_rows)
        return torch.cat([factors, self.item_bias.weight[item_rows]], 1)

    def score(self, user_rows: Rows, item_rows: Rows) -> Floats:
        """Predicted ratings of every user for every item: [users, items]."""
        self.sync_rows()
        with torch.no_grad():
            users = self._device_rows(user_rows)
            dots = self._user_vectors(users) @ self._item_vectors(self._device_rows(item_rows)).T
            predicted = dots + self.user_bias.weight[users] + self.mean_rating
        scores: Floats = predicted.cpu().numpy()
        return scores

    def learn(self, batch: Batch) -> Step:
        """One Adam step on the squared error of the batch's rated views."""
        users, items, learned = self._begin(batch)
        rated = np.isfinite(batch.ratings)
        none = np.zeros(0, dtype=np.int64)
        if not rated.any():
            return Step(float("nan"), learned, none)
        ratings = batch.ratings[rated].astype(np.float64)
        user_rows, item_rows = self._device_rows(users[rated]), self._device_rows(items[rated])
        tape = Tape()
        item_factors = self._item_factors(tape.rows(self.item_factors, item_rows), item_rows)
        predicted = (
            (tape.rows(self.user_factors, user_rows) * item_factors).sum(1)
            + tape.rows(self.user_bias, user_rows)[:, 0]
            + tape.rows(self.item_bias, item_rows)[:, 0]
            + self.mean_rating
        )
        target = torch.from_numpy(ratings.astype(np.float32)).to(self.device)
        weights = torch.from_numpy(batch.weights[rated].astype(np.float32)).to(self.device)
        loss = (weights * (predicted - target) ** 2).sum() / weights.sum()
        if not torch.isfinite(loss):
            self.skipped_events += int(rated.sum())
            learned[rated] = False
            self.history.remove(users[rated], items[rated])
            return Step(float("nan"), learned, none)
        loss.backward()  # type: ignore[no-untyped-call]
        errors = (predicted - target).detach().cpu().numpy()
        tape.step(self.optimizer)
        self.ratings += torch.tensor([ratings.sum(), float(ratings.size)], dtype=torch.float64)
        return Step(float(loss.detach()), learned, none, errors)

    def _extra_state(self) -> dict[str, Tensor]:
        return {"ratings": self.ratings}

    def _load_extra_state(self, tensors: dict[str, Tensor]) -> None:
        self.ratings = tensors["ratings"].clone()
