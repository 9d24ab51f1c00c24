"""The evaluation's streams: MovieLens-100K in time order and a drifting synthetic one."""

from __future__ import annotations

import csv
from pathlib import Path

from benchmarks.evaluation.splits import by_time
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import EntityFeatures, ViewEvent


def read_inter(path: Path) -> list[ViewEvent]:
    """RecBole's `ml-100k.inter` (user, item, rating, timestamp; tab separated) as views.

    Every rating is a view; the rating rides along. Sorted by time, ties in file order.
    """
    events: list[ViewEvent] = []
    with path.open(encoding="utf-8", newline="") as handle:
        rows = csv.reader(handle, delimiter="\t")
        header = [name.split(":")[0] for name in next(rows)]
        user, item = header.index("user_id"), header.index("item_id")
        rating, ts = header.index("rating"), header.index("timestamp")
        for row in rows:
            if row:
                events.append(
                    ViewEvent(
                        int(row[user]), int(row[item]), float(row[ts]), 1.0, float(row[rating])
                    )
                )
    return by_time(events)


def movielens_100k(folder: Path | None = None) -> list[ViewEvent]:
    """MovieLens-100K from the local cache (downloaded once), in time order."""
    if folder is None:
        from streamer.datasets.cache import fetch_ml100k

        folder = fetch_ml100k()
    try:
        from streamer.datasets.movielens import read_movielens
    except ImportError:
        return read_inter(folder / "ml-100k.inter")
    return by_time(read_movielens(folder))


def planted_synthetic(events: int, drift_at: float | None, seed: int = 0) -> list[ViewEvent]:
    """The planted-cluster synthetic stream; every user's taste changes at `drift_at`
    (a fraction of the stream; None: never)."""
    config = SyntheticConfig(
        n_users=1000, n_items=1000, events=events, drift_at=drift_at, seed=seed
    )
    return list(synthetic_views(config))


def movielens_100k_features(folder: Path | None = None) -> list[EntityFeatures]:
    """MovieLens-100K's item and user feature records, as `produce` publishes them."""
    from streamer.datasets.cache import fetch_ml100k
    from streamer.datasets.features import movielens_features

    return list(movielens_features(folder if folder is not None else fetch_ml100k()))


def planted_synthetic_features(events: int, seed: int = 0) -> list[EntityFeatures]:
    """The feature records of `planted_synthetic`'s items and users (noisy cluster hints)."""
    from streamer.datasets.features import synthetic_features

    config = SyntheticConfig(n_users=1000, n_items=1000, events=events, seed=seed)
    return list(synthetic_features(config))
