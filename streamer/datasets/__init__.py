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
from typing import Any, Final

from streamer.datasets.cache import fetch_ml100k
from streamer.datasets.movielens import read_movielens
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import ViewEvent

DATASET_SPECS: Final = ("synthetic", "synthetic:drift", "movielens:PATH")
DEFAULT_DRIFT_AT: Final = 0.5


def _synthetic(drift: bool, options: dict[str, Any]) -> Iterator[ViewEvent]:
    known = {field.name for field in dataclasses.fields(SyntheticConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"unknown synthetic option(s) {unknown}; known: {sorted(known)}")
    if drift:
        options = {"drift_at": DEFAULT_DRIFT_AT, **options}
    return synthetic_views(SyntheticConfig(**options))


def _movielens(where: str, options: dict[str, Any]) -> Iterator[ViewEvent]:
    if options:
        raise ValueError(f"the movielens source takes no options, got {sorted(options)}")
    if not where:
        raise ValueError("movielens:PATH needs a PATH (a file, a folder, or ml-100k)")
    return iter(read_movielens(fetch_ml100k() if where == "ml-100k" else where))


def open_dataset(spec: str, **options: Any) -> Iterator[ViewEvent]:
    """The view events named by `spec` (one of `DATASET_SPECS`), in time order."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic" and rest in ("", "drift"):
        return _synthetic(rest == "drift", options)
    if kind == "movielens":
        return _movielens(rest, options)
    raise ValueError(f"unknown source {spec!r}: use one of {', '.join(DATASET_SPECS)}")
