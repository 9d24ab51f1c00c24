"""The sequence model's own invariants (the shared ones are tests/test_model_contract.py's):
batch waves, a user state advanced per view, and a restart through checkpoint files that
goes on exactly as an unbroken run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.learner import OnlineLearner
from consumers.metrics import LearnerMetrics
from consumers.model.base import Batch
from consumers.model.sequence import SequenceConfig, SequenceModel, waves
from consumers.publisher import Publisher
from consumers.service import ConsumeService
from consumers.sinks.memory import MemoryStore
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import USERS_TOPIC, VIEWS_TOPIC


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


def build(log: MemoryEventLog, directory: Path, group: str) -> ConsumeService:
    learner = OnlineLearner(SequenceModel(SequenceConfig(dim=16, sampled_negatives=32, seed=3)))
    return ConsumeService(
        MemoryEventSource(log, [VIEWS_TOPIC, USERS_TOPIC], group),
        learner,
        Publisher(learner, MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=100,
        max_wait_s=1e9,
        checkpoints=LocalCheckpoints(CheckpointPolicy(directory, 300, None)),
        users_topic=USERS_TOPIC,
    )


def drain(service: ConsumeService) -> None:
    while service.step():
        pass


def test_a_restart_from_checkpoint_files_goes_on_exactly_as_an_unbroken_run(
    tmp_path: Path,
) -> None:
    events = list(synthetic_views(SyntheticConfig(n_users=50, n_items=40, events=900, seed=2)))
    log = MemoryEventLog(partitions=1)
    for event in events[:650]:
        log.send(event, VIEWS_TOPIC)
    drain(build(log, tmp_path / "a", "learners"))  # checkpoints at 300 and 600, then a crash
    for event in events[650:]:
        log.send(event, VIEWS_TOPIC)
    restored = build(log, tmp_path / "a", "learners")
    assert restored.restore()
    drain(restored)
    restored.shutdown()
    unbroken = build(log, tmp_path / "b", "unbroken")
    drain(unbroken)
    unbroken.shutdown()

    ours, theirs = restored.learner.model, unbroken.learner.model
    assert isinstance(ours, SequenceModel) and isinstance(theirs, SequenceModel)
    assert restored.learner.events == unbroken.learner.events == 900
    torch.testing.assert_close(ours.hidden, theirs.hidden, rtol=0, atol=0)
    assert torch.equal(ours.last, theirs.last)
    torch.testing.assert_close(ours.embeddings.weight, theirs.embeddings.weight, rtol=0, atol=0)
