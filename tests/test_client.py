"""The frontend read path, against the in-memory store and real Redis alike."""

from __future__ import annotations

import io
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from consumers.client import RecommendationClient, Recommendations, run_recommend
from consumers.sinks.base import RecommendationStore
from consumers.sinks.memory import MemoryStore
from consumers.sinks.redis import RedisStore
from consumers.sinks.schema import Publication, RankedList
from tests.conftest import RedisTarget


@dataclass
class Backend:
    store: RecommendationStore
    client: RecommendationClient


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        store: RecommendationStore = MemoryStore("c:")
        yield Backend(store, RecommendationClient(store, "c:"))
        return
    target = request.getfixturevalue("redis_db")
    writer = RedisStore(target.client, target.prefix)
    # The client reads through a connection of its own, as a frontend would.
    client = RecommendationClient.from_url(target.url, target.prefix)
    yield Backend(writer, client)
    client.close()


def publication(version: int = 3) -> Publication:
    return Publication(
        model="mf-bpr",
        version=version,
        updated_at=1700000000.5,
        user_tops={
            "u1": RankedList(["i1", 7, "i3", "i4"], [4.0, 3.0, 2.0, 1.0]),
            42: RankedList([], []),
        },
        user_vectors={"u1": np.array([1.0, -2.0, 0.5], dtype=np.float32)},
        item_vectors={7: np.array([0.25, 0.0, 3.0], dtype=np.float32)},
        item_similar={7: RankedList(["i1", "i3", "i4"], [0.9, 0.5, 0.1])},
        popular=RankedList([7, "i9", "i1"], [10.0, 4.0, 2.0]),
        meta={"model": "mf-bpr", "dim": 3, "version": version, "events": 12},
    )


def test_a_known_user_gets_their_own_list_trimmed_to_n(backend: Backend) -> None:
    backend.store.publish(publication())
    result = backend.client.top_n("u1", n=2)
    assert result == Recommendations(
        items=["i1", 7],
        scores=[4.0, 3.0],
        source="personal",
        model="mf-bpr",
        version=3,
        updated_at=1700000000.5,
    )
    assert backend.client.top_n("u1").items == ["i1", 7, "i3", "i4"]
    assert backend.client.top_n("u1", n=0).items == []


def test_an_unknown_user_falls_back_to_the_popular_list(backend: Backend) -> None:
    backend.store.publish(publication())
    result = backend.client.top_n("stranger", n=2)
    assert result.source == "popular"
    assert result.items == [7, "i9"]
    assert result.scores == [10.0, 4.0]
    assert result.version == 3


def test_a_user_with_an_empty_list_falls_back_too(backend: Backend) -> None:
    backend.store.publish(publication())
    # Integer ids are read under their text form, as producers sent them.
    assert backend.client.top_n(42).source == "popular"
    assert backend.client.top_n("42").items == [7, "i9", "i1"]


def test_nothing_published_gives_an_empty_popular_list(backend: Backend) -> None:
    result = backend.client.top_n("u1")
    assert result == Recommendations([], [], "popular")
    assert backend.client.similar(7) == Recommendations([], [], "similar")
    assert backend.client.meta() == {}


def test_vectors_round_trip_as_float32(backend: Backend) -> None:
    backend.store.publish(publication())
    user = backend.client.user_vector("u1")
    assert user is not None
    assert user.dtype == np.float32
    assert user.tolist() == [1.0, -2.0, 0.5]
    item = backend.client.item_vector(7)
    assert item is not None
    assert item.tolist() == [0.25, 0.0, 3.0]
    assert backend.client.item_vector("7") is not None
    assert backend.client.user_vector("stranger") is None
    assert backend.client.item_vector("nope") is None


def test_similar_items_are_trimmed_to_n(backend: Backend) -> None:
    backend.store.publish(publication())
    result = backend.client.similar(7, n=2)
    assert result.source == "similar"
    assert result.items == ["i1", "i3"]
    assert result.scores == [0.9, 0.5]
    assert backend.client.similar("unknown").items == []


def test_meta_is_the_stored_hash(backend: Backend) -> None:
    backend.store.publish(publication())
    assert backend.client.meta() == {
        "model": "mf-bpr",
        "dim": "3",
        "version": "3",
        "events": "12",
    }


def test_a_new_publication_is_read_at_once(backend: Backend) -> None:
    backend.store.publish(publication(3))
    backend.store.publish(
        Publication("mf-bpr", 4, 1.0, user_tops={"u1": RankedList(["i8"], [0.5])})
    )
    assert backend.client.top_n("u1").items == ["i8"]
    assert backend.client.top_n("u1").version == 4


def test_a_negative_n_is_refused() -> None:
    client = RecommendationClient(MemoryStore())
    with pytest.raises(ValueError, match="n must be"):
        client.top_n("u1", n=-1)


def test_prefixes_keep_deployments_apart() -> None:
    store = MemoryStore("a:")
    store.publish(publication())
    assert RecommendationClient(store, "a:").top_n("u1").source == "personal"
    assert RecommendationClient(store, "b:").top_n("u1") == Recommendations([], [], "popular")


def test_run_recommend_prints_a_users_list(
    redis_db: RedisTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    RedisStore(redis_db.client, redis_db.prefix).publish(publication())
    out = io.StringIO()
    assert run_recommend(redis_db.url, redis_db.prefix, "u1", 3, out) == 0
    header, *rows = out.getvalue().splitlines()
    assert header.startswith("# user u1: personal list;")
    assert "model mf-bpr version 3" in header
    assert rows == ["1\ti1\t4", "2\t7\t3", "3\ti3\t2"]

    out = io.StringIO()
    assert run_recommend(redis_db.url, redis_db.prefix, "stranger", 2, out) == 0
    header, *rows = out.getvalue().splitlines()
    assert "fallback: popular items" in header
    assert rows == ["1\t7\t10", "2\ti9\t4"]


def test_run_recommend_with_nothing_published_fails(
    redis_db: RedisTarget, capsys: pytest.CaptureFixture[str]
) -> None:
    out = io.StringIO()
    assert run_recommend(redis_db.url, redis_db.prefix, "u1", 10, out) == 1
    assert out.getvalue() == ""
    assert "no list for user 'u1'" in capsys.readouterr().err


def test_run_recommend_with_redis_down_fails_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = io.StringIO()
    assert run_recommend(f"redis://127.0.0.1:{port}/0", "rs:", "u1", 10, out) == 1
    assert out.getvalue() == ""
    assert "cannot read" in capsys.readouterr().err
