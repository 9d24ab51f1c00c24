"""MovieLens-100K's side information as LightFM feature matrices, rows in stream order.

Each row holds the entity's own id feature plus its tokens (items: genres and release
decade; users: age decade, gender, occupation), every row summing to 1 (LightFM's own
`Dataset` normalisation), so a user or item with no events still has a vector from its
tokens (cold start).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from scipy.sparse import csr_matrix

from benchmarks.evaluation.stream import EncodedStream
from streamer.events import Id, id_text


def item_tokens(features: dict[str, Any]) -> list[str]:
    tokens = [f"genre={genre}" for genre in features.get("genre") or []]
    if features.get("year") is not None:
        tokens.append(f"decade={int(features['year']) // 10 * 10}")
    return tokens


def user_tokens(features: dict[str, Any]) -> list[str]:
    tokens = [f"gender={features.get('gender')}", f"occupation={features.get('occupation')}"]
    if features.get("age") is not None:
        tokens.append(f"age={int(features['age']) // 10 * 10}")
    return tokens


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


def movielens_feature_matrices(stream: EncodedStream) -> tuple[csr_matrix, csr_matrix]:
    """(user features, item features) of a MovieLens-100K stream."""
    from streamer.datasets.cache import fetch_ml100k
    from streamer.datasets.movielens import read_item_features, read_user_features

    folder = fetch_ml100k()
    users, items = read_user_features(folder), read_item_features(folder)
    user_rows = (user_tokens(users.get(id_text(raw), {})) for raw in stream.user_ids)
    item_rows = (item_tokens(items.get(id_text(raw), {})) for raw in stream.item_ids)
    return feature_matrix(stream.user_ids, user_rows), feature_matrix(stream.item_ids, item_rows)
