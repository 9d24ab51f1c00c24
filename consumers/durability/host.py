"""One checkpoint format for a host of any number of learner processes, one included.

A checkpoint holds the host's shared state once (part `shared`: tables, id registries,
popularity counts) and one part per worker (`worker-<i>`: histories, served lists,
random state, rows waiting to be published), with one manifest: the shared totals,
offsets and applied counts per partition, and each worker's own entries. A single
learner writes it as a host of one. Any number of workers restores one written by any
number: histories and pending rows are united (a user's are in one part), offsets are
taken per partition from the worker that read it, and every tombstone is kept (a
forgotten id stays a hole in the shared registries, its doomed keys are united).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from consumers.durability.files import (
    CorruptCheckpoint,
    latest,
    newest_body,
    read_parts,
    seal,
    stage_part,
)
from consumers.durability.manifest import Manifest, QualityTotals, WorkerManifest
from consumers.model.history import History
from consumers.model.packing import FORGOTTEN, pack_lists, unpack_lists
from consumers.model.storage import is_shared_state

SHARED_PART = "shared"
SINGLE_LEARNER_PART = "tensors"  # the one part of a single learner's, from before hosts
PENDING = ("dirty_users", "dirty_items", "dirty_positives")

State = tuple[dict[str, Tensor], WorkerManifest]


def worker_part(index: int) -> str:
    return f"worker-{index}"


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A verified host checkpoint: the shared part, one part per worker of the manifest."""

    path: Path
    manifest: Manifest
    shared: dict[str, Tensor]
    workers: dict[int, dict[str, Tensor]]


def read_checkpoint(path: Path) -> Checkpoint:
    """Load and verify one checkpoint; raises `CorruptCheckpoint` when it is not whole or
    its manifest does not parse. A single learner's one part reads as a host of one."""
    parts, body = read_parts(path)
    try:
        manifest = Manifest.from_json(body)
    except ValueError as error:
        raise CorruptCheckpoint(f"{path}: {error}") from error
    if SINGLE_LEARNER_PART in parts:
        tensors = parts.pop(SINGLE_LEARNER_PART)
        parts[SHARED_PART] = {k: v for k, v in tensors.items() if is_shared_state(k)}
        parts[worker_part(0)] = {k: v for k, v in tensors.items() if not is_shared_state(k)}
    expected = {SHARED_PART, *(worker_part(index) for index in manifest.workers)}
    if set(parts) != expected:
        raise CorruptCheckpoint(f"{path}: parts {sorted(parts)}, manifest names {sorted(expected)}")
    workers = {index: parts[worker_part(index)] for index in manifest.workers}
    return Checkpoint(path, manifest, parts[SHARED_PART], workers)


def newest_settings(directory: Path) -> Mapping[str, Any] | None:
    """The model settings the newest checkpoint was written with (its manifest alone),
    None when there is none or its manifest does not parse (restoring judges it)."""
    body = newest_body(directory)
    try:
        return None if body is None else Manifest.from_json(body).config
    except ValueError:
        return None


def latest_checkpoint(directory: Path) -> Checkpoint | None:
    """The newest checkpoint that loads and verifies; older ones stand in for corrupt ones."""
    return latest(directory, read_checkpoint)


def stage_worker(temp: Path, index: int, tensors: dict[str, Tensor], entry: WorkerManifest) -> None:
    """Write worker `index`'s part and manifest entries into the staging dir `temp`;
    worker 0 writes the shared part too."""
    part = worker_part(index)
    stage_part(temp, part, {k: v for k, v in tensors.items() if not is_shared_state(k)})
    (temp / f"{part}.json").write_text(json.dumps(entry.to_json()), encoding="utf-8")
    if index == 0:
        stage_part(temp, SHARED_PART, {k: v for k, v in tensors.items() if is_shared_state(k)})


def seal_host(directory: Path, temp: Path, workers: int, views_topic: str, keep: int) -> Path:
    """Seal the parts of workers 0 .. `workers` - 1 (and no other) under one manifest."""
    entries = [
        WorkerManifest.from_json(
            json.loads((temp / f"{worker_part(index)}.json").read_text(encoding="utf-8"))
        )
        for index in range(workers)
    ]
    for index in range(workers):
        (temp / f"{worker_part(index)}.json").unlink()
    manifest = Manifest.of_workers(entries, views_topic)
    parts = [SHARED_PART, *(worker_part(index) for index in range(workers))]
    return seal(directory, temp, manifest.to_json(), keep, parts)


def worker_state(checkpoint: Checkpoint, index: int, count: int) -> State:
    """Worker `index`'s state on a host of `count` (a host of one, a single learner,
    also takes the shared part).

    Histories and pending rows are united; random state and quality totals are the
    worker's own when it had a part, else start afresh. Served lists (what the online
    quality scores the next view against) follow their users: each part holds those of
    its worker's users, so a single learner unites them, a worker keeps its own while
    the number of workers is the same, and starts afresh when users changed worker.
    """
    manifest, parts = checkpoint.manifest, checkpoint.workers
    indexes = sorted(parts, key=worker_part)  # the order the parts were united in before
    own = parts.get(index, {})
    own_entry = manifest.workers.get(index)
    histories = History()
    for part in indexes:
        histories.merge(parts[part]["history_offsets"], parts[part]["history_items"])
    # A user is forgotten by their owner alone; the others' copies of the history go too.
    kinds = checkpoint.shared["user_ids.kinds"]
    for row in torch.nonzero(kinds == FORGOTTEN).flatten().tolist():
        if row < histories.users:
            histories.forget(row)
    served: dict[int, list[int]] = {}
    for part in indexes if count == 1 else [index] if count == len(indexes) else []:
        lists = unpack_lists(parts[part]["served_offsets"], parts[part]["served_items"])
        served.update(zip(parts[part]["served_rows"].tolist(), lists, strict=True))
    history_offsets, history_items = histories.pack()
    served_rows = sorted(served)
    served_offsets, served_items = pack_lists([served[row] for row in served_rows])
    fresh_generator = torch.Generator().manual_seed(int(manifest.config["seed"]) + index)
    empty_rows = torch.zeros(0, dtype=torch.long)
    tensors = {
        **own,  # what only this worker holds (a torch-trained model's parameters and states)
        **(checkpoint.shared if count == 1 else {}),
        "history_offsets": history_offsets,
        "history_items": history_items,
        "served_rows": torch.tensor(served_rows, dtype=torch.long),
        "served_offsets": served_offsets,
        "served_items": served_items,
        "generator": own.get("generator", fresh_generator.get_state()),
        "quality_recent": own.get("quality_recent", torch.zeros(0, 2, dtype=torch.float64)),
        "popularity_quality_recent": own.get(
            "popularity_quality_recent", torch.zeros(0, 2, dtype=torch.float64)
        ),
    }
    # Every worker reads the feature topics in full, so any part holds all the features
    # (its position there may be ahead of the restored one: the records read again
    # replace entities' features with the same ones).
    features_part = own or (parts[indexes[0]] if indexes else {})
    tensors.update({k: t for k, t in features_part.items() if k.startswith("features.")})
    for name in PENDING:
        tensors[name] = torch.unique(torch.cat([parts[n][name] for n in indexes] + [empty_rows]))
    zero = QualityTotals(0, 0.0, 0.0)
    doomed = {key for entry in manifest.workers.values() for key in entry.doomed_keys}
    return tensors, WorkerManifest(
        manifest.model,
        manifest.config,
        manifest.version,
        manifest.events,
        tuple(sorted(doomed)),
        zero if own_entry is None else own_entry.quality,
        zero if own_entry is None else own_entry.popularity_quality,
        manifest.positions,
        manifest.applied,
    )
