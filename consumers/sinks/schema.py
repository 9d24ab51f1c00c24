"""The Redis contract (README, Contracts: Redis keys): key names and encodings, in one place."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

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
class Publication:
    """Everything one micro-batch publishes."""

    model: str
    version: int
    updated_at: float
    user_tops: dict[Id, RankedList] = field(default_factory=dict)
    user_vectors: dict[Id, np.ndarray] = field(default_factory=dict)
    item_vectors: dict[Id, np.ndarray] = field(default_factory=dict)
    item_similar: dict[Id, RankedList] = field(default_factory=dict)
    popular: RankedList | None = None
    meta: dict[str, str | int | float] = field(default_factory=dict)


def encode_ranked(ranked: RankedList, model: str, version: int, updated_at: float) -> bytes:
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


def decode_ranked(value: bytes) -> dict[str, Any]:
    decoded: dict[str, Any] = orjson.loads(value)
    return decoded


def encode_vector(vector: np.ndarray) -> bytes:
    """Little-endian float32 bytes."""
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def decode_vector(value: bytes) -> np.ndarray:
    return np.frombuffer(value, dtype="<f4")


def string_writes(publication: Publication, keys: Keys) -> dict[str, bytes]:
    """Every STRING key the publication sets, with its encoded value."""
    stamp = (publication.model, publication.version, publication.updated_at)
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
    return writes
