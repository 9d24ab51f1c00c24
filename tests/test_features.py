"""Feature records end to end without services: the contract, the feature store, the
learner's ingestion of the items and users topics (dead letters, tombstones), checkpoints,
and the features `produce` and the demo publish."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.metrics import LearnerMetrics
from consumers.model.config import ModelConfig
from consumers.model.features import PADDING, FeatureStore, feature_tokens, text_words
from consumers.service import ConsumeService
from consumers.sinks.memory import MemoryStore
from streamer.datasets import open_features
from streamer.datasets.synthetic import SyntheticConfig
from streamer.events import (
    INVALID_REASONS,
    ITEMS_TOPIC,
    REASON_HEADER,
    USERS_TOPIC,
    VIEWS_TOPIC,
    EntityFeatures,
    InvalidRecord,
    ViewEvent,
    decode_features,
    encode_features,
)
from tests.learners import online

MOVIE = EntityFeatures("item", "1", {"genre": ["Comedy", "Drama"], "year": 1995}, "Toy Story")
PERSON = EntityFeatures("user", "7", {"age": 24, "gender": "m", "geo": None})


def test_a_feature_record_round_trips_and_its_key_must_be_its_id() -> None:
    assert decode_features(encode_features(MOVIE), "item", b"1") == MOVIE
    assert decode_features(encode_features(PERSON), "user") == PERSON
    assert decode_features(encode_features(MOVIE), "item", b"2") == InvalidRecord(
        "key_mismatch", "record key is not the item id"
    )


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"", "empty"),
        (b"[1]", "not_object"),
        (b'{"features": {}}', "missing_field"),
        (b'{"user": "7"}', "unknown_field"),  # a user's record on the items topic
        (b'{"item": "1", "director": "x"}', "unknown_field"),
        (b'{"item": true}', "bad_id"),
        (b'{"item": "1", "features": []}', "bad_features"),
        (b'{"item": "1", "features": {"genre": {"a": 1}}}', "bad_features"),
        (b'{"item": "1", "features": {"genre": [[1]]}}', "bad_features"),
        (b'{"item": "1", "features": {"": 1}}', "bad_features"),
        (b'{"item": "1", "text": 3}', "bad_text"),
        (b'{"item": "1", "text": "' + b"x" * 5000 + b'"}', "bad_text"),
    ],
)
def test_a_bad_feature_record_gets_a_bounded_reason(value: bytes, reason: str) -> None:
    decoded = decode_features(value, "item")
    assert isinstance(decoded, InvalidRecord) and decoded.reason == reason
    assert reason in INVALID_REASONS


def test_features_become_tokens_numbers_in_buckets_and_text_hashed_words() -> None:
    tokens = feature_tokens({"genre": ["Comedy", "Comedy", 3], "year": 1995, "x": None})
    assert tokens == ["genre=Comedy", "genre=0", "year=1990"]
    assert feature_tokens({"kids": True}) == ["kids=true"]
    words = text_words("Toy Story, toy STORY (1995)")
    assert words.tolist()[:2] == words.tolist()[2:4] and words.size == 5
    assert (words > PADDING).all()


def test_the_store_replaces_an_entitys_features_whole_and_restores_from_its_state() -> None:
    store = FeatureStore()
    store.update(MOVIE)
    store.update(PERSON)
    store.update(EntityFeatures("item", "1", {"genre": ["Drama"]}, "Toy Story 2"))
    store.update(EntityFeatures("item", 2, {"year": 2001}))
    drama = store.vocabulary.row("genre=Drama")
    tokens = store.tokens("item", ["1", "2", "unknown"])
    assert tokens.shape == (3, 1) and tokens[0, 0] == drama and tokens[2, 0] == PADDING
    assert store.tokens("user", ["7"]).shape == (1, 2)

    restored = FeatureStore()
    restored.load_state(store.state())
    assert restored.ids("item") == ["1", 2] and restored.ids("user") == ["7"]
    np.testing.assert_array_equal(restored.tokens("item", ["1", "2"]), tokens[:2])
    np.testing.assert_array_equal(restored.words(["1"]), store.words(["1"]))
    restored.forget("item", "1")
    assert restored.ids("item") == [2] and restored.words(["1"])[0, 0] == PADDING
    empty = FeatureStore()
    empty.load_state({})  # a checkpoint written before features
    assert len(empty) == 0


def service_on(log: MemoryEventLog, directory: Path | None = None) -> ConsumeService:
    return ConsumeService(
        MemoryEventSource(log, [VIEWS_TOPIC, USERS_TOPIC, ITEMS_TOPIC], "learners"),
        *online(ModelConfig(dim=8, seed=1), MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=50,
        max_wait_s=1e9,
        checkpoints=None
        if directory is None
        else LocalCheckpoints(CheckpointPolicy(directory, 10_000, None)),
        users_topic=USERS_TOPIC,
        items_topic=ITEMS_TOPIC,
    )


def drain(service: ConsumeService) -> None:
    while service.step():
        pass
    service.shutdown()


def test_the_learner_keeps_features_dead_letters_bad_ones_and_forgets_on_tombstones(
    tmp_path: Path,
) -> None:
    log = MemoryEventLog(partitions=1)
    log.send_features(MOVIE, ITEMS_TOPIC)
    log.send_features(PERSON, USERS_TOPIC)
    log.append(ITEMS_TOPIC, b"3", b'{"item": "3", "features": {"genre": {}}}')
    log.append(USERS_TOPIC, b"8", b'{"item": "8"}')  # an item's record on the users topic
    log.send(ViewEvent("7", "1", 1.0), VIEWS_TOPIC)
    service = service_on(log, tmp_path)
    drain(service)
    features = service.learner.features
    assert features.ids("item") == ["1"] and features.ids("user") == ["7"]
    assert service.learner.events == 1
    reasons = {
        (record.topic, log.headers[(record.topic, 0, record.offset)][REASON_HEADER])
        for topic in (ITEMS_TOPIC, USERS_TOPIC)
        for record in log.partitions_of(topic + ".dlq")[0]
    }
    assert reasons == {
        (ITEMS_TOPIC + ".dlq", "bad_features"),
        (USERS_TOPIC + ".dlq", "unknown_field"),
    }
    events = service.metrics.events
    assert events.labels("item_features")._value.get() == 1
    assert events.labels("user_features")._value.get() == 1

    restored = service_on(log, tmp_path)
    assert restored.restore()
    assert restored.learner.features.ids("item") == ["1"]  # the checkpoint holds them
    log.append(ITEMS_TOPIC, b"1", None)
    log.append(USERS_TOPIC, b"7", None)
    drain(restored)
    assert len(restored.learner.features) == 0
    assert restored.learner.model.users.row("7") is None


def test_the_synthetic_source_has_a_valid_feature_record_for_every_item_and_user() -> None:
    config = SyntheticConfig(n_users=30, n_items=20, events=100)
    records = list(open_features("synthetic", n_users=30, n_items=20, events=100))
    assert [r.kind for r in records] == ["item"] * config.n_items + ["user"] * config.n_users
    for record in records:
        assert decode_features(encode_features(record), record.kind) == record
