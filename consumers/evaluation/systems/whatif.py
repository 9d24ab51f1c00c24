"""What-if variants of the learner, for diagnostics only: never used by the service.

`use_popularity_negatives` swaps the learner's uniform negative sampler for one that
draws items in proportion to `views ** 0.75` (word2vec's unigram smoothing), counted
from the views the learner has taken in so far.

`use_item_bias` pins the first user column to 1 after every update, so the first item
column becomes a learned item bias (as in implicit's and LightFM's models).
"""

from __future__ import annotations

import torch
from torch import Tensor

from consumers.model.learner import MatrixFactorization
from consumers.pipeline import OnlineRecommender

SMOOTHING = 0.75


class _PopularityNegatives:
    def __init__(self, model: MatrixFactorization) -> None:
        self.model = model
        self.counts = torch.zeros(0)

    def sample(self, item_rows: Tensor) -> Tensor | None:
        model = self.model
        model.sync_rows()
        n = model.item_table.rows
        if n < 2:
            return None
        if self.counts.numel() < n:
            self.counts = torch.cat((self.counts, torch.zeros(n - self.counts.numel())))
        self.counts += torch.bincount(item_rows, minlength=n)[:n].to(self.counts.dtype)
        weights = (self.counts + 1.0).pow(SMOOTHING)
        drawn = torch.multinomial(weights, item_rows.numel(), True, generator=model.generator)
        clash = drawn == item_rows
        if clash.any():  # a positive drawn as its own negative: shift to a neighbour row
            drawn[clash] = (drawn[clash] + 1) % n
        return drawn


def use_popularity_negatives(recommender: OnlineRecommender) -> None:
    sampler = _PopularityNegatives(recommender.model)
    recommender.model.sample_negatives = sampler.sample  # type: ignore[method-assign]


def use_item_bias(recommender: OnlineRecommender) -> None:
    model = recommender.model
    learn = model.learn

    def learn_with_bias(
        user_rows: Tensor, item_rows: Tensor, negatives: Tensor | None, weights: Tensor
    ) -> float:
        model.sync_rows()
        model.user_table.weight[:, 0] = 1.0
        loss = learn(user_rows, item_rows, negatives, weights)
        model.user_table.weight[:, 0] = 1.0
        return loss

    model.learn = learn_with_bias  # type: ignore[method-assign]
