"""Sparse user x item matrices of a stream prefix (for the batch peers)."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix

from benchmarks.evaluation.stream import EncodedStream


def interactions(
    stream: EncodedStream, start: int, stop: int, shape: tuple[int, int] | None = None
) -> csr_matrix:
    """Binary matrix of events `[start, stop)` (a repeated view counts once).

    Default shape: the users and items known before `stop`.
    """
    if shape is None:
        shape = (stream.users_before(stop), stream.items_before(stop))
    users, items = stream.users[start:stop], stream.items[start:stop]
    matrix = coo_matrix((np.ones(users.size, dtype=np.float32), (users, items)), shape=shape)
    binary = matrix.tocsr()
    binary.sum_duplicates()
    binary.data[:] = 1.0
    return binary
