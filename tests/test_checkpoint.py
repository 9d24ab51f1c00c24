"""Checkpoints: atomic, verified, the previous one used when the newest is damaged; and a
learner restored from one continues exactly as if it had never stopped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from prometheus_client import CollectorRegistry

from consumers.checkpoint import latest_checkpoint, read_checkpoint, staging_dir, write_checkpoint
from consumers.host_checkpoint import seal_host, stage_worker, worker_state
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.metrics import LearnerMetrics
from consumers.model.config import ModelConfig
from consumers.model.history import History
from consumers.service import CheckpointPolicy, LearnerService, LocalCheckpoints
from consumers.sinks.memory import MemoryStore
from streamer.events import USERS_TOPIC, VIEWS_TOPIC, ViewEvent
from streamer.sources.synthetic import SyntheticConfig, synthetic_views
from tests.learners import online


def test_write_then_read_round_trips_and_keeps_the_newest(tmp_path: Path) -> None:
    for step in range(5):
        write_checkpoint(tmp_path, {"w": torch.full((2, 3), float(step))}, {"step": step}, keep=3)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-000000000003", "ckpt-000000000004", "ckpt-000000000005"]
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.manifest["step"] == 4
    assert torch.equal(latest.tensors["w"], torch.full((2, 3), 4.0))


def test_a_corrupt_or_partial_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    write_checkpoint(tmp_path, {"w": torch.zeros(4)}, {"step": 1})
    newest = write_checkpoint(tmp_path, {"w": torch.ones(4)}, {"step": 2})
    tensors = newest / "tensors.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-3] + b"xyz")
    latest = latest_checkpoint(tmp_path)
    assert latest is not None and latest.manifest["step"] == 1
    (newest / "manifest.json").unlink()
    assert latest_checkpoint(tmp_path) is not None
    (tmp_path / ".tmp-ckpt-000000000003").mkdir()  # a writer that died mid-way
    third = write_checkpoint(tmp_path, {"w": torch.ones(1)}, {"step": 3})
    assert read_checkpoint(third).manifest["step"] == 3
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_manifest_of_another_format_is_refused(tmp_path: Path) -> None:
    path = write_checkpoint(tmp_path, {"w": torch.zeros(1)}, {})
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(dict(manifest, format=99)))
    assert latest_checkpoint(tmp_path) is None


def build(log: MemoryEventLog, directory: Path, group: str = "learners") -> LearnerService:
    return LearnerService(
        MemoryEventSource(log, [VIEWS_TOPIC, USERS_TOPIC], group),
        *online(ModelConfig(dim=16, seed=3), MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=100,
        max_wait_s=1e9,
        checkpoints=LocalCheckpoints(CheckpointPolicy(directory, 300, None)),
        users_topic=USERS_TOPIC,
    )


def drain(service: LearnerService) -> None:
    while service.step():
        pass


def test_a_restored_learner_applies_every_event_exactly_once(tmp_path: Path) -> None:
    """Crash after some checkpoints, restore, go on: the same tables as an unbroken run."""
    events = list(synthetic_views(SyntheticConfig(n_users=80, n_items=60, events=2000, seed=2)))
    log = MemoryEventLog(partitions=1)
    for event in events[:1250]:
        log.send(event, VIEWS_TOPIC)
    log.append(USERS_TOPIC, str(events[0].user).encode(), None)  # forget a user
    crashed = build(log, tmp_path / "a")
    drain(crashed)  # 1,251 records: checkpoints at 300, 600, 900, 1200; 51 lost in the crash
    assert sum(crashed.applied.values()) == 1200  # 51 still buffered

    for event in events[1250:]:
        log.send(event, VIEWS_TOPIC)
    restored = build(log, tmp_path / "a")
    assert restored.restore()
    assert sum(restored.applied.values()) == 1200  # the newest checkpoint
    drain(restored)
    restored.shutdown()

    unbroken = build(log, tmp_path / "b", group="unbroken")
    drain(unbroken)
    unbroken.shutdown()

    for service in (restored, unbroken):
        assert service.applied == {(VIEWS_TOPIC, 0): 2000, (USERS_TOPIC, 0): 1}
        assert service.learner.events == 2000
    for name in ("user_table", "item_table"):
        torch.testing.assert_close(
            getattr(restored.learner.model, name).weight,
            getattr(unbroken.learner.model, name).weight,
        )
    assert log.committed[("learners", VIEWS_TOPIC, 0)] == 2000


def test_a_forgotten_user_stays_forgotten_across_a_restart(tmp_path: Path) -> None:
    log = MemoryEventLog(partitions=1)
    service = build(log, tmp_path)
    for user, item in [("gone", 1), ("gone", 2), ("kept", 1), ("kept", 3)]:
        log.send(ViewEvent(user, item, 1.0), VIEWS_TOPIC)
    drain(service)
    service.shutdown()  # learns the part batch it holds, checkpoints
    store = service.publisher.store
    assert store.get("rs:user:gone:top") and store.get("rs:user:gone:vec")
    log.append(USERS_TOPIC, b"gone", None)
    drain(service)
    service.shutdown()
    assert store.get("rs:user:gone:top") is None and store.get("rs:user:gone:vec") is None
    assert store.get("rs:user:kept:top") is not None
    assert service.learner.model.users.row("gone") is None

    restored = build(log, tmp_path)
    assert restored.restore()
    model = restored.learner.model
    assert model.users.row("gone") is None and model.users.row("kept") is not None
    assert not model.user_vectors(np.array([0])).any()  # "gone" had row 0: its vector is wiped
    assert model.history.items(0).size == 0


def test_a_users_history_forgotten_by_its_worker_is_not_brought_back_by_another_copy(
    tmp_path: Path,
) -> None:
    """Only a user's own worker forgets them; the copy of their history another worker
    restored earlier must not come back when the parts are united, for any N."""
    pair = online(ModelConfig(dim=8, seed=1), MemoryStore())
    pair.process([ViewEvent("gone", 1, 1.0), ViewEvent("gone", 2, 1.0)])
    pair.process([ViewEvent("kept", 1, 1.0)])
    stale, _ = pair.state()  # what another worker holds
    pair.publisher.forget_user("gone", pair.learner.forget_user("gone"))
    tensors, manifest = pair.state()
    manifest.update(positions=[[VIEWS_TOPIC, 0, 3]], applied=[[VIEWS_TOPIC, 0, 3]])
    temp = staging_dir(tmp_path, "run-epoch-1")
    stage_worker(temp, 0, tensors, manifest)
    stage_worker(temp, 1, stale, manifest)
    seal_host(tmp_path, temp, 2, VIEWS_TOPIC, keep=3)
    checkpoint = latest_checkpoint(tmp_path)
    assert checkpoint is not None
    for count in (1, 2, 3):
        state, restored = worker_state(checkpoint, 0, count)
        history = History()
        history.load(state["history_offsets"], state["history_items"])
        assert history.items(0).size == 0 and history.items(1).size == 1  # gone, kept
        assert restored["applied"] == [[VIEWS_TOPIC, 0, 3]]


def test_a_single_part_checkpoint_of_an_earlier_learner_is_restored(tmp_path: Path) -> None:
    log = MemoryEventLog(partitions=1)
    for user, item in [("a", 1), ("a", 2), ("b", 1)]:
        log.send(ViewEvent(user, item, 1.0), VIEWS_TOPIC)
    service = build(log, tmp_path / "new")
    drain(service)
    service.shutdown()
    tensors, manifest = service._snapshot()
    write_checkpoint(tmp_path / "old", tensors, manifest)  # the earlier layout: one part
    restored = build(log, tmp_path / "old")
    assert restored.restore()
    model = restored.learner.model
    assert model.users.row("b") == 1 and model.history.items(0).tolist() == [0, 1]
    assert restored.applied == {(VIEWS_TOPIC, 0): 3}
