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
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from consumers.checkpoint import MAIN_PART, Checkpoint, seal, stage_part
from consumers.model.history import History
from consumers.model.packing import FORGOTTEN, pack_lists, unpack_lists
from consumers.model.storage import is_shared_state

SHARED_PART = "shared"
PENDING = ("dirty_users", "dirty_items", "dirty_positives")

State = tuple[dict[str, Tensor], dict[str, Any]]


def worker_part(index: int) -> str:
    return f"worker-{index}"


def stage_worker(
    temp: Path, index: int, tensors: dict[str, Tensor], manifest: dict[str, Any]
) -> None:
    """Write worker `index`'s part and manifest entries into the staging dir `temp`;
    worker 0 writes the shared part too."""
    part = worker_part(index)
    stage_part(temp, part, {k: v for k, v in tensors.items() if not is_shared_state(k)})
    (temp / f"{part}.json").write_text(json.dumps(manifest), encoding="utf-8")
    if index == 0:
        stage_part(temp, SHARED_PART, {k: v for k, v in tensors.items() if is_shared_state(k)})


def seal_host(directory: Path, temp: Path, workers: int, views_topic: str, keep: int) -> Path:
    """Seal the parts of workers 0 .. `workers` - 1 (and no other) under one manifest."""
    entries = {
        index: json.loads((temp / f"{worker_part(index)}.json").read_text(encoding="utf-8"))
        for index in range(workers)
    }
    for index in range(workers):
        (temp / f"{worker_part(index)}.json").unlink()
    first = entries[0]
    manifest = {
        "model": first["model"],
        "config": first["config"],
        "version": max(e["version"] for e in entries.values()),
        "events": first["events"],
        "positions": _merge_offsets([e["positions"] for e in entries.values()], views_topic),
        "applied": _merge_offsets([e["applied"] for e in entries.values()], views_topic),
        "workers": {str(index): entry for index, entry in entries.items()},
    }
    parts = [SHARED_PART, *(worker_part(index) for index in range(workers))]
    return seal(directory, temp, manifest, keep, parts)


def _merge_offsets(parts: list[list[list[Any]]], views_topic: str) -> list[list[Any]]:
    """One value per partition from every worker's: a views partition is read by one
    worker only (the others hold older copies: take the highest); every worker reads
    the other topics in full (take the lowest: replaying a tombstone is harmless)."""
    merged: dict[tuple[str, int], int] = {}
    for rows in parts:
        for topic, partition, value in rows:
            key = (topic, partition)
            pick = max if topic == views_topic else min
            merged[key] = pick(value, merged.get(key, value))
    return [[t, p, v] for (t, p), v in sorted(merged.items())]


def host_parts(checkpoint: Checkpoint) -> tuple[dict[str, dict[str, Tensor]], dict[str, Any]]:
    """(parts, each worker's manifest entries); a single-part checkpoint of an earlier
    single learner reads as a host of one."""
    parts, manifest = checkpoint.parts, checkpoint.manifest
    if MAIN_PART not in parts:
        return parts, manifest["workers"]
    tensors = parts[MAIN_PART]
    return {
        SHARED_PART: {k: v for k, v in tensors.items() if is_shared_state(k)},
        worker_part(0): {k: v for k, v in tensors.items() if not is_shared_state(k)},
    }, {"0": manifest}


def worker_state(checkpoint: Checkpoint, index: int, count: int) -> State:
    """Worker `index`'s state on a host of `count` (a host of one, a single learner,
    also takes the shared part).

    Histories and pending rows are united; random state and quality totals are the
    worker's own when it had a part, else start afresh. Served lists (what the online
    quality scores the next view against) follow their users: each part holds those of
    its worker's users, so a single learner unites them, a worker keeps its own while
    the number of workers is the same, and starts afresh when users changed worker.
    """
    parts, entries = host_parts(checkpoint)
    manifest = checkpoint.manifest
    names = sorted(name for name in parts if name.startswith("worker-"))
    own = parts.get(worker_part(index), {})
    own_entry = entries.get(str(index), {})
    histories = History()
    for name in names:
        histories.merge(parts[name]["history_offsets"], parts[name]["history_items"])
    # A user is forgotten by their owner alone; the others' copies of the history go too.
    kinds = parts[SHARED_PART]["user_ids.kinds"]
    for row in torch.nonzero(kinds == FORGOTTEN).flatten().tolist():
        if row < histories.users:
            histories.forget(row)
    served: dict[int, list[int]] = {}
    for name in names if count == 1 else [worker_part(index)] if count == len(names) else []:
        lists = unpack_lists(parts[name]["served_offsets"], parts[name]["served_items"])
        served.update(zip(parts[name]["served_rows"].tolist(), lists, strict=True))
    history_offsets, history_items = histories.pack()
    served_rows = sorted(served)
    served_offsets, served_items = pack_lists([served[row] for row in served_rows])
    fresh_generator = torch.Generator().manual_seed(int(manifest["config"]["seed"]) + index)
    empty_rows = torch.zeros(0, dtype=torch.long)
    tensors = {
        **(parts[SHARED_PART] if count == 1 else {}),
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
    for name in PENDING:
        tensors[name] = torch.unique(torch.cat([parts[n][name] for n in names] + [empty_rows]))
    zero = {"scored": 0, "hits": 0.0, "gains": 0.0}
    return tensors, {
        "model": manifest["model"],
        "config": manifest["config"],
        "version": manifest["version"],
        "events": manifest["events"],
        "quality": own_entry.get("quality", zero),
        "popularity_quality": own_entry.get("popularity_quality", zero),
        "doomed_keys": sorted({k for entry in entries.values() for k in entry["doomed_keys"]}),
        "positions": manifest["positions"],
        "applied": manifest["applied"],
    }
