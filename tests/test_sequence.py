"""The sequence model's own invariants (the shared ones are tests/test_model_contract.py's):
batch waves and a user state advanced per view (its restart: tests/test_model_restart.py);
sequence and mlp on CUDA (skipped without a device)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from consumers.model.base import Batch
from consumers.model.factory import ModelName, make_config, make_model
from consumers.model.sequence import SequenceConfig, SequenceModel, waves


def test_waves_number_each_users_views_and_link_each_to_the_previous() -> None:
    wave, previous = waves(np.array([7, 3, 7, 7, 3, 5]))
    assert wave.tolist() == [0, 0, 1, 2, 1, 0]
    assert previous.tolist() == [-1, -1, 0, 2, 1, -1]


def rows(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


def test_a_users_state_is_advanced_by_each_view_and_a_new_user_has_none() -> None:
    model = SequenceModel(SequenceConfig(dim=8, sampled_negatives=4))
    model.users.add_many(["a", "b"])
    model.items.add_many(["x", "y", "z"])
    model.learn(Batch.of_views(rows(0, 0), rows(0, 1)))
    assert model.last.tolist() == [1, -1]
    assert not model.user_vectors(rows(1)).any()  # no view: no vector
    before = model.user_vectors(rows(0))
    model.learn(Batch.of_views(rows(0), rows(2)))
    assert model.last.tolist() == [2, -1] and model.hidden[0].any()
    assert not np.allclose(before, model.user_vectors(rows(0)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("name", ["sequence", "mlp"])
def test_on_cuda_a_model_learns_and_ranks_as_on_cpu(name: ModelName) -> None:
    rng = np.random.default_rng(0)
    views = [Batch.of_views(rng.integers(0, 10, 50), rng.integers(0, 30, 50)) for _ in range(4)]
    rankings = []
    for device in ("cpu", "cuda"):
        model = make_model(name, make_config(name, {"dim": 8, "device": device}))
        model.users.add_many(range(10))
        model.items.add_many(range(30))
        for batch in views:
            assert np.isfinite(model.learn(batch).loss)
        rankings.append(model.recommend(np.arange(10, dtype=np.int64), 5))
    np.testing.assert_allclose(rankings[0].scores, rankings[1].scores, rtol=1e-3, atol=1e-4)
