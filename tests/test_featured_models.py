"""The features and content models (consumers/model/featured.py): what they promise beyond
the contract suite (cold items and users have vectors and lists, a restore rebuilds the
feature rows), and each one from Kafka into Redis with the feature topics (integration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from consumers.learner import OnlineLearner
from consumers.model.factory import ModelName, make_config, make_model
from consumers.quality import ServedLists
from streamer.datasets import open_dataset, open_features
from streamer.events import EntityFeatures, ViewEvent
from streamer.producer import ViewProducer
from tests.conftest import RedisTarget
from tests.learners import Learner, meta_events, wait_for
from tests.test_end_to_end import consume_args, produce

FEATURED: tuple[ModelName, ...] = ("features", "content")
ITEM_FEATURED: tuple[ModelName, ...] = (*FEATURED, "history")
SMALL = {"n_users": 60, "n_items": 40, "events": 1500, "seed": 5}


def learner_for(name: ModelName) -> OnlineLearner:
    """`name` at dim 16, the history tower with its item features on."""
    values = {"dim": 16, "item_features": True}
    return OnlineLearner(make_model(name, make_config(name, values)))


def trained(name: ModelName) -> OnlineLearner:
    """A model that read the synthetic features, then learned every view."""
    learner = learner_for(name)
    for record in open_features("synthetic", **SMALL):
        learner.learn_features(record)
    views = list(open_dataset("synthetic", **SMALL))
    for start in range(0, len(views), 256):
        learner.learn(views[start : start + 256], ServedLists(10))
    return learner


@pytest.mark.parametrize("name", FEATURED)
def test_an_item_and_a_user_with_features_and_no_views_have_vectors_and_lists(
    name: ModelName,
) -> None:
    learner = trained(name)
    model = learner.model
    new = EntityFeatures("item", "brand-new", {"genre": ["g1"]}, "topic1 flavour3")
    row = learner.learn_features(new)
    assert row is not None and model.items.row("brand-new") == row
    assert np.abs(model.item_vectors(np.array([row]))).sum() > 0
    similar = model.similar(np.array([row]), 5)
    assert np.isfinite(similar.scores).all() and row not in similar.items[0]
    newcomer = learner.learn_features(EntityFeatures("user", "newcomer", {"segment": "s1"}))
    assert newcomer is not None
    top = model.recommend(np.array([newcomer]), 5)
    assert np.isfinite(top.scores).all()
    assert learner.forget_features("item", "nobody") is None  # no features, no row


def test_the_history_tower_gives_an_item_with_features_and_no_views_a_vector() -> None:
    learner = trained("history")
    model = learner.model
    row = learner.learn_features(EntityFeatures("item", "brand-new", {"genre": ["g1"]}))
    assert row is not None and model.items.row("brand-new") == row
    vector = model.item_vectors(np.array([row]))[0]
    genre_mates = [
        model.items.row(record.id)
        for record in open_features("synthetic", **SMALL)
        if record.kind == "item" and record.features.get("genre") == ["g1"]
    ]
    others = np.setdiff1d(np.arange(len(model.items)), [*genre_mates, row])
    vectors = model.item_vectors(np.arange(len(model.items)))
    closer = vectors[genre_mates] @ vector
    assert closer.mean() > (vectors[others] @ vector).mean()  # its genre's items, not noise
    assert learner.learn_features(EntityFeatures("item", "nothing-known", {})) is None
    assert learner.learn_features(EntityFeatures("user", "newcomer", {"segment": "s1"})) is None


@pytest.mark.parametrize("name", ITEM_FEATURED)
def test_a_restored_model_reads_the_restored_features(name: ModelName) -> None:
    learner = learner_for(name)
    for record in open_features("synthetic", **SMALL):
        learner.learn_features(record)
    views = list(open_dataset("synthetic", **SMALL))
    learner.learn(views[:500], ServedLists(10))
    tensors, manifest = learner.state()
    restored = learner_for(name)
    restored.load_state(tensors, manifest)
    rows = np.arange(len(learner.model.items))
    np.testing.assert_array_equal(
        restored.model.item_vectors(rows), learner.model.item_vectors(rows)
    )


@pytest.mark.parametrize("name", FEATURED)
def test_a_users_features_shape_their_vector_only_until_their_first_learned_view(
    name: ModelName,
) -> None:
    """A new user's vector carries their tokens' cold-start part (learned on other new
    users' views); once a view of theirs is learned they are their id row alone, so
    the tokens never blur the users with a history (they cost HR@10 on validation)."""
    learner = learner_for(name)
    model = learner.model
    for record in open_features("synthetic", **SMALL):
        learner.learn_features(record)
    views = list(open_dataset("synthetic", **SMALL))
    for start in range(0, len(views), 256):
        learner.learn(views[start : start + 256], ServedLists(10))
    cold = slice(model.config.dim - model.config.cold_width, None)
    newcomer = learner.learn_features(EntityFeatures("user", "newcomer", {"segment": "s1"}))
    twin = learner.learn_features(EntityFeatures("user", "twin", {"segment": "s1"}))
    assert newcomer is not None and twin is not None
    before = model.user_vectors(np.array([newcomer, twin]))
    assert np.abs(before[0, cold]).sum() > 0
    np.testing.assert_array_equal(before[0, cold], before[1, cold])
    learner.learn([ViewEvent("newcomer", views[0].item, views[-1].ts + 1)], ServedLists(10))
    after = model.user_vectors(np.array([newcomer]))
    np.testing.assert_array_equal(after[0, cold], np.zeros(model.config.cold_width))


@pytest.mark.parametrize("name", FEATURED)
def test_an_item_nobody_viewed_is_never_a_negative_so_its_first_views_find_it(
    name: ModelName,
) -> None:
    """Regression: every item with features had a row and was drawn as a uniform negative
    from the start, so an item's bias was far below the known items' by its first view."""
    learner = learner_for(name)
    model = learner.model
    for record in open_features("synthetic", **SMALL):
        learner.learn_features(record)
    unseen = learner.learn_features(EntityFeatures("item", "unseen", {"genre": ["g1"]}, "t"))
    views = list(open_dataset("synthetic", **SMALL))
    for start in range(0, len(views), 256):
        learner.learn(views[start : start + 256], ServedLists(10))
    assert unseen is not None
    np.testing.assert_array_equal(model.item_bias.weight[unseen].numpy(), [0.0])


@pytest.mark.integration
@pytest.mark.parametrize("model", FEATURED)
def test_a_featured_model_learns_from_kafka_and_the_feature_topics_into_redis(
    model: str, kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, tmp_path: Path,
) -> None:  # fmt: skip
    items_topic, users_topic = f"{kafka_topic}.items", f"{kafka_topic}.users"
    records = [*open_features("synthetic", **SMALL)]
    records.append(EntityFeatures("item", "unseen", {"genre": ["g2"]}, "topic2 flavour7"))
    with ViewProducer(kafka_bootstrap, topic=kafka_topic) as producer:
        for record in records:
            producer.send_features(record, items_topic if record.kind == "item" else users_topic)
        producer.flush()
    events = [ViewEvent(e.user, e.item, e.ts) for e in open_dataset("synthetic", **SMALL)]
    produce(kafka_bootstrap, kafka_topic, events)
    args = consume_args(kafka_bootstrap, kafka_topic, redis_db, "--model", model)
    args[args.index("--users-topic") + 1] = users_topic
    args[args.index("--items-topic") + 1] = items_topic
    learner = Learner(args, tmp_path / "l.log").start()
    client, prefix = redis_db.client, redis_db.prefix
    try:
        wait_for(lambda: meta_events(client, prefix) == len(events), 120, learner.log)
        wait_for(lambda: client.get(f"{prefix}item:unseen:similar") is not None, 30, learner.log)
        similar = json.loads(client.get(f"{prefix}item:unseen:similar") or b"null")
        assert similar["model"] == model and similar["items"]
        vector = np.frombuffer(client.get(f"{prefix}item:unseen:vec") or b"", dtype="<f4")
        assert vector.shape == (32,) and np.isfinite(vector).all()
        watched = {str(e.item) for e in events if e.user == events[0].user}
        top = json.loads(client.get(f"{prefix}user:{events[0].user}:top") or b"null")
        assert top["items"] and not watched & set(top["items"])
        assert learner.stop() == 0
    finally:
        if learner.alive():
            learner.kill()
