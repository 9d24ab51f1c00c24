"""Exact top-N over all items, with per-user exclusions."""

from __future__ import annotations

import numba as nb
import numpy as np
import torch
from torch import Tensor

# Scores per chunk of users (4 MiB), but never fewer than MIN_CHUNK_USERS users a chunk:
# each chunk reads the whole item table once, which dominates for large catalogues.
CHUNK_SCORES = 1 << 20
MIN_CHUNK_USERS = 64


@nb.njit(cache=True, nogil=True, inline="always")
def _place(best: np.ndarray, at: np.ndarray, size: int, score: float, column: int) -> None:
    """Put (score, column) at the heap's root and sift it down: the first `size` entries
    stay a heap with the worst on top (lower score; on a tie, the higher column)."""
    slot = 0
    while True:
        child = 2 * slot + 1
        if child >= size:
            break
        right = child + 1
        if right < size and (
            best[right] < best[child] or (best[right] == best[child] and at[right] > at[child])
        ):
            child = right
        if best[child] > score or (best[child] == score and at[child] < column):
            break
        best[slot], at[slot] = best[child], at[child]
        slot = child
    best[slot], at[slot] = score, column


@nb.njit(cache=True, nogil=True)
def _largest(scores: np.ndarray, k: int, values: np.ndarray, columns: np.ndarray) -> None:
    """Per row, its `k` largest scores and their columns, best first (ties: lower column).

    One pass per row against a heap of the k best so far, worst on top, so most scores
    cost one comparison and an entry log(k) steps (at 20k columns: twice as fast as
    torch.topk at k 20, 1.4x at k 256).
    """
    best = np.empty(k, dtype=values.dtype)
    at = np.empty(k, dtype=columns.dtype)
    for r in range(scores.shape[0]):
        row = scores[r]
        best[:] = -np.inf
        at[:] = -1
        for column in range(row.shape[0]):
            score = row[column]
            if score > best[0]:  # a tie with the worst kept loses: its column is higher
                _place(best, at, k, score, column)
        for size in range(k - 1, -1, -1):  # heap sort: the worst goes last
            score, column = best[size], at[size]
            values[r, size], columns[r, size] = best[0], at[0]
            _place(best, at, size, score, column)


def largest(scores: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """`torch.topk(scores, k, dim=1)` for a 2-d float32 CPU tensor; slots with no
    finite candidate hold -inf (their column is then -1)."""
    k = min(k, scores.shape[1])
    values = np.empty((scores.shape[0], k), dtype=np.float32)
    columns = np.empty((scores.shape[0], k), dtype=np.int64)
    if k > 0:
        _largest(np.ascontiguousarray(scores.numpy()), k, values, columns)
    return torch.from_numpy(values), torch.from_numpy(columns)


def top_n(
    user_vectors: Tensor,
    item_vectors: Tensor,
    n: int,
    exclude_rows: Tensor | None = None,
    exclude_items: Tensor | None = None,
    absent: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Scores and item indices of the `n` best items per user, best first.

    `exclude_rows[j]` (a row of the batch, ascending) may not be recommended
    `exclude_items[j]`; `absent` (bool per item) marks items no one may get.
    Excluded or missing slots come back with score -inf and index -1, so callers
    drop entries whose score is not finite. Users go through in chunks
    that share one score buffer (fresh buffers of tens of megabytes per batch cost
    more in page faults than the products).
    """
    users, items = user_vectors.shape[0], item_vectors.shape[0]
    k = min(n, items)
    values = torch.empty(users, k)
    columns = torch.empty(users, k, dtype=torch.long)
    chunk = max(1, min(users, max(MIN_CHUNK_USERS, CHUNK_SCORES // max(items, 1))))
    buffer = torch.empty(chunk, items)
    bounds = (
        torch.searchsorted(exclude_rows, torch.arange(0, users + chunk, chunk))
        if exclude_rows is not None and exclude_items is not None
        else None
    )
    for number, start in enumerate(range(0, users, chunk)):
        stop = min(start + chunk, users)
        scores = torch.matmul(user_vectors[start:stop], item_vectors.T, out=buffer[: stop - start])
        if absent is not None:
            scores.masked_fill_(absent, float("-inf"))
        if bounds is not None and exclude_rows is not None and exclude_items is not None:
            first, last = int(bounds[number]), int(bounds[number + 1])
            scores[exclude_rows[first:last] - start, exclude_items[first:last]] = float("-inf")
        values[start:stop], columns[start:stop] = largest(scores, k)
    return values, columns
