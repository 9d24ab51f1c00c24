"""The Redis contract (README, Contracts: Redis keys): key names and encodings, in one place."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import orjson

from streamer.events import Id, id_text

DEFAULT_PREFIX = "rs:"


@dataclass(frozen=True, slots=True)
class Keys:
    """Key names under a deployment's (or model variant's) prefix."""

    prefix: str = DEFAULT_PREFIX

    def user_top(self, user: Id) -> str:
        return f"{self.prefix}user:{id_text(user)}:top"

    def user_vector(self, user: Id) -> str:
        return f"{self.prefix}user:{id_text(user)}:vec"

    def item_vector(self, item: Id) -> str:
        return f"{self.prefix}item:{id_text(item)}:vec"

    def item_similar(self, item: Id) -> str:
        return f"{self.prefix}item:{id_text(item)}:similar"

    @property
    def popular(self) -> str:
        return f"{self.prefix}popular"

    @property
    def meta(self) -> str:
        return f"{self.prefix}meta"

    @property
    def owner(self) -> str:
        """The lease of the one model publishing under this prefix (sinks/lease.py)."""
        return f"{self.prefix}owner"


@dataclass(frozen=True, slots=True)
class RankedList:
    """A top-N list as frontends read it: ids as producers sent them, best first."""

    items: list[Id]
    scores: list[float] | np.ndarray
    stages: tuple[str, ...] = ()  # the stages that made it, when more than one model did


@dataclass(frozen=True, slots=True)
class EncodedStrings:
    """STRING writes already encoded (by `BatchEncoder`): `values[i]` is the value of
    `keys[i]`."""

    keys: list[str] = field(default_factory=list)
    values: list[bytes] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Publication:
    """Everything one micro-batch publishes: lists and vectors by id (each encoded on its
    own, the readable form), and `encoded`, written after them (the publisher's batch
    form)."""

    model: str
    version: int
    updated_at: float
    user_tops: dict[Id, RankedList] = field(default_factory=dict)
    user_vectors: dict[Id, np.ndarray] = field(default_factory=dict)
    item_vectors: dict[Id, np.ndarray] = field(default_factory=dict)
    item_similar: dict[Id, RankedList] = field(default_factory=dict)
    popular: RankedList | None = None
    meta: dict[str, str | int | float] = field(default_factory=dict)
    encoded: EncodedStrings = field(default_factory=EncodedStrings)


def encode_ranked(ranked: RankedList, model: str, version: int, updated_at: float) -> bytes:
    """One list's JSON: what readers decode, and what `BatchEncoder.lists` must equal."""
    body: dict[str, object] = {
        "items": ranked.items,
        "scores": ranked.scores,
        "model": model,
        "version": version,
        "updated_at": updated_at,
    }
    if ranked.stages:
        body["stages"] = list(ranked.stages)
    # float32 scores serialise as their shortest float32 text ("0.7530054").
    return orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY)


class Stamp(NamedTuple):
    """What every list of one publication carries besides its items and scores."""

    model: str
    version: int
    updated_at: float


class RankedRows(NamedTuple):
    """Many ids' lists, as a model ranks them: `ids[i]`'s list is row i of `scores` and
    `items` (item rows, best first; empty slots, -inf, last)."""

    ids: list[Id]
    scores: np.ndarray
    items: np.ndarray
    stages: tuple[str, ...] = ()  # as `RankedList.stages`, the same for every row


class VectorRows(NamedTuple):
    """Many ids' vectors: `ids[i]`'s is row i of `vectors`."""

    ids: list[Id]
    vectors: np.ndarray


class BatchEncoder:
    """Encodes a batch's keys byte for byte as `string_writes` encodes a `Publication` of
    the same lists and vectors, without a Python object per list: each item row's JSON id
    (its fragment) is encoded once and kept, the batch's scores by one orjson call, each
    list is a join of fragments and score texts, and vectors are slices of one buffer.

    An item row keeps its id for good (items are never forgotten), so fragments never
    go stale; they cost one bytes object (~50 bytes) per item row ranked so far."""

    def __init__(self, keys: Keys, item_ids: Callable[[list[int]], list[Id]]) -> None:
        self.keys = keys
        self._item_ids = item_ids
        self._fragments = np.empty(0, dtype=object)
        self._known = np.zeros(0, dtype=bool)

    def strings(
        self,
        stamp: Stamp,
        user_tops: RankedRows,
        user_vectors: VectorRows,
        item_vectors: VectorRows,
        item_similar: RankedRows,
    ) -> EncodedStrings:
        """The batch's keys and values, in `string_writes`' order."""
        keys = self.keys
        return EncodedStrings(
            [
                *map(keys.user_top, user_tops.ids),
                *map(keys.user_vector, user_vectors.ids),
                *map(keys.item_vector, item_vectors.ids),
                *map(keys.item_similar, item_similar.ids),
            ],
            [
                *self.lists(user_tops.scores, user_tops.items, stamp, user_tops.stages),
                *encode_vectors(user_vectors.vectors),
                *encode_vectors(item_vectors.vectors),
                *self.lists(item_similar.scores, item_similar.items, stamp, item_similar.stages),
            ],
        )

    def lists(
        self, scores: np.ndarray, items: np.ndarray, stamp: Stamp, stages: tuple[str, ...] = ()
    ) -> list[bytes]:
        """`encode_ranked` of each row of `scores` and `items` ([lists, n], best first),
        each list its first as many slots as it has finite scores."""
        lengths = np.isfinite(scores).sum(axis=1)
        kept = np.arange(scores.shape[1]) < lengths[:, None]
        fragments = self._fragments_of(items[kept])
        head, middle = b'{"items":[', b'],"scores":['
        fields: dict[str, object] = dict(stamp._asdict())
        if stages:
            fields["stages"] = list(stages)
        tail = b"]," + orjson.dumps(fields)[1:]
        bounds = np.concatenate(([0], np.cumsum(lengths))).tolist()
        return [
            b"".join((head, b",".join(fragments[start:end]), middle, numbers, tail))
            for start, end, numbers in zip(
                bounds[:-1], bounds[1:], score_texts(scores, lengths), strict=True
            )
        ]

    def _fragments_of(self, rows: np.ndarray) -> list[bytes]:
        if rows.size == 0:
            return []
        needed = int(rows.max()) + 1
        if needed > self._known.size:
            size = max(needed, 2 * self._known.size)
            fragments, known = np.empty(size, dtype=object), np.zeros(size, dtype=bool)
            fragments[: self._known.size], known[: self._known.size] = self._fragments, self._known
            self._fragments, self._known = fragments, known
        missing = np.unique(rows[~self._known[rows]])
        if missing.size:
            self._fragments[missing] = [orjson.dumps(i) for i in self._item_ids(missing.tolist())]
            self._known[missing] = True
        found: list[bytes] = self._fragments[rows].tolist()
        return found


def score_texts(scores: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """Per row of [lists, n] `scores`, its first `lengths[i]` scores as orjson writes
    them, comma-separated: one orjson call for the whole matrix."""
    if scores.shape[1] == 0:
        return [b""] * scores.shape[0]
    matrix = orjson.dumps(scores, option=orjson.OPT_SERIALIZE_NUMPY)  # [[..],[..]]
    rows = matrix[2:-2].split(b"],[") if scores.shape[0] else []
    for short in np.flatnonzero(lengths < scores.shape[1]).tolist():  # empty slots (null)
        rows[short] = b",".join(rows[short].split(b",")[: lengths[short]])
    return rows


def decode_ranked(value: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(value)
    return decoded


def encode_vector(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def encode_vectors(vectors: np.ndarray) -> list[bytes]:
    """`encode_vector` of each row of [rows, dim > 0], sliced from one buffer."""
    buffer, width = np.ascontiguousarray(vectors, dtype="<f4").tobytes(), 4 * vectors.shape[1]
    return [buffer[start : start + width] for start in range(0, len(buffer), width)]


def decode_vector(value: bytes) -> np.ndarray:
    return np.frombuffer(value, dtype="<f4")


def string_writes(publication: Publication, keys: Keys) -> dict[str, bytes]:
    """Every STRING key the publication sets, with its encoded value."""
    stamp = Stamp(publication.model, publication.version, publication.updated_at)
    writes: dict[str, bytes] = {}
    for user, ranked in publication.user_tops.items():
        writes[keys.user_top(user)] = encode_ranked(ranked, *stamp)
    for user, vector in publication.user_vectors.items():
        writes[keys.user_vector(user)] = encode_vector(vector)
    for item, vector in publication.item_vectors.items():
        writes[keys.item_vector(item)] = encode_vector(vector)
    for item, ranked in publication.item_similar.items():
        writes[keys.item_similar(item)] = encode_ranked(ranked, *stamp)
    if publication.popular is not None:
        writes[keys.popular] = encode_ranked(publication.popular, *stamp)
    writes.update(zip(publication.encoded.keys, publication.encoded.values, strict=True))
    return writes
