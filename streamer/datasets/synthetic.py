"""A seeded synthetic view stream with a structure planted for a recommender to learn.

The planted world (`plant_world`, the ground truth):

- every item belongs to one of `n_clusters` taste clusters (balanced sizes);
- every user has one taste cluster; at `drift_at` (a fraction of the stream) every
  user's cluster is reassigned to a different one;
- items have a Zipf popularity (`zipf` exponent) over the whole catalogue, and the
  same order gives each item a Zipf weight by its rank inside its cluster;
- users have a log-normal activity (`activity_sigma`): a few users watch a lot;
- a fraction of users and items exist at the start, the rest arrive uniformly over
  the stream. Ids are numbered in order of arrival: `u0`.. and `i0`.. exist first.

Each view (`synthetic_views`): pick an arrived user by activity; with probability
`in_cluster` draw an arrived item of the user's current cluster by within-cluster
popularity, otherwise an arrived item of the whole catalogue by global popularity.
Users rarely re-watch: the view takes the first unwatched of `rewatch_tries` such draws,
then of as many uniform draws from the same place (the cluster's long tail), then of as
many uniform draws from the whole catalogue (heavy users exhaust their cluster and
explore). So the share of in-cluster views comes out a little below `in_cluster`
(about 0.80 with the defaults). Timestamps are a Poisson process of
`events_per_second` starting at `start_ts`.

Ids are strings: users `"u{n}"`, items `"i{n}"` (see `user_id`, `item_id`, `id_index`).
Generation is vectorised in chunks of `CHUNK` events; arrivals take effect at the start
of the chunk in which they fall. With the defaults, 100k events take about half a second.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, TypeVar

import numpy as np
from numpy.typing import NDArray

from streamer.events import ViewEvent

USER_PREFIX: Final = "u"
ITEM_PREFIX: Final = "i"
CHUNK: Final = 1024
MAX_PAIRS: Final = 2**33  # the watched bitmap holds n_users * n_items bits: 1 GiB at most

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]
_A = TypeVar("_A", IntArray, FloatArray)


def user_id(index: int) -> str:
    return f"{USER_PREFIX}{index}"


def item_id(index: int) -> str:
    return f"{ITEM_PREFIX}{index}"


def id_index(text: str) -> int:
    """The number in a synthetic id: `id_index("u12") == 12`, `id_index("i7") == 7`."""
    return int(text[1:])


@dataclass(frozen=True, slots=True)
class SyntheticConfig:
    """Hyper-parameters of the synthetic world and stream; the same config gives the same stream."""

    n_users: int = 2000
    n_items: int = 1000
    n_clusters: int = 8
    events: int = 100_000
    in_cluster: float = 0.85
    zipf: float = 1.1
    initial_users: float = 0.5
    initial_items: float = 0.6
    activity_sigma: float = 0.7
    drift_at: float | None = None
    seed: int = 0
    start_ts: float = 1_700_000_000.0
    events_per_second: float = 100.0
    rewatch_tries: int = 8

    def __post_init__(self) -> None:
        if self.n_clusters < 1:
            raise ValueError("n_clusters must be >= 1")
        if self.n_users < 1 or self.n_items < 1 or self.events < 0:
            raise ValueError("n_users and n_items must be >= 1, events >= 0")
        if self.n_users * self.n_items > MAX_PAIRS:
            raise ValueError(f"n_users * n_items must be <= {MAX_PAIRS}")
        for name in ("in_cluster", "initial_users", "initial_items"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.drift_at is not None and not 0.0 <= self.drift_at <= 1.0:
            raise ValueError("drift_at must be in [0, 1] or None")
        if self.zipf < 0 or self.activity_sigma < 0:
            raise ValueError("zipf and activity_sigma must be >= 0")
        if self.events_per_second <= 0:
            raise ValueError("events_per_second must be > 0")
        if self.rewatch_tries < 1:
            raise ValueError("rewatch_tries must be >= 1")
        if self.start_ts < 0:
            raise ValueError("start_ts must be >= 0")
        if self.n_initial_users < 1:
            raise ValueError("initial_users leaves no user present at the start")
        if self.n_initial_items < self.n_clusters:
            raise ValueError("initial_items must leave at least one item per cluster at the start")

    @property
    def n_initial_users(self) -> int:
        return round(self.initial_users * self.n_users)

    @property
    def n_initial_items(self) -> int:
        return round(self.initial_items * self.n_items)

    @property
    def drift_index(self) -> int | None:
        """The index of the first event after the drift, or None without drift."""
        return None if self.drift_at is None else round(self.drift_at * self.events)


@dataclass(frozen=True, eq=False, slots=True)
class SyntheticWorld:
    """The ground truth of a synthetic stream; arrays are indexed by user/item number."""

    config: SyntheticConfig
    item_cluster: IntArray
    item_popularity: FloatArray
    item_cluster_weight: FloatArray
    item_arrival: IntArray
    user_cluster: IntArray
    user_cluster_after: IntArray
    user_activity: FloatArray
    user_arrival: IntArray

    def taste(self, user: int, event_index: int) -> int:
        """The taste cluster of `user` at the `event_index`-th event of the stream."""
        drift = self.config.drift_index
        if drift is not None and event_index >= drift:
            return int(self.user_cluster_after[user])
        return int(self.user_cluster[user])


def _streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    world, stream = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(world), np.random.default_rng(stream)


def _arrivals(n: int, n_initial: int, events: int, rng: np.random.Generator) -> IntArray:
    """Event index from which each id exists: 0 for the first `n_initial`, then sorted uniform."""
    late = np.sort(rng.integers(0, max(events, 1), size=n - n_initial))
    return np.concatenate([np.zeros(n_initial, dtype=np.int64), late.astype(np.int64)])


def _balanced_clusters(n: int, n_clusters: int, rng: np.random.Generator) -> IntArray:
    return rng.permutation(np.arange(n, dtype=np.int64) % n_clusters)


def _readonly(array: _A) -> _A:
    array.setflags(write=False)
    return array


def plant_world(config: SyntheticConfig, rng: np.random.Generator | None = None) -> SyntheticWorld:
    """Draw the ground truth; without `rng` it is derived from `config.seed`."""
    rng = rng if rng is not None else _streams(config.seed)[0]
    n_items, n_users, k = config.n_items, config.n_users, config.n_clusters
    n_init_items = config.n_initial_items
    item_cluster = np.concatenate(
        [
            _balanced_clusters(n_init_items, k, rng),
            _balanced_clusters(n_items - n_init_items, k, rng),
        ]
    )
    rank = rng.permutation(n_items)
    popularity = ((rank + 1.0) ** -config.zipf).astype(np.float64)
    by_cluster_then_rank = np.lexsort((rank, item_cluster))
    sorted_clusters = item_cluster[by_cluster_then_rank]
    cluster_start = np.searchsorted(sorted_clusters, np.arange(k))
    within_rank = np.empty(n_items, dtype=np.int64)
    within_rank[by_cluster_then_rank] = np.arange(n_items) - cluster_start[sorted_clusters]
    cluster_weight = ((within_rank + 1.0) ** -config.zipf).astype(np.float64)

    user_cluster = rng.integers(0, k, size=n_users)
    if config.drift_at is not None and k > 1:
        user_cluster_after = (user_cluster + rng.integers(1, k, size=n_users)) % k
    else:
        user_cluster_after = user_cluster.copy()
    activity = rng.lognormal(0.0, config.activity_sigma, size=n_users)
    return SyntheticWorld(
        config=config,
        item_cluster=_readonly(item_cluster),
        item_popularity=_readonly(popularity),
        item_cluster_weight=_readonly(cluster_weight),
        item_arrival=_readonly(_arrivals(n_items, n_init_items, config.events, rng)),
        user_cluster=_readonly(user_cluster),
        user_cluster_after=_readonly(user_cluster_after),
        user_activity=_readonly(activity),
        user_arrival=_readonly(_arrivals(n_users, config.n_initial_users, config.events, rng)),
    )


def _cumulative(weights: FloatArray) -> FloatArray:
    """Cumulative sums with a leading 0: the mass of `weights[a:b]` is `c[b] - c[a]`."""
    return np.concatenate([[0.0], np.cumsum(weights)])


def _draw(cum: FloatArray, lo: IntArray, hi: IntArray, uniform: FloatArray) -> IntArray:
    """Positions in `[lo, hi)` drawn with the weights behind `cum`, one per uniform."""
    target = cum[lo] + uniform * (cum[hi] - cum[lo])
    pos = np.searchsorted(cum, target, side="right") - 1
    return np.clip(pos, lo, hi - 1).astype(np.int64)


class _Sampler:
    """Vectorised draws of users and items among the ids that have arrived by event `at`."""

    def __init__(self, world: SyntheticWorld) -> None:
        self.world = world
        n_items = world.config.n_items
        self.user_cum = _cumulative(world.user_activity)
        self.item_cum = _cumulative(world.item_popularity)
        # Items grouped by cluster, ascending id inside a cluster, so the arrived items of
        # a cluster are a prefix of its group (ids are numbered in order of arrival).
        self.cluster_items = np.lexsort((np.arange(n_items), world.item_cluster))
        self.cluster_keys = world.item_cluster[self.cluster_items] * n_items + self.cluster_items
        self.cluster_cum = _cumulative(world.item_cluster_weight[self.cluster_items])
        self.cluster_base = np.arange(world.config.n_clusters) * n_items
        self.cluster_start = np.searchsorted(self.cluster_keys, self.cluster_base)

    def users(self, at: int, uniform: FloatArray) -> IntArray:
        arrived = int(np.searchsorted(self.world.user_arrival, at, side="right"))
        zeros = np.zeros(uniform.shape, dtype=np.int64)
        return _draw(self.user_cum, zeros, zeros + arrived, uniform)

    def items(
        self, at: int, cluster: IntArray, anywhere: NDArray[np.bool_], uniform: FloatArray
    ) -> IntArray:
        """Candidate items, one row per view, in the order they are tried.

        `uniform` is (views, 3, tries): stage 0 draws by popularity (in the view's cluster,
        or anywhere when `anywhere`), stage 1 uniformly in the same place, stage 2 uniformly
        among all arrived items: the long tail a user explores once the head is watched.
        """
        arrived = int(np.searchsorted(self.world.item_arrival, at, side="right"))
        lo = self.cluster_start[cluster][:, None]
        hi = np.searchsorted(self.cluster_keys, self.cluster_base + arrived)[cluster][:, None]
        lo[anywhere], hi[anywhere] = 0, arrived
        near = ~anywhere
        popular = np.empty((len(cluster), uniform.shape[2]), dtype=np.int64)
        popular[near] = self.cluster_items[
            _draw(self.cluster_cum, lo[near], hi[near], uniform[near, 0])
        ]
        popular[anywhere] = _draw(self.item_cum, lo[anywhere], hi[anywhere], uniform[anywhere, 0])
        spread = lo + (uniform[:, 1] * (hi - lo)).astype(np.int64)
        spread[near] = self.cluster_items[spread[near]]
        tail = (uniform[:, 2] * arrived).astype(np.int64)
        return np.concatenate([popular, spread, tail], axis=1)


class _Watched:
    """Which (user, item) pairs have been watched: a bitmap of n_users x n_items bits."""

    def __init__(self, n_users: int, n_items: int) -> None:
        self.n_items = n_items
        self.bits = np.zeros((n_users * n_items + 7) // 8, dtype=np.uint8)

    def contains(self, users: IntArray, items: IntArray) -> NDArray[np.bool_]:
        keys = users * self.n_items + items
        bits = self.bits[keys >> 3] >> (keys & 7).astype(np.uint8)
        found: NDArray[np.bool_] = (bits & 1).astype(np.bool_)
        return found

    def add(self, users: IntArray, items: IntArray) -> None:
        keys = users * self.n_items + items
        np.bitwise_or.at(self.bits, keys >> 3, (1 << (keys & 7)).astype(np.uint8))


def _choose(users: IntArray, candidates: IntArray, watched: _Watched) -> IntArray:
    """Per view, in order, its first candidate the user has not watched (else its first one).

    Each view first takes its first candidate unwatched before the chunk. Where that gives a
    user the same item twice in the chunk, that user's views are walked in order, each also
    skipping what the user's earlier views took. All choices are then added to `watched`.
    """
    fresh = ~watched.contains(users[:, None], candidates)
    chosen: IntArray = candidates[np.arange(len(users)), np.argmax(fresh, axis=1)]
    _, inverse, counts = np.unique(
        users * watched.n_items + chosen, return_inverse=True, return_counts=True
    )
    repeated = np.flatnonzero(np.isin(users, users[counts[inverse] > 1]))
    if repeated.size:
        taken: set[tuple[int, int]] = set()
        walk = zip(
            repeated.tolist(),
            users[repeated].tolist(),
            candidates[repeated].tolist(),
            fresh[repeated].tolist(),
            strict=True,
        )
        for row, user, row_candidates, row_fresh in walk:
            pick = row_candidates[0]
            for item, is_fresh in zip(row_candidates, row_fresh, strict=True):
                if is_fresh and (user, item) not in taken:
                    pick = item
                    break
            taken.add((user, pick))
            chosen[row] = pick
    watched.add(users, chosen)
    return chosen


def generate_views(world: SyntheticWorld, rng: np.random.Generator) -> Iterator[ViewEvent]:
    """The view stream of `world`, in time order, drawing every random choice from `rng`."""
    config = world.config
    sampler = _Sampler(world)
    watched = _Watched(config.n_users, config.n_items)
    user_names = [user_id(n) for n in range(config.n_users)]
    item_names = [item_id(n) for n in range(config.n_items)]
    drift = config.drift_index if config.drift_index is not None else config.events
    now = config.start_ts
    for start in range(0, config.events, CHUNK):
        m = min(CHUNK, config.events - start)
        users = sampler.users(start, rng.random(m))
        after = np.arange(start, start + m) >= drift
        taste = np.where(after, world.user_cluster_after[users], world.user_cluster[users])
        anywhere = rng.random(m) >= config.in_cluster
        uniform = rng.random((m, 3, config.rewatch_tries))
        items = _choose(users, sampler.items(start, taste, anywhere, uniform), watched)
        times = now + np.cumsum(rng.exponential(1.0 / config.events_per_second, size=m))
        now = float(times[-1])
        for user, item, ts in zip(users.tolist(), items.tolist(), times.tolist(), strict=True):
            yield ViewEvent(user_names[user], item_names[item], ts, 1.0, None, {})


def synthetic_views(config: SyntheticConfig | None = None) -> Iterator[ViewEvent]:
    """The seeded synthetic stream of `config` (defaults if None): `config.events` views."""
    config = config if config is not None else SyntheticConfig()
    world_rng, stream_rng = _streams(config.seed)
    return generate_views(plant_world(config, world_rng), stream_rng)
