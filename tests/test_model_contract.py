"""The suite every registered model passes (consumers/model/base.py `Model`): finite
after learning, an exact checkpoint round trip, determinism under a seed, and the shapes
publishing relies on."""

from __future__ import annotations

from typing import get_args

import numpy as np
import pytest

from consumers.model.base import Batch, Config, Model
from consumers.model.factory import MODELS, ModelName, make_config, make_model
from consumers.settings import TrainingSettings


def config(name: ModelName) -> Config:
    return make_config(name, {"dim": 8, "top_n": 5, "seed": 3})


USERS, ITEMS = 12, 30


def batches(seed: int = 0, count: int = 6, size: int = 40) -> list[Batch]:
    rng = np.random.default_rng(seed)
    return [
        Batch(
            rng.integers(0, USERS, size),
            rng.integers(0, ITEMS, size),
            np.arange(size, dtype=np.float64),
            rng.uniform(0.5, 2.0, size).astype(np.float32),
            np.where(rng.random(size) < 0.5, np.nan, rng.uniform(1, 5, size)).astype(np.float32),
        )
        for _ in range(count)
    ]


def trained(name: ModelName, learned: list[Batch]) -> Model:
    model = make_model(name, config(name))
    model.users.add_many(f"u{n}" for n in range(USERS))
    model.items.add_many(range(ITEMS))
    for batch in learned:
        model.learn(batch)
    return model


def all_rows(count: int) -> np.ndarray:
    return np.arange(count, dtype=np.int64)


@pytest.fixture(params=sorted(MODELS))
def name(request: pytest.FixtureRequest) -> ModelName:
    chosen: ModelName = request.param
    return chosen


def test_learning_gives_a_finite_loss_and_leaves_every_row_finite(name: ModelName) -> None:
    model = make_model(name, config(name))
    model.users.add_many(f"u{n}" for n in range(USERS))
    model.items.add_many(range(ITEMS))
    for batch in batches():
        step = model.learn(batch)
        assert np.isfinite(step.loss)
        assert step.learned.dtype == np.bool_ and step.learned.shape == batch.users.shape
        assert step.negatives.dtype == np.int64
        assert ((step.negatives >= 0) & (step.negatives < ITEMS)).all()
    assert np.isfinite(model.user_vectors(all_rows(USERS))).all()
    assert np.isfinite(model.item_vectors(all_rows(ITEMS))).all()


def test_a_checkpoint_restores_identical_scores_and_learning(name: ModelName) -> None:
    first = trained(name, batches())
    first.forget_user("u3")
    restored = make_model(name, config(name))
    restored.load_state(first.state())
    users, items = all_rows(USERS), all_rows(ITEMS)
    np.testing.assert_array_equal(restored.score(users, items), first.score(users, items))
    np.testing.assert_array_equal(
        restored.recommend(users, 5).items, first.recommend(users, 5).items
    )
    assert restored.users.row("u3") is None and restored.items.raws(range(ITEMS)) == list(
        range(ITEMS)
    )
    for model in (first, restored):  # the random state came back too
        model.learn(batches(seed=1, count=1)[0])
    np.testing.assert_array_equal(restored.score(users, items), first.score(users, items))


def test_the_same_seed_and_batches_give_the_same_tables(name: ModelName) -> None:
    first, second = trained(name, batches()), trained(name, batches())
    users, items = all_rows(USERS), all_rows(ITEMS)
    np.testing.assert_array_equal(first.user_vectors(users), second.user_vectors(users))
    np.testing.assert_array_equal(first.item_vectors(items), second.item_vectors(items))


def test_publishing_shapes_and_dtypes(name: ModelName) -> None:
    model = trained(name, batches())
    users, items = np.array([0, 5, 7]), np.array([1, 2])
    dim = model.config.dim
    assert model.user_vectors(users).shape == (3, dim)
    assert model.user_vectors(users).dtype == np.float32
    assert model.item_vectors(items).shape == (2, dim)
    scores = model.score(users, all_rows(ITEMS))
    assert scores.shape == (3, ITEMS) and scores.dtype == np.float32
    for ranking, queries in ((model.recommend(users, 5), 3), (model.similar(items, 5), 2)):
        assert ranking.scores.shape == ranking.items.shape == (queries, 5)
        assert ranking.scores.dtype == np.float32 and ranking.items.dtype == np.int64
        finite = ranking.scores[np.isfinite(ranking.scores)]
        assert (np.diff(ranking.scores, axis=1)[np.isfinite(ranking.scores[:, 1:])] <= 0).all()
        assert finite.size > 0
    similar = model.similar(items, 5)
    assert not (similar.items == items[:, None]).any()  # an item is not similar to itself
    assert model.name and set(model.table_sizes()) == {"user", "item"}


def test_recommend_excludes_watched_items_and_marks_empty_slots(name: ModelName) -> None:
    model = make_model(name, config(name))
    user = model.users.add("u")
    rows = model.items.add_many(range(10))
    model.learn(Batch.of_views(np.full(7, user), rows[:7]))
    ranking = model.recommend(np.array([user]), 5)
    kept = np.isfinite(ranking.scores[0])
    assert kept.tolist() == [True, True, True, False, False]  # only 3 unwatched items
    assert set(ranking.items[0, kept].tolist()) == {7, 8, 9}


def test_every_model_name_is_registered_and_the_default_is_mf() -> None:
    assert set(get_args(ModelName)) == set(MODELS)
    assert TrainingSettings().model == "mf"
    assert make_model("mf", config("mf")).name == "mf-bpr"
