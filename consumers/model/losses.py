"""Pairwise ranking losses as pure functions of the score difference.

Each returns the per-example loss and its derivative with respect to
`diff = score(user, positive) - score(user, negative)`, so the learner applies
analytic gradients to the touched rows without autograd.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

PairwiseLoss = Callable[[Tensor], tuple[Tensor, Tensor]]


def bpr_loss(diff: Tensor) -> tuple[Tensor, Tensor]:
    """BPR: -log sigmoid(diff); d/d diff = -sigmoid(-diff)."""
    return torch.nn.functional.softplus(-diff), -torch.sigmoid(-diff)


def triplet_loss(diff: Tensor, margin: float = 1.0) -> tuple[Tensor, Tensor]:
    """Margin triplet: max(0, margin - diff); d/d diff = -1 inside the margin."""
    violation = margin - diff
    return violation.clamp_min(0.0), -(violation > 0).to(diff.dtype)
