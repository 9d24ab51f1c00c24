"""The batch encoders write the Redis contract's bytes exactly as the per-key encoders."""

from __future__ import annotations

import numpy as np

from consumers.sinks.schema import (
    BatchEncoder,
    Keys,
    Publication,
    RankedList,
    RankedRows,
    Stamp,
    VectorRows,
    decode_ranked,
    encode_ranked,
    encode_vector,
    encode_vectors,
    string_writes,
)
from streamer.events import Id

IDS: list[Id] = ["77", 7, "ünïcødé-☃", 'quote"back\\slash', 0, "", -3, "x" * 128]
STAMP = Stamp("mf-bpr", 29, 1795723725.9)
INF = -np.inf


def one_by_one(scores: np.ndarray, items: np.ndarray, stages: tuple[str, ...] = ()) -> list[bytes]:
    """What the publisher wrote before: a RankedList per row, encoded alone."""
    out = []
    for row_scores, row_items in zip(scores, items, strict=True):
        n = int(np.isfinite(row_scores).sum())
        ranked = RankedList([IDS[row] for row in row_items[:n].tolist()], row_scores[:n], stages)
        out.append(encode_ranked(ranked, *STAMP))
    return out


def test_lists_are_byte_for_byte_the_per_list_encoding() -> None:
    rng = np.random.default_rng(0)
    scores = -np.sort(-rng.standard_normal((50, 6)).astype(np.float32), axis=1)
    scores[3, 2:] = INF  # a list cut short by excluded items
    scores[4, :] = INF  # an empty list
    scores[5, 0] = np.float32(1e-40)  # subnormal, and extremes orjson writes in exponent form
    scores[6, :2] = [np.float32(3.4e38), np.float32(-0.0)]
    items = rng.integers(0, len(IDS), scores.shape)
    items[4, :] = -1  # the rows of empty slots mean nothing
    encoder = BatchEncoder(Keys(), lambda rows: [IDS[row] for row in rows])
    encoded = encoder.lists(scores, items, STAMP)
    assert encoded == one_by_one(scores, items)
    again = encoder.lists(scores, items, STAMP)  # from the cached fragments
    assert again == encoded
    assert decode_ranked(encoded[4]) == {
        "items": [],
        "scores": [],
        "model": "mf-bpr",
        "version": 29,
        "updated_at": 1795723725.9,
    }
    assert decode_ranked(encoded[3])["items"] == [IDS[row] for row in items[3, :2].tolist()]


def test_lists_of_several_stages_say_so_as_the_per_list_encoding_does() -> None:
    rng = np.random.default_rng(1)
    scores = -np.sort(-rng.standard_normal((4, 3)).astype(np.float32), axis=1)
    items = rng.integers(0, len(IDS), scores.shape)
    stages = ("retrieve:mf", "rank:mlp")
    encoded = BatchEncoder(Keys(), lambda rows: [IDS[row] for row in rows]).lists(
        scores, items, STAMP, stages
    )
    assert encoded == one_by_one(scores, items, stages)
    assert decode_ranked(encoded[0])["stages"] == list(stages)


def test_ids_are_fetched_once_per_item_row() -> None:
    asked: list[int] = []

    def ids(rows: list[int]) -> list[Id]:
        asked.extend(rows)
        return [IDS[row] for row in rows]

    encoder = BatchEncoder(Keys(), ids)
    scores = np.ones((2, 3), np.float32)
    encoder.lists(scores, np.array([[5, 1, 2], [2, 5, 1]]), STAMP)
    encoder.lists(scores, np.array([[1, 2, 7], [7, 5, 1]]), STAMP)
    assert sorted(asked) == [1, 2, 5, 7]


def test_no_lists_and_no_slots() -> None:
    encoder = BatchEncoder(Keys(), lambda rows: [IDS[row] for row in rows])
    assert encoder.lists(np.empty((0, 5), np.float32), np.empty((0, 5), np.int64), STAMP) == []
    assert (
        encoder.lists(np.empty((2, 0), np.float32), np.empty((2, 0), np.int64), STAMP)
        == [encode_ranked(RankedList([], np.empty(0, np.float32)), *STAMP)] * 2
    )


def test_vectors_are_the_per_key_encoding() -> None:
    vectors = np.random.default_rng(1).standard_normal((5, 3)).astype(np.float32)
    assert encode_vectors(vectors) == [encode_vector(vector) for vector in vectors]
    assert encode_vectors(vectors[::2]) == [encode_vector(vector) for vector in vectors[::2]]
    assert encode_vectors(np.empty((0, 3), np.float32)) == []


def test_a_batch_is_the_publication_of_the_same_lists_and_vectors() -> None:
    rng = np.random.default_rng(2)
    users: list[Id] = ["ü1", 42, "u 3"]
    scores = -np.sort(-rng.standard_normal((3, 4)).astype(np.float32), axis=1)
    scores[1, 3] = INF
    items = rng.integers(0, len(IDS), (3, 4))
    user_vectors = rng.standard_normal((3, 2)).astype(np.float32)
    touched = [IDS[0], IDS[2]]
    item_vectors = rng.standard_normal((2, 2)).astype(np.float32)

    def ranked(row: int) -> RankedList:
        n = int(np.isfinite(scores[row]).sum())
        return RankedList([IDS[i] for i in items[row, :n].tolist()], scores[row, :n])

    keys = Keys("p:")
    encoder = BatchEncoder(keys, lambda rows: [IDS[row] for row in rows])
    batch = encoder.strings(
        STAMP,
        RankedRows(users, scores, items),
        VectorRows(users, user_vectors),
        VectorRows(touched, item_vectors),
        RankedRows(touched[:1], scores[:1], items[:1]),
    )
    readable = Publication(
        *STAMP,
        user_tops={user: ranked(row) for row, user in enumerate(users)},
        user_vectors=dict(zip(users, user_vectors, strict=True)),
        item_vectors=dict(zip(touched, item_vectors, strict=True)),
        item_similar={touched[0]: ranked(0)},
    )
    assert list(zip(batch.keys, batch.values, strict=True)) == list(
        string_writes(readable, keys).items()
    )
