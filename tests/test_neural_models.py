"""The torch-trained models (consumers/model/neural.py, tower.py, rating.py): the row-wise
Adam against torch's, what history and rating promise beyond the contract suite, and
each one from Kafka into Redis (integration)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from consumers.learner import OnlineLearner
from consumers.model.base import Batch
from consumers.model.neural import Tape
from consumers.model.optim import AdamRows, AdamSettings
from consumers.model.rating import BiasedRating, RatingConfig
from consumers.model.tower import HistoryConfig, HistoryTower
from consumers.quality import ServedLists
from consumers.settings import ConsumeSettings
from streamer.events import EntityFeatures, ViewEvent
from tests.conftest import RedisTarget
from tests.learners import Learner, meta_events, wait_for
from tests.test_end_to_end import consume_args, metric_value, produce


def test_row_adam_moves_a_dense_parameter_as_torch_adam_does() -> None:
    start = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    ours = AdamRows((3,), start, torch.device("cpu"))
    theirs = torch.nn.Parameter(start.clone())
    optimizer = torch.optim.Adam([theirs], lr=0.01)
    for step in range(4):
        grad = torch.full((5, 3), float(step + 1)) * start
        ours.step_all(grad, AdamSettings(0.01))
        theirs.grad = grad
        optimizer.step()
    torch.testing.assert_close(ours.weight, theirs.detach())


def test_a_step_moves_only_the_rows_it_read_each_once() -> None:
    table = AdamRows((2,), torch.ones(4, 2), torch.device("cpu"))
    tape = Tape()
    read = tape.rows(table, torch.tensor([1, 1, 3]))
    read.sum().backward()  # type: ignore[no-untyped-call]
    tape.step(AdamSettings(0.1))
    moved = (table.weight != 1).any(dim=1).tolist()
    assert moved == [False, True, False, True]
    torch.testing.assert_close(table.weight[1], torch.full((2,), 0.9))  # one step, not two


def _views(users: list[int], items: list[int], ratings: list[float] | None = None) -> Batch:
    size = len(users)
    return Batch(
        np.asarray(users, dtype=np.int64),
        np.asarray(items, dtype=np.int64),
        np.arange(size, dtype=np.float64),
        np.ones(size, dtype=np.float32),
        np.asarray(ratings if ratings else [np.nan] * size, dtype=np.float32),
    )


def test_history_users_are_their_last_views_and_a_new_user_has_a_vector() -> None:
    model = HistoryTower(HistoryConfig(dim=8, history_length=3, sampled_negatives=16, seed=1))
    model.items.add_many(range(20))
    old, fresh = model.users.add("old"), model.users.add("fresh")
    model.learn(_views([old] * 5, [1, 2, 3, 4, 5]))
    assert sorted(model.recent[old].tolist()) == [3, 4, 5]  # the last 3 views
    cold = model.user_vectors(np.array([fresh]))
    assert np.isfinite(cold).all() and model.table_sizes()["user"].rows == 2
    model.learn(_views([fresh], [7]))
    assert not np.allclose(model.user_vectors(np.array([fresh])), cold)  # no user row needed


def test_history_logq_counts_forget_old_views_by_their_half_life() -> None:
    model = HistoryTower(HistoryConfig(dim=8, sampled_negatives=16, frequency_half_life=4, seed=0))
    model.items.add_many(range(3))
    user = model.users.add("u")
    model.learn(_views([user] * 4, [0] * 4))
    model.learn(_views([user] * 4, [1] * 4))
    counts = model.item_counts.tolist()
    assert counts[0] == pytest.approx(2.0) and counts[1] == pytest.approx(4.0)  # 4 views: halved
    assert counts[2] == 0.0


def test_history_learns_which_items_follow_which() -> None:
    """Two tastes: users who watched items 0-4 watch 0-4, the others 5-9."""
    model = HistoryTower(HistoryConfig(dim=8, sampled_negatives=32, learning_rate=0.02, seed=0))
    model.items.add_many(range(10))
    rng = np.random.default_rng(0)
    users = model.users.add_many(range(40))
    for _ in range(60):
        who = rng.integers(0, 40, 64)
        model.learn(_views(users[who].tolist(), ((who % 2) * 5 + rng.integers(0, 5, 64)).tolist()))
    scores = model.score(users[:2], np.arange(10))
    assert scores[0, :5].mean() > scores[0, 5:].mean()
    assert scores[1, 5:].mean() > scores[1, :5].mean()


def test_history_serves_dot_product_plus_weighted_log_recent_views() -> None:
    config = HistoryConfig(dim=8, sampled_negatives=16, frequency_half_life=0, seed=0)
    model = HistoryTower(config)  # all-time counts: the log count is exact
    model.items.add_many(range(4))
    user = model.users.add("u")
    model.learn(_views([user] * 4, [0, 0, 0, 1]))
    users, items = model.user_vectors(np.array([user])), model.item_vectors(np.arange(4))
    assert users.shape == (1, 8) and users[0, -1] == 2.0  # the published width is dim
    learned = users[:, :-1] @ items[:, :-1].T
    counts = model.item_counts.numpy()
    expected = learned + 2.0 * np.log(counts + 1e-3)[None, :]
    np.testing.assert_allclose(model.score(np.array([user]), np.arange(4)), expected, rtol=1e-5)
    assert items[0, -1] > items[1, -1] > items[2, -1] == items[3, -1]


def test_history_popularity_moves_only_with_an_items_views_until_a_rebase() -> None:
    """Counts forget every view, yet an unviewed item's served coordinate stays put (the
    published vectors and search indexes of items not moved stay right); when the shared
    constant is reset, every item is reported moved."""
    config = HistoryConfig(dim=8, sampled_negatives=0, frequency_half_life=2)
    model = HistoryTower(config)  # no uniform draws: a step moves only the batch's items
    model.items.add_many(range(3))
    user = model.users.add("u")
    model.learn(_views([user, user], [0, 1]))
    before = model.item_vectors(np.array([0, 1]))[:, -1]
    moved = [model.learn(_views([user, user], [2, 2])).negatives for _ in range(5)]
    np.testing.assert_allclose(model.item_vectors(np.array([0, 1]))[:, -1], before, rtol=1e-5)
    while model.popularity_offset.item() > 0:  # ln 2 per batch: reset past 20 nats
        moved.append(model.learn(_views([user, user], [2, 2])).negatives)
    assert len(moved) < 35 and all(rows.tolist() == [2] for rows in moved[:-1])
    assert moved[-1].tolist() == [0, 1, 2]


def test_history_similar_items_ignore_popularity() -> None:
    model = HistoryTower(HistoryConfig(dim=8, sampled_negatives=4, seed=0))
    model.items.add_many(range(3))
    user = model.users.add("u")
    model.learn(_views([user] * 5, [0, 0, 0, 0, 1]))
    learned = model.item_vectors(np.arange(3))[:, :-1]
    normed = learned / np.linalg.norm(learned, axis=1, keepdims=True)
    ranking = model.similar(np.array([0]), 2)
    np.testing.assert_allclose(ranking.scores[0], normed[ranking.items[0]] @ normed[0], rtol=1e-5)


def test_history_refuses_a_negative_popularity_weight() -> None:
    with pytest.raises(ValueError, match="popularity_weight"):
        HistoryConfig(popularity_weight=-1.0)


def test_rating_predictions_move_toward_the_ratings_and_lists_follow_them() -> None:
    model = BiasedRating(RatingConfig(dim=4, learning_rate=0.05, seed=0))
    users, items = model.users.add_many(range(3)), model.items.add_many(range(4))
    for _ in range(200):
        model.learn(_views([0, 1, 2, 0], [0, 1, 2, 3], [5.0, 1.0, 5.0, 1.0]))
    predicted = model.score(users, items)
    assert predicted[0, 0] > 4.0 and predicted[1, 1] < 2.0
    fresh = model.users.add("new")
    top = model.recommend(np.array([fresh]), 4).items[0].tolist()
    assert top.index(2) < top.index(1)  # the well-rated item ranks above the badly rated


def test_the_learner_reports_prequential_rating_errors_from_before_learning() -> None:
    learner = OnlineLearner(BiasedRating(RatingConfig(dim=4, seed=0)))
    events = [ViewEvent("u", "i", 0.0, rating=4.0), ViewEvent("v", "j", 1.0)]
    learner.learn(events, ServedLists(10))
    assert learner.rating_quality.rated == 1
    assert learner.rating_quality.rmse == pytest.approx(
        4.0, abs=0.01
    )  # ~0 predicted: nothing learned
    tensors, manifest = learner.state()
    restored = OnlineLearner(BiasedRating(RatingConfig(dim=4, seed=0)))
    restored.load_state(tensors, manifest)
    assert restored.rating_quality == learner.rating_quality


def test_a_burst_of_ratings_in_one_micro_batch_sets_the_users_bias() -> None:
    """One batch moves an Adam row by about the learning rate; the bias totals take the
    whole burst in (the regression behind RMSE 1.10 at micro-batches of 512)."""
    learner = OnlineLearner(BiasedRating(RatingConfig(dim=4, seed=0, user_shrinkage=1.0)))
    others = [ViewEvent(f"o{i}", f"i{i % 10}", 0.0, rating=3.0) for i in range(40)]
    burst = [ViewEvent("fan", f"i{i}", 1.0, rating=5.0) for i in range(10)]
    learner.learn(others + burst, ServedLists(10))
    model = learner.model
    assert isinstance(model, BiasedRating)
    fan, item = model.users.row("fan"), model.items.row("i0")
    assert fan is not None and item is not None
    assert model.predict(np.array([fan]), np.array([item]))[0] > 4.0
    unknown = model.predict(np.array([-1]), np.array([-1]))[0]
    assert unknown == pytest.approx(model.mean_rating)


def test_a_new_users_rating_starts_from_users_with_the_same_features() -> None:
    config = RatingConfig(dim=4, seed=0, feature_shrinkage=1.0)
    learner = OnlineLearner(BiasedRating(config))
    for user, occupation in [("a", "critic"), ("b", "critic"), ("c", "fan"), ("d", "fan")]:
        learner.learn_features(EntityFeatures("user", user, {"occupation": occupation}))
    learner.learn_features(EntityFeatures("user", "new critic", {"occupation": "critic"}))
    learner.learn_features(EntityFeatures("user", "new fan", {"occupation": "fan"}))
    events = [
        ViewEvent(user, f"i{i}", 0.0, rating=rating)
        for user, rating in [("a", 1.0), ("b", 2.0), ("c", 5.0), ("d", 4.0)]
        for i in range(5)
    ]
    learner.learn(events, ServedLists(10))
    model = learner.model
    assert isinstance(model, BiasedRating)
    rows = np.array([model.users.row("new critic"), model.users.row("new fan")])
    critic, fan = model.predict(rows, np.array([0, 0]))
    assert critic < model.mean_rating - 0.5 and fan > model.mean_rating + 0.5
    restored = BiasedRating(config)
    restored.read_features(learner.features)
    restored.load_state(model.state())
    assert np.allclose(restored.predict(rows, np.array([0, 0])), [critic, fan])


@pytest.mark.parametrize("model", ["history", "rating"])
def test_more_than_one_worker_is_refused_for_a_model_that_does_not_share_tables(
    model: str,
) -> None:
    with pytest.raises(ValidationError, match="only mf shares its tables"):
        ConsumeSettings(model=model, workers=2, checkpoint_dir="none")  # type: ignore[arg-type]


def test_cuda_is_refused_where_there_is_none() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(ValueError, match="no CUDA device"):
        HistoryTower(HistoryConfig(device="cuda"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("kind", [HistoryTower, BiasedRating])
def test_a_model_on_cuda_learns_and_restores_on_the_cpu(kind: type) -> None:
    config_type = HistoryConfig if kind is HistoryTower else RatingConfig
    model = kind(config_type(dim=8, device="cuda", seed=0))
    model.users.add_many(range(5))
    model.items.add_many(range(10))
    model.learn(_views([0, 1, 2, 3], [1, 2, 3, 4], [5.0, 4.0, 3.0, 2.0]))
    on_cpu = kind(config_type(dim=8, seed=0))
    on_cpu.load_state(model.state())
    users = np.arange(5)
    np.testing.assert_allclose(
        on_cpu.score(users, np.arange(10)), model.score(users, np.arange(10)), rtol=1e-5
    )


@pytest.mark.integration
@pytest.mark.parametrize("model", ["history", "rating"])
def test_a_torch_model_learns_from_kafka_into_redis(
    model: str, kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, tmp_path: Path,
) -> None:  # fmt: skip
    rng = np.random.default_rng(5)
    events = [
        ViewEvent(f"u{user}", f"i{item}", float(n), rating=float(1 + (user + item) % 5))
        for n, (user, item) in enumerate(
            zip(rng.integers(0, 60, 1500), rng.integers(0, 50, 1500), strict=True)
        )
    ]
    produce(kafka_bootstrap, kafka_topic, events)
    args = consume_args(kafka_bootstrap, kafka_topic, redis_db, "--model", model)
    learner = Learner([*args, "--sampled-negatives", "64"], tmp_path / "l.log").start()
    try:
        _check_published(learner, events, model, redis_db)
    finally:
        if learner.alive():
            learner.kill()


def _check_published(
    learner: Learner, events: list[ViewEvent], model: str, redis_db: RedisTarget
) -> None:
    client, prefix = redis_db.client, redis_db.prefix
    wait_for(lambda: meta_events(client, prefix) == 1500, 120, lambda: learner.log())
    watched: dict[str, set[str]] = {}
    for event in events:
        watched.setdefault(str(event.user), set()).add(str(event.item))
    for user, seen in list(watched.items())[:10]:
        top = json.loads(client.get(f"{prefix}user:{user}:top") or b"null")
        assert top["model"] == model and top["items"] and not seen & set(top["items"])
        assert top["scores"] == sorted(top["scores"], reverse=True)
        vector = np.frombuffer(client.get(f"{prefix}user:{user}:vec") or b"", dtype="<f4")
        assert vector.shape == (32,) and np.isfinite(vector).all()
    rmse = metric_value(learner.metrics(), "recstream_rating_rmse")
    assert (rmse > 0) == (model == "rating")
    assert learner.stop() == 0
