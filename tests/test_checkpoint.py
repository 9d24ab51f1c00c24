"""Checkpoints: atomic, verified, the previous one used when the newest is damaged or its
manifest does not parse; checkpoints written before the typed manifest still restore; and
a learner restored from one continues exactly as if it had never stopped."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry

from consumers.durability.files import (
    CorruptCheckpoint,
    latest,
    read_parts,
    seal,
    stage_part,
    staging_dir,
)
from consumers.durability.host import (
    latest_checkpoint,
    read_checkpoint,
    seal_host,
    stage_worker,
    worker_state,
)
from consumers.durability.manifest import Manifest, WorkerManifest
from consumers.durability.policy import CheckpointPolicy, LocalCheckpoints
from consumers.ingest.memory import MemoryEventLog, MemoryEventSource
from consumers.metrics import LearnerMetrics
from consumers.model.config import ModelConfig
from consumers.model.history import History
from consumers.service import ConsumeService
from consumers.sinks.memory import MemoryStore
from streamer.datasets.synthetic import SyntheticConfig, synthetic_views
from streamer.events import USERS_TOPIC, VIEWS_TOPIC, ViewEvent
from tests.learners import online

FIXTURES = Path(__file__).resolve().parent / "fixtures"
WRITTEN_BEFORE = FIXTURES / "checkpoint-v1" / "ckpt-000000000001"


def write_one_part(
    directory: Path, part: str, tensors: dict[str, torch.Tensor], body: dict[str, Any]
) -> Path:
    """A checkpoint of one part, sealed as every checkpoint is."""
    temp = staging_dir(directory, uuid.uuid4().hex)
    stage_part(temp, part, tensors)
    return seal(directory, temp, body, 3, [part])


def test_sealed_parts_round_trip_and_only_the_newest_are_kept(tmp_path: Path) -> None:
    for step in range(5):
        write_one_part(tmp_path, "w", {"w": torch.full((2, 3), float(step))}, {"step": step})
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["ckpt-000000000003", "ckpt-000000000004", "ckpt-000000000005"]
    parts, body = read_parts(tmp_path / names[-1])
    assert body == {"step": 4}  # the format and checksums are the files' own
    assert torch.equal(parts["w"]["w"], torch.full((2, 3), 4.0))


def test_a_corrupt_or_partial_newest_checkpoint_falls_back_to_the_previous(tmp_path: Path) -> None:
    write_one_part(tmp_path, "w", {"w": torch.zeros(4)}, {"step": 1})
    newest = write_one_part(tmp_path, "w", {"w": torch.ones(4)}, {"step": 2})
    tensors = newest / "w.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-3] + b"xyz")
    found = latest(tmp_path, read_parts)
    assert found is not None and found[1] == {"step": 1}
    (newest / "manifest.json").unlink()
    assert latest(tmp_path, read_parts) is not None
    (tmp_path / ".tmp-ckpt-000000000003").mkdir()  # a writer that died mid-way
    third = write_one_part(tmp_path, "w", {"w": torch.ones(1)}, {"step": 3})
    assert read_parts(third)[1] == {"step": 3}
    assert not list(tmp_path.glob(".tmp-*"))


def test_a_manifest_of_another_format_is_refused(tmp_path: Path) -> None:
    path = write_one_part(tmp_path, "w", {"w": torch.zeros(1)}, {})
    manifest = json.loads((path / "manifest.json").read_text())
    (path / "manifest.json").write_text(json.dumps(dict(manifest, format=99)))
    assert latest(tmp_path, read_parts) is None


def checkpoint_v1() -> dict[str, Any]:
    """The manifest of tests/fixtures/checkpoint-v1, written before the typed manifest."""
    return json.loads((WRITTEN_BEFORE / "manifest.json").read_text())


def test_the_typed_manifest_writes_the_json_it_reads() -> None:
    body = checkpoint_v1()
    del body["format"], body["sha256"]
    manifest = Manifest.from_json(body)
    assert manifest.to_json() == body
    assert sorted(manifest.workers) == [0, 1] and manifest.workers[1].doomed_keys
    assert manifest.applied == (
        (USERS_TOPIC, 0, 1),  # every worker reads the users topic: the lowest
        (VIEWS_TOPIC, 0, 3),  # a views partition: its reader's, the highest
        (VIEWS_TOPIC, 1, 4),
    )
    single = body["workers"]["0"]  # a single learner's manifest, from before hosts
    assert Manifest.from_json(single).workers == {0: WorkerManifest.from_json(single)}


@pytest.mark.parametrize(
    "damage",
    [
        lambda body: body.pop("events"),
        lambda body: body.update(version="7"),
        lambda body: body.update(workers={"1": body["workers"]["1"]}),
        lambda body: body["workers"]["0"].update(positions=[["t", 0]]),
        lambda body: body["workers"]["1"]["quality"].pop("hits"),
        lambda body: body.update(workers=[]),
    ],
)
def test_a_manifest_that_does_not_parse_is_corrupt_and_the_previous_is_used(
    tmp_path: Path, damage: Any
) -> None:
    shutil.copytree(WRITTEN_BEFORE, tmp_path / WRITTEN_BEFORE.name)
    newest = shutil.copytree(WRITTEN_BEFORE, tmp_path / "ckpt-000000000002")
    body = checkpoint_v1()  # its checksums still match: only the manifest is wrong
    damage(body)
    (newest / "manifest.json").write_text(json.dumps(body))
    with pytest.raises(CorruptCheckpoint):
        read_checkpoint(newest)
    found = latest_checkpoint(tmp_path)
    assert found is not None and found.path.name == "ckpt-000000000001"


def tensor_digest(tensor: torch.Tensor) -> str:
    digest = hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
    return f"{digest} {tensor.dtype} {list(tensor.shape)}"


def test_a_checkpoint_written_before_the_typed_manifest_restores_the_same() -> None:
    """tests/fixtures/checkpoint-v1: two workers' checkpoint written by the code before
    consumers/durability/ (commit ca0aa87); checkpoint-v1-restored.json: what that code
    restored from it for worker i of N."""
    checkpoint = latest_checkpoint(FIXTURES / "checkpoint-v1")
    assert checkpoint is not None
    expected = json.loads((FIXTURES / "checkpoint-v1-restored.json").read_text())
    for key, want in expected.items():
        index, count = map(int, key.split("/"))
        tensors, manifest = worker_state(checkpoint, index, count)
        assert manifest.to_json() == want["manifest"]
        assert {k: tensor_digest(v) for k, v in tensors.items()} == want["tensors"]


def build(log: MemoryEventLog, directory: Path, group: str = "learners") -> ConsumeService:
    return ConsumeService(
        MemoryEventSource(log, [VIEWS_TOPIC, USERS_TOPIC], group),
        *online(ModelConfig(dim=16, seed=3), MemoryStore()),
        LearnerMetrics(CollectorRegistry()),
        batch_size=100,
        max_wait_s=1e9,
        checkpoints=LocalCheckpoints(CheckpointPolicy(directory, 300, None)),
        users_topic=USERS_TOPIC,
    )


def drain(service: ConsumeService) -> None:
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
    tensors, entries = pair.state()
    offsets = [[VIEWS_TOPIC, 0, 3]]
    manifest = WorkerManifest.from_json(dict(entries, positions=offsets, applied=offsets))
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
        assert restored.applied == ((VIEWS_TOPIC, 0, 3),)


def test_a_single_part_checkpoint_of_an_earlier_learner_is_restored(tmp_path: Path) -> None:
    log = MemoryEventLog(partitions=1)
    for user, item in [("a", 1), ("a", 2), ("b", 1)]:
        log.send(ViewEvent(user, item, 1.0), VIEWS_TOPIC)
    service = build(log, tmp_path / "new")
    drain(service)
    service.shutdown()
    tensors, manifest = service._snapshot()
    write_one_part(tmp_path / "old", "tensors", tensors, manifest.to_json())  # the earlier layout
    restored = build(log, tmp_path / "old")
    assert restored.restore()
    model = restored.learner.model
    assert model.users.row("b") == 1 and model.history.items(0).tolist() == [0, 1]
    assert restored.applied == {(VIEWS_TOPIC, 0): 3}
