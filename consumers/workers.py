"""Several learner processes on one host, sharing their tables (`consume --workers N`).

A supervisor creates the shared registries, tables, popularity counts and
totals (consumers/model/shared.py), restores them from the newest checkpoint,
and starts N workers. Worker i reads the views partitions p with p % N == i, so
each user's history and served list stay in one process, and learns with
Hogwild updates on the shared rows, one torch thread each.

A checkpoint is a rendezvous: a worker that wants one raises the host's epoch;
every worker, at its next batch boundary, meets the others at a barrier, so the
shared tables stand still while worker 0 writes them and each worker writes its
own part (histories, offsets); worker 0 seals the lot atomically, and then each
worker commits its offsets. A worker that dies breaks the barrier: the
supervisor stops the rest and exits non-zero, and the next start restores the
last checkpoint (every event since is replayed once).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from consumers.checkpoint import latest_checkpoint, seal, stage_part, staging_dir
from consumers.model.history import History
from consumers.model.packing import section
from consumers.model.popularity import Popularity
from consumers.model.shared import Lock, open_array
from consumers.model.storage import SharedLayout, Storage, is_shared_state, shared_storage
from consumers.service import CheckpointPolicy, Restored, Snapshot
from consumers.settings import ConsumeSettings

BARRIER_TIMEOUT_S = 120.0
SPAWN = multiprocessing.get_context("spawn")

log = logging.getLogger("recstream.workers")


@dataclass(frozen=True)
class HostSync:
    """What a host's workers share besides memory: a lock, a barrier, the checkpoint epoch."""

    lock: Lock
    barrier: Barrier
    epoch: Synchronized  # type: ignore[type-arg]
    ready: Any  # one flag per worker: its outputs are flushed for this epoch
    stopping: Event

    @classmethod
    def create(cls, workers: int) -> HostSync:
        return cls(
            SPAWN.Lock(),
            SPAWN.Barrier(workers, timeout=BARRIER_TIMEOUT_S),
            SPAWN.Value("q", 0),
            SPAWN.Array("b", workers),
            SPAWN.Event(),
        )

    def stop(self) -> None:
        """Ask every worker for one last checkpoint together, then to exit."""
        with self.lock:  # atomic with `WorkerCheckpoints.due`: no epoch is raised after it
            self.epoch.value += 1  # beyond what any worker has written
            self.stopping.set()


@dataclass(frozen=True)
class HostStop:
    """Set when the supervisor says so, or when it is gone (then no last checkpoint)."""

    sync: HostSync
    parent: int

    @property
    def orphaned(self) -> bool:
        if os.getppid() == self.parent:
            return False
        self.sync.barrier.abort()  # release any worker waiting for a checkpoint
        return True

    def is_set(self) -> bool:
        return self.sync.stopping.is_set() or self.orphaned


@dataclass(frozen=True)
class Worker:
    """One worker's place on the host, and handles on the shared state."""

    index: int
    count: int
    layout: SharedLayout
    sync: HostSync
    parent: int  # the supervisor's pid

    def stop_flag(self) -> HostStop:
        return HostStop(self.sync, self.parent)

    def storage(self, config: Any, generator: torch.Generator) -> Storage:
        return shared_storage(self.layout, config, generator, self.sync.lock)

    def popularity(self) -> Popularity:
        directory, items = self.layout.directory, self.layout.max_items
        counts = open_array(directory, "popularity", "float64", (items,))
        return Popularity(shared=(counts, self.sync.lock))

    def totals(self) -> np.ndarray:
        return open_array(self.layout.directory, "totals", "int64", (2,))


@dataclass
class WorkerCheckpoints:
    """`Checkpoints` for one of a host's workers: all of them write, together."""

    policy: CheckpointPolicy
    worker: Worker
    views_topic: str
    _done: int = field(default=0, init=False)

    def due(self, wanted: bool) -> bool:
        """Raise the host's epoch when wanted (never once stopping: a worker that has
        finished would not come); whether an epoch waits for this worker."""
        if self.worker.stop_flag().orphaned:
            return False  # the supervisor is gone: no checkpoint may be trusted now
        sync = self.worker.sync
        with sync.lock:
            if wanted and not sync.stopping.is_set() and sync.epoch.value <= self._done:
                sync.epoch.value = self._done + 1
            return bool(sync.epoch.value > self._done)

    def write(self, snapshot: Snapshot, ready: bool) -> bool:
        worker, sync = self.worker, self.worker.sync
        sync.ready[worker.index] = ready
        sync.barrier.wait()  # every worker is at a batch boundary: the tables stand still
        self._done += 1
        everyone_ready = all(sync.ready[: worker.count])
        temp = staging_dir(self.policy.directory, f"epoch-{self._done}")
        if everyone_ready:
            tensors, manifest = snapshot()
            part = f"worker-{worker.index}"
            stage_part(temp, part, {k: v for k, v in tensors.items() if not is_shared_state(k)})
            (temp / f"{part}.json").write_text(json.dumps(manifest), encoding="utf-8")
            if worker.index == 0:
                stage_part(temp, "shared", {k: v for k, v in tensors.items() if is_shared_state(k)})
        sync.barrier.wait()  # every part is staged
        if everyone_ready and worker.index == 0:
            seal(
                self.policy.directory,
                temp,
                _host_manifest(temp, worker.count, self.views_topic),
                self.policy.keep,
            )
        sync.barrier.wait()  # sealed: offsets may be committed
        return everyone_ready

    def read(self) -> Restored | None:
        checkpoint = latest_checkpoint(self.policy.directory)
        if checkpoint is None:
            return None
        return _worker_state(checkpoint.parts, checkpoint.manifest, self.worker.index)

    def finish(self, checkpoint: Callable[[], bool]) -> None:
        """Write with the others until the final epoch the supervisor set is done."""
        while self.due(False):
            checkpoint()


def _host_manifest(temp: Path, workers: int, views_topic: str) -> dict[str, Any]:
    """One manifest for the host: shared totals, offsets and applied counts per
    partition, and each worker's own entries."""
    parts = {
        index: json.loads((temp / f"worker-{index}.json").read_text(encoding="utf-8"))
        for index in range(workers)
    }
    for index in range(workers):
        (temp / f"worker-{index}.json").unlink()
    first = parts[0]
    return {
        "model": first["model"],
        "config": first["config"],
        "version": max(p["version"] for p in parts.values()),
        "events": first["events"],
        "positions": _merge_offsets([p["positions"] for p in parts.values()], views_topic),
        "applied": _merge_offsets([p["applied"] for p in parts.values()], views_topic),
        "workers": {str(index): part for index, part in parts.items()},
    }


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


def _worker_state(
    parts: dict[str, dict[str, Tensor]], manifest: dict[str, Any], index: int
) -> Restored:
    """This worker's state from a host checkpoint written by any number of workers.

    Histories are united (a user's lives in one part), offsets taken from the part
    that had the partition; served lists, random state and quality are the worker's
    own when it had a part, else start afresh.
    """
    workers = manifest["workers"]
    names = sorted(name for name in parts if name.startswith("worker-"))
    own = parts.get(f"worker-{index}", {})
    own_manifest = workers.get(str(index), {})
    histories = History()
    for name in names:
        histories.merge(parts[name]["history_offsets"], parts[name]["history_items"])
    history_offsets, history_items = histories.pack()
    fresh_generator = torch.Generator().manual_seed(int(manifest["config"]["seed"]) + index)
    empty_rows = torch.zeros(0, dtype=torch.long)
    tensors = {
        "history_offsets": history_offsets,
        "history_items": history_items,
        "generator": own.get("generator", fresh_generator.get_state()),
        "served_rows": own.get("served_rows", empty_rows),
        "served_offsets": own.get("served_offsets", torch.zeros(1, dtype=torch.long)),
        "served_items": own.get("served_items", empty_rows),
        "quality_recent": own.get("quality_recent", torch.zeros(0, 2, dtype=torch.float64)),
        "popularity_quality_recent": own.get(
            "popularity_quality_recent", torch.zeros(0, 2, dtype=torch.float64)
        ),
    }
    for name in ("dirty_users", "dirty_items", "dirty_positives"):
        tensors[name] = torch.unique(torch.cat([parts[n][name] for n in names] + [empty_rows]))
    zero = {"scored": 0, "hits": 0.0, "gains": 0.0}
    return Restored(
        tensors,
        {
            "model": manifest["model"],
            "config": manifest["config"],
            "version": manifest["version"],
            "events": manifest["events"],
            "quality": own_manifest.get("quality", zero),
            "popularity_quality": own_manifest.get("popularity_quality", zero),
            "doomed_keys": sorted({k for part in workers.values() for k in part["doomed_keys"]}),
            "positions": manifest["positions"],
            "applied": manifest["applied"],
        },
        shared=False,
    )


def restore_shared(worker: Worker, settings: ConsumeSettings) -> bool:
    """Fill the host's shared state from the newest checkpoint; False if there is none."""
    if settings.checkpoint_dir is None:
        return False
    checkpoint = latest_checkpoint(Path(settings.checkpoint_dir))
    if checkpoint is None:
        return False
    if "shared" not in checkpoint.parts:
        raise ValueError(
            f"{checkpoint.path} was written by a single learner; start it with --workers 1"
        )
    shared = checkpoint.parts["shared"]
    config = settings.model()
    storage = worker.storage(config, torch.Generator())
    storage.users.load_state(section(shared, "user_ids."))
    storage.items.load_state(section(shared, "item_ids."))
    storage.user_table.load(shared["user_weight"], shared["user_accumulator"])
    storage.item_table.load(shared["item_weight"], shared["item_accumulator"])
    worker.popularity().load_state(shared)
    totals = worker.totals()
    totals[:] = [checkpoint.manifest["events"], checkpoint.manifest["version"]]
    log.info("restored the host's shared state from %s", checkpoint.path.name)
    return True


def _worker_main(settings: ConsumeSettings, worker: Worker) -> None:
    from consumers.run import run_learner

    for signum in (signal.SIGINT, signal.SIGTERM):  # the supervisor says when to stop
        signal.signal(signum, signal.SIG_IGN)
    run_learner(settings, worker.stop_flag(), worker)


def run_workers(settings: ConsumeSettings) -> int:
    """Supervise `settings.workers` learner processes; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    count = settings.workers
    default = Path("/dev/shm")  # memory, not disk, where the machine has it
    base = (
        Path(settings.shared_dir)
        if settings.shared_dir
        else (default if default.is_dir() else None)
    )
    directory = Path(tempfile.mkdtemp(prefix="recstream-", dir=base))
    layout = SharedLayout(directory, settings.max_users, settings.max_items)
    sync = HostSync.create(count)
    try:
        restore_shared(Worker(0, count, layout, sync, os.getpid()), settings)
        processes = [
            SPAWN.Process(
                target=_worker_main,
                args=(settings, Worker(index, count, layout, sync, os.getpid())),
                name=f"recstream-worker-{index}",
            )
            for index in range(count)
        ]
        for process in processes:
            process.start()

        signal.signal(signal.SIGTERM, lambda *_: sync.stop())
        signal.signal(signal.SIGINT, lambda *_: sync.stop())
        failed = False
        while any(process.is_alive() for process in processes):
            for process in processes:
                process.join(timeout=0.5)
                if process.exitcode not in (None, 0) and not failed:
                    # Its unsaved updates are in the shared tables: no checkpoint may
                    # follow. Break the barrier; the others stop, the next start restores.
                    failed = True
                    log.error("%s exited with %s: stopping", process.name, process.exitcode)
                    sync.barrier.abort()
                    sync.stopping.set()
        return 1 if failed or any(process.exitcode for process in processes) else 0
    finally:
        shutil.rmtree(directory, ignore_errors=True)
