"""One suite for every recommendation store: in-memory and real Redis."""

from __future__ import annotations

import json

import numpy as np
import pytest

from consumers.sinks.base import RecommendationStore, StoreUnavailable
from consumers.sinks.memory import MemoryStore
from consumers.sinks.redis import RedisStore
from consumers.sinks.schema import (
    BatchEncoder,
    Keys,
    Publication,
    RankedList,
    RankedRows,
    Stamp,
    VectorRows,
    decode_vector,
    string_writes,
)
from streamer.events import Id
from tests.conftest import RedisTarget
from tests.learners import wait_for


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> RecommendationStore:
    if request.param == "memory":
        return MemoryStore("t:")
    target = request.getfixturevalue("redis_db")
    return RedisStore(target.client, "t:")


def publication(version: int = 1) -> Publication:
    return Publication(
        model="mf-bpr",
        version=version,
        updated_at=1700000000.25,
        user_tops={"u1": RankedList(["i1", 7], [2.5, 1.0]), 42: RankedList([], [])},
        user_vectors={"u1": np.array([1.0, -2.0, 0.5], dtype=np.float32)},
        item_vectors={7: np.array([0.25, 0.0, 3.0], dtype=np.float32)},
        item_similar={7: RankedList(["i1"], [0.9])},
        popular=RankedList([7, "i1"], [10.0, 4.0]),
        meta={"model": "mf-bpr", "dim": 3, "version": version, "events": 12},
    )


def test_publication_writes_the_documented_keys(store: RecommendationStore) -> None:
    store.publish(publication())
    top = json.loads(store.get("t:user:u1:top") or b"null")
    assert top == {
        "items": ["i1", 7],
        "scores": [2.5, 1.0],
        "model": "mf-bpr",
        "version": 1,
        "updated_at": 1700000000.25,
    }
    assert json.loads(store.get("t:user:42:top") or b"null")["items"] == []
    vector = store.get("t:user:u1:vec")
    assert vector is not None
    assert decode_vector(vector).tolist() == [1.0, -2.0, 0.5]
    assert np.frombuffer(store.get("t:item:7:vec") or b"", dtype="<f4").tolist() == [0.25, 0.0, 3.0]
    assert json.loads(store.get("t:item:7:similar") or b"null")["items"] == ["i1"]
    assert json.loads(store.get("t:popular") or b"null")["items"] == [7, "i1"]
    assert store.get_hash("t:meta") == {
        "model": "mf-bpr",
        "dim": "3",
        "version": "1",
        "events": "12",
    }


def test_a_new_publication_replaces_lists_and_updates_meta(store: RecommendationStore) -> None:
    store.publish(publication(1))
    store.publish(
        Publication("mf-bpr", 2, 1.0, user_tops={"u1": RankedList([9], [0.1])}, meta={"version": 2})
    )
    assert json.loads(store.get("t:user:u1:top") or b"null")["items"] == [9]
    assert store.get_hash("t:meta")["version"] == "2"
    assert store.get_hash("t:meta")["events"] == "12"


def test_delete_removes_keys(store: RecommendationStore) -> None:
    store.publish(publication())
    keys = Keys("t:")
    store.delete([keys.user_top("u1"), keys.user_vector("u1"), keys.meta])
    assert store.get("t:user:u1:top") is None
    assert store.get("t:user:u1:vec") is None
    assert store.get_hash("t:meta") == {}
    assert store.get("t:popular") is not None


def test_unreachable_redis_raises_store_unavailable() -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = RedisStore.from_url(f"redis://127.0.0.1:{port}/0")
    with pytest.raises(StoreUnavailable):
        store.publish(publication())


def test_the_owner_lease_has_one_holder_until_released_or_replaced(
    store: RecommendationStore,
) -> None:
    assert store.hold_owner("a", 30) is None
    assert store.hold_owner("a", 30) is None  # renewed
    assert store.hold_owner("b", 30) == "a"
    store.release_owner("b")  # not b's to release
    assert store.hold_owner("b", 30) == "a"
    assert store.hold_owner("b", 30, replacing="a") is None  # a is known to be dead
    assert store.hold_owner("a", 30) == "b"
    store.release_owner("b")
    assert store.hold_owner("a", 30) is None


def test_an_owner_lease_that_is_not_renewed_lapses(store: RecommendationStore) -> None:
    assert store.hold_owner("a", 0.2) is None
    assert store.hold_owner("b", 30) == "a"
    wait_for(lambda: store.hold_owner("b", 30) is None, 5, "a's lease to lapse")
    assert store.hold_owner("a", 30) == "b"


def test_a_publish_after_redis_closed_the_connection_goes_through(redis_db: RedisTarget) -> None:
    store = RedisStore(redis_db.client, "t:")
    store.publish(publication(1))
    # Redis drops every other client (as a restart or an idle timeout would).
    redis_db.client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    store.publish(publication(2))
    assert json.loads(store.get("t:user:u1:top") or b"null")["version"] == 2


def test_every_key_holds_the_bytes_encoded_for_it(store: RecommendationStore) -> None:
    ids: list[Id] = ["ü☃", 7, "a b\r\n$3"]
    encoder = BatchEncoder(store.keys, lambda rows: [ids[row] for row in rows])
    scores, items = np.array([[2.5, 1.0], [0.5, -np.inf]], np.float32), np.array([[1, 2], [0, -1]])
    encoded = encoder.strings(
        Stamp("mf-bpr", 3, 1.5),
        RankedRows(ids[:2], scores, items),
        VectorRows(ids[:2], np.ones((2, 3), np.float32)),
        VectorRows(ids[2:], np.zeros((1, 3), np.float32)),
        RankedRows(ids[2:], scores[:1], items[:1]),
    )
    published = Publication("mf-bpr", 3, 1.5, popular=RankedList([7], [1.0]), encoded=encoded)
    store.publish(published)
    writes = string_writes(published, store.keys)
    assert len(writes) == 7
    assert {key: store.get(key) for key in writes} == writes
