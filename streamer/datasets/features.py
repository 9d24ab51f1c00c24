"""Feature records of a dataset's items and users (streamer/events.py, `EntityFeatures`).

- MovieLens: items' genres and year as features, their title as text; users' age,
  gender, occupation and `geo` (the first digit of the zip code: a US region).
- synthetic: each item's `genre` is its planted taste cluster with probability
  `SIGNAL` (another cluster otherwise), its text two words, one naming the same
  (noisy) cluster; each user's `segment` is their cluster (before any drift) with
  probability `SIGNAL`, and an uninformative age. Features hint at the planted
  structure without giving it away.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import numpy as np

from streamer.datasets.movielens import read_item_features, read_user_features
from streamer.datasets.synthetic import SyntheticConfig, item_id, plant_world, user_id
from streamer.events import EntityFeatures, FeatureValue

SIGNAL: Final = 0.7
_SKIPPED_ITEM_FIELDS: Final = ("title", "release_date", "item_id")
_USER_FIELDS: Final = ("age", "gender", "occupation")


def _noisy(truth: np.ndarray, clusters: int, rng: np.random.Generator) -> np.ndarray:
    """`truth` kept with probability SIGNAL, else a uniform cluster."""
    kept = rng.random(truth.size) < SIGNAL
    return np.where(kept, truth, rng.integers(0, clusters, truth.size))


def synthetic_features(config: SyntheticConfig) -> Iterator[EntityFeatures]:
    """Every item's, then every user's, features, seeded by `config.seed`."""
    world = plant_world(config)
    rng = np.random.default_rng([config.seed, 1])
    genres = _noisy(world.item_cluster, config.n_clusters, rng)
    flavours = rng.integers(0, 50, config.n_items)
    for n, (genre, flavour) in enumerate(zip(genres.tolist(), flavours.tolist(), strict=True)):
        features: dict[str, FeatureValue] = {"genre": [f"g{genre}"]}
        yield EntityFeatures("item", item_id(n), features, f"topic{genre} flavour{flavour}")
    segments = _noisy(world.user_cluster, config.n_clusters, rng)
    ages = rng.integers(15, 75, config.n_users)
    for n, (segment, age) in enumerate(zip(segments.tolist(), ages.tolist(), strict=True)):
        yield EntityFeatures("user", user_id(n), {"segment": f"s{segment}", "age": age})


def _value(value: Any) -> FeatureValue:
    return [str(v) for v in value] if isinstance(value, list) else value


def movielens_features(where: Path) -> Iterator[EntityFeatures]:
    """Items' then users' features from the files beside the ratings in `where` (a
    ratings file or its folder); none of a kind whose file is not there."""
    folder = where if where.is_dir() else where.parent
    try:
        items = read_item_features(folder)
    except ValueError:
        items = {}
    for item, row in items.items():
        features = {k: _value(v) for k, v in row.items() if k not in _SKIPPED_ITEM_FIELDS}
        yield EntityFeatures("item", item, features, str(row.get("title") or ""))
    try:
        users = read_user_features(folder)
    except ValueError:
        users = {}
    for user, row in users.items():
        features = {k: _value(row[k]) for k in _USER_FIELDS if k in row}
        zip_code = str(row.get("zip_code") or "")
        features["geo"] = zip_code[:1] if zip_code[:1].isdigit() else None
        yield EntityFeatures("user", user, features)
