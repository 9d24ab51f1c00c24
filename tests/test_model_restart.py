"""A learner service restarted from its checkpoint files goes on exactly as an unbroken
run, for the models that keep state the in-memory round trip of the contract suite does
not cover (per-user states, a model inside a model)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from prometheus_client import CollectorRegistry

from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.learner import OnlineLearner
from consumers.metrics import LearnerMetrics
from consumers.model.factory import ModelName, make_config, make_model
from consumers.publisher import Publisher
from consumers.service import ConsumeService
from consumers.sinks.memory import MemoryStore
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import USERS_TOPIC, VIEWS_TOPIC
from tests.test_checkpoint import drain


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """As in every worker (`TrainingSettings.pin_threads`): with more threads, torch's
    scatter-adds of a batch's gradients may sum in another order (1e-9 apart)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build(name: ModelName, log: MemoryEventLog, directory: Path, group: str) -> ConsumeService:
    config = make_config(name, {"dim": 16, "sampled_negatives": 32, "seed": 3})
    learner = OnlineLearner(make_model(name, config))
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


@pytest.mark.parametrize("name", ["mf", "history", "rating", "sequence", "mlp"])
def test_a_restart_from_checkpoint_files_goes_on_exactly_as_an_unbroken_run(
    name: ModelName, tmp_path: Path
) -> None:
    events = list(synthetic_views(SyntheticConfig(n_users=50, n_items=200, events=900, seed=2)))
    log = MemoryEventLog(partitions=1)
    for event in events[:650]:
        log.send(event, VIEWS_TOPIC)
    drain(build(name, log, tmp_path / "a", "learners"))  # checkpoints at 300, 600; a crash
    for event in events[650:]:
        log.send(event, VIEWS_TOPIC)
    restored = build(name, log, tmp_path / "a", "learners")
    assert restored.restore()
    drain(restored)
    restored.shutdown()
    unbroken = build(name, log, tmp_path / "b", "unbroken")
    drain(unbroken)
    unbroken.shutdown()

    assert restored.learner.events == unbroken.learner.events == 900
    ours, theirs = restored.learner.model.state(), unbroken.learner.model.state()
    assert set(ours) == set(theirs)
    for key, tensor in ours.items():
        assert torch.equal(tensor, theirs[key]), key
