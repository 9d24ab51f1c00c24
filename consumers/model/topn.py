"""Exact top-N over all items, with per-user exclusions."""

from __future__ import annotations

import torch
from torch import Tensor


def top_n(
    user_vectors: Tensor,
    item_vectors: Tensor,
    n: int,
    exclude_rows: Tensor | None = None,
    exclude_items: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Scores and item indices of the `n` best items per user, best first.

    `exclude_rows[j]` (a row of the batch) may not be recommended
    `exclude_items[j]`; excluded or missing slots come back with score -inf,
    so callers drop entries whose score is not finite.
    """
    scores = user_vectors @ item_vectors.T
    if exclude_rows is not None and exclude_items is not None and exclude_rows.numel():
        scores[exclude_rows, exclude_items] = float("-inf")
    k = min(n, item_vectors.shape[0])
    return torch.topk(scores, k, dim=1)
