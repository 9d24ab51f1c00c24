"""A stream's side information as LightFM feature matrices, rows in stream order.

The tokens are the ones our feature models embed (`consumers.model.features.
feature_tokens` over the stream's feature records: MovieLens-100K's genres and year
decade; age decade, gender, occupation, zip region), so LightFM and our models see the
same information. Each row holds the entity's own id feature plus its tokens, every
row summing to 1 (LightFM's own `Dataset` normalisation), so a user or item with no
events still has a vector from its tokens (cold start).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy.sparse import csr_matrix

from benchmarks.evaluation.stream import EncodedStream
from consumers.model.features import feature_tokens
from streamer.events import EntityKind, Id, id_text


def feature_matrix(ids: Sequence[Id], tokens_of: Iterable[list[str]]) -> csr_matrix:
    """Rows: `ids` in order; columns: one per id, then one per distinct token."""
    vocabulary: dict[str, int] = {}
    rows, cols = [], []
    for row, tokens in enumerate(tokens_of):
        rows.append(row)
        cols.append(row)
        for token in tokens:
            rows.append(row)
            cols.append(len(ids) + vocabulary.setdefault(token, len(vocabulary)))
    data = np.ones(len(rows), dtype=np.float32)
    matrix = csr_matrix((data, (rows, cols)), shape=(len(ids), len(ids) + len(vocabulary)))
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    return csr_matrix(matrix.multiply(1.0 / sums[:, None]))


def stream_feature_matrices(stream: EncodedStream) -> tuple[csr_matrix, csr_matrix]:
    """(user features, item features) from the stream's feature records (an entity
    without a record: its id feature alone)."""
    tokens: dict[EntityKind, dict[str, list[str]]] = {"user": {}, "item": {}}
    for record in stream.features:
        tokens[record.kind][id_text(record.id)] = feature_tokens(record.features)
    user_rows = (tokens["user"].get(id_text(raw), []) for raw in stream.user_ids)
    item_rows = (tokens["item"].get(id_text(raw), []) for raw in stream.item_ids)
    return feature_matrix(stream.user_ids, user_rows), feature_matrix(stream.item_ids, item_rows)
