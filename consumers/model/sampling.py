"""Negative sampling: uniform candidates (the kernel keeps the hardest one a user has not
watched)."""

from __future__ import annotations

import torch
from torch import Tensor


def uniform_negatives(positives: Tensor, n_items: int, generator: torch.Generator) -> Tensor:
    """One uniform item per entry of `positives` (any shape), never that positive itself.

    Draws from the `n_items - 1` other rows and shifts past the positive, so the
    distribution is exactly uniform over the rest. Needs `n_items >= 2`.
    """
    if n_items < 2:
        raise ValueError("negative sampling needs at least two items")
    draws = torch.randint(0, n_items - 1, positives.shape, generator=generator)
    return draws + (draws >= positives).to(draws.dtype)


def uniform_candidates(
    positives: Tensor, n_items: int, count: int, generator: torch.Generator
) -> Tensor:
    """`(len(positives), count)` independent uniform negatives per positive."""
    return uniform_negatives(positives.unsqueeze(1).expand(-1, count), n_items, generator)
