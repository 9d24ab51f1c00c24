"""What the feature topics say of users and items, as token ids a model can embed.

A feature record (streamer/events.py, `EntityFeatures`) becomes a set of tokens:
a string value `v` of feature `name` is the token `name=v`, each element of a list
one token, a boolean `name=true|false`, a number falls in a bucket of width
`NUMBER_BUCKET` (`year=1990`, `age=20`), and null says nothing. Item text becomes
word ids hashed into `TEXT_BUCKETS` (lower-cased runs of letters and digits), so
its vocabulary never grows.

Invariants: token id 0 is padding and never a token; an entity's newest record
replaces its older one whole; ids are keyed by their canonical text, like the
model's registries.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Iterable, Mapping
from typing import Final, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

from consumers.model.packing import pack_ids, section, unpack_ids, unpack_lists
from consumers.model.registry import IdRegistry
from streamer.events import EntityFeatures, EntityKind, FeatureValue, Id, id_text

NUMBER_BUCKET: Final = 10
TEXT_BUCKETS: Final = 1 << 15
MAX_WORDS: Final = 32  # of an item's text, kept in order
PADDING: Final = 0
_WORD: Final = re.compile(r"[^\W_]+")

TokenIds = npt.NDArray[np.int64]


def feature_tokens(features: Mapping[str, FeatureValue]) -> list[str]:
    """The tokens of one record's features, in a stable order, without repeats."""
    tokens: list[str] = []
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        for element in values:
            if element is None:
                continue
            if isinstance(element, bool):
                text = "true" if element else "false"
            elif isinstance(element, int | float):
                text = str(math.floor(element / NUMBER_BUCKET) * NUMBER_BUCKET)
            else:
                text = element
            tokens.append(f"{name}={text}")
    return list(dict.fromkeys(tokens))


def text_words(text: str) -> TokenIds:
    """The first `MAX_WORDS` words of `text` as ids in 1..TEXT_BUCKETS-1, in order."""
    words = _WORD.findall(text.lower())[:MAX_WORDS]
    return np.fromiter(
        (1 + zlib.crc32(word.encode("utf-8")) % (TEXT_BUCKETS - 1) for word in words),
        dtype=np.int64,
        count=len(words),
    )


class FeatureStore:
    """Token ids of each user's and item's features, and word ids of each item's text."""

    def __init__(self) -> None:
        self._clear()

    def _clear(self) -> None:
        self.vocabulary = IdRegistry()
        self.vocabulary.add("")  # row 0: padding
        self._tokens: dict[EntityKind, dict[str, TokenIds]] = {"user": {}, "item": {}}
        self._words: dict[str, TokenIds] = {}
        self._ids: dict[EntityKind, dict[str, Id]] = {"user": {}, "item": {}}

    def __len__(self) -> int:
        """Users and items with a record."""
        return len(self._ids["user"]) + len(self._ids["item"])

    def update(self, record: EntityFeatures) -> TokenIds:
        """Store `record` in place of any older one of its entity; its token ids."""
        key = id_text(record.id)
        tokens = self.vocabulary.add_many(feature_tokens(record.features))
        self._tokens[record.kind][key] = tokens
        self._ids[record.kind][key] = record.id
        if record.kind == "item":
            self._words[key] = text_words(record.text)
        return tokens

    def forget(self, kind: EntityKind, raw: Id) -> None:
        key = id_text(raw)
        self._tokens[kind].pop(key, None)
        self._ids[kind].pop(key, None)
        if kind == "item":
            self._words.pop(key, None)

    def ids(self, kind: EntityKind) -> list[Id]:
        """Every user or item with a record, in arrival order."""
        return list(self._ids[kind].values())

    def tokens(self, kind: EntityKind, raws: Iterable[Id]) -> TokenIds:
        """[len(raws), widest] token ids, `PADDING` after each entity's own (all padding
        for one without a record)."""
        return _padded([self._tokens[kind].get(id_text(raw), _NONE) for raw in raws])

    def words(self, raws: Iterable[Id]) -> TokenIds:
        """[len(raws), widest] word ids of these items' text, `PADDING` after them."""
        return _padded([self._words.get(id_text(raw), _NONE) for raw in raws])

    def state(self) -> dict[str, Tensor]:
        tensors = {f"features.vocabulary.{k}": t for k, t in self.vocabulary.state().items()}
        for kind in ("user", "item"):
            ids = self._ids[kind]
            packed = pack_ids(list(ids.values()))
            tensors.update({f"features.{kind}.ids.{k}": t for k, t in packed.items()})
            offsets, values = _pack_ordered([self._tokens[kind][key] for key in ids])
            tensors[f"features.{kind}.offsets"], tensors[f"features.{kind}.tokens"] = (
                offsets,
                values,
            )
        offsets, values = _pack_ordered(
            [self._words[key] for key in self._ids["item"]],
        )
        tensors["features.item.word_offsets"], tensors["features.item.words"] = offsets, values
        return tensors

    def load_state(self, tensors: Mapping[str, Tensor]) -> None:
        """Restore `state()`; a checkpoint without features leaves the store empty."""
        self._clear()
        if "features.vocabulary.kinds" not in tensors:
            return
        self.vocabulary.load_state(section(dict(tensors), "features.vocabulary."))
        for kind in ("user", "item"):
            ids = unpack_ids(section(dict(tensors), f"features.{kind}.ids."))
            lists = unpack_lists(
                tensors[f"features.{kind}.offsets"], tensors[f"features.{kind}.tokens"]
            )
            for raw, tokens in zip(ids, lists, strict=True):
                assert raw is not None
                self._ids[kind][id_text(raw)] = raw
                self._tokens[kind][id_text(raw)] = np.asarray(tokens, dtype=np.int64)
        words = unpack_lists(tensors["features.item.word_offsets"], tensors["features.item.words"])
        for key, ids_of_words in zip(self._ids["item"], words, strict=True):
            self._words[key] = np.asarray(ids_of_words, dtype=np.int64)


_NONE: Final = np.zeros(0, dtype=np.int64)


def _padded(rows: list[TokenIds]) -> TokenIds:
    width = max((row.size for row in rows), default=0)
    out = np.full((len(rows), max(width, 1)), PADDING, dtype=np.int64)
    for index, row in enumerate(rows):
        out[index, : row.size] = row
    return out


def _pack_ordered(lists: list[TokenIds]) -> tuple[Tensor, Tensor]:
    """CSR form keeping each list's order (`pack_lists` sorts)."""
    lengths = np.fromiter((row.size for row in lists), dtype=np.int64, count=len(lists))
    offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    flat = np.concatenate(lists).astype(np.int64) if lists else np.zeros(0, dtype=np.int64)
    return torch.from_numpy(offsets), torch.from_numpy(flat)


@runtime_checkable
class ReadsFeatures(Protocol):
    """A model that embeds features: it reads them from the learner's `FeatureStore`."""

    def read_features(self, store: FeatureStore) -> None:
        """Read users' and items' features from `store` from now on."""

    def features_arrived(self, kind: EntityKind, raw: Id) -> int | None:
        """`raw`'s features changed in the store: its row (added now if it had none, so
        that a new item is recommendable before its first view), or None if the model
        keeps no row for it."""
