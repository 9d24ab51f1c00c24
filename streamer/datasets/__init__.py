"""Datasets as streams of view events, in time order (the `--source` flag's values).

`open_dataset(spec)` names one by a short string, as the flag does:

- `synthetic`: the seeded synthetic stream (`SyntheticConfig` fields as keywords);
- `synthetic:drift`: the same with every user's taste reassigned half way
  (`drift_at=0.5` unless given);
- `movielens:PATH`: MovieLens ratings from a file or folder, in time order; the PATH
  `ml-100k` means MovieLens-100K fetched into the local cache.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from streamer.datasets.cache import fetch_ml100k
from streamer.datasets.features import movielens_features, synthetic_features
from streamer.datasets.movielens import read_movielens
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import EntityFeatures, ViewEvent

DATASET_SPECS: Final = ("synthetic", "synthetic:drift", "movielens:PATH")
DEFAULT_DRIFT_AT: Final = 0.5


def _synthetic_config(drift: bool, options: dict[str, Any]) -> SyntheticConfig:
    known = {field.name for field in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown synthetic option(s) {unknown}; known: {sorted(known)}")
    if drift:
        options = {"drift_at": DEFAULT_DRIFT_AT, **options}
    return SyntheticConfig(**options)


def _movielens_path(where: str, options: dict[str, Any]) -> Path:
    if options:
        raise ValueError(f"the movielens source takes no options, got {sorted(options)}")
    if not where:
        raise ValueError("movielens:PATH needs a PATH (a file, a folder, or ml-100k)")
    return fetch_ml100k() if where == "ml-100k" else Path(where)


def open_dataset(spec: str, **options: Any) -> Iterator[ViewEvent]:
    """The view events named by `spec` (one of `DATASET_SPECS`), in time order."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic" and rest in ("", "drift"):
        return synthetic_views(_synthetic_config(rest == "drift", options))
    if kind == "movielens":
        return iter(read_movielens(_movielens_path(rest, options)))
    raise ValueError(f"unknown source {spec!r}: use one of {', '.join(DATASET_SPECS)}")


def open_features(spec: str, **options: Any) -> Iterator[EntityFeatures]:
    """The item and user feature records of the dataset `spec` names (as `open_dataset`)."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic" and rest in ("", "drift"):
        return synthetic_features(_synthetic_config(rest == "drift", options))
    if kind == "movielens":
        return movielens_features(_movielens_path(rest, options))
    raise ValueError(f"unknown source {spec!r}: use one of {', '.join(DATASET_SPECS)}")
