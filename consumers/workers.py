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

from consumers.checkpoint import latest_checkpoint, staging_dir
from consumers.host_checkpoint import SHARED_PART, host_parts, seal_host, stage_worker, worker_state
from consumers.model.packing import section
from consumers.model.popularity import Popularity
from consumers.model.shared import Lock, open_array
from consumers.model.storage import SharedLayout, Storage, shared_storage
from consumers.service import CheckpointPolicy, Restored, Snapshot
from consumers.settings import ConsumeSettings

BARRIER_TIMEOUT_S = 120.0
SHARED_PREFIX = "recstream-"
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
    mapped: Any  # one flag per worker: it has mapped every shared file

    @classmethod
    def create(cls, workers: int) -> HostSync:
        return cls(
            SPAWN.Lock(),
            SPAWN.Barrier(workers, timeout=BARRIER_TIMEOUT_S),
            SPAWN.Value("q", 0),
            SPAWN.Array("b", workers),
            SPAWN.Event(),
            SPAWN.Array("b", workers),
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

    def mapped(self) -> None:
        """Tell the supervisor this worker holds every shared file it needs (it may
        unlink them: the mappings keep them alive)."""
        self.sync.mapped[self.index] = True


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
        directory = self.policy.directory
        # This run's own (a crashed run's parts are never sealed into this one's)
        temp = staging_dir(directory, f"{worker.layout.directory.name}-epoch-{self._done}")
        if everyone_ready:
            stage_worker(temp, worker.index, *snapshot())
        sync.barrier.wait()  # every part is staged
        if everyone_ready and worker.index == 0:
            seal_host(directory, temp, worker.count, self.views_topic, self.policy.keep)
        sync.barrier.wait()  # sealed: offsets may be committed
        return everyone_ready

    def read(self) -> Restored | None:
        checkpoint = latest_checkpoint(self.policy.directory)
        if checkpoint is None:
            return None
        return Restored(*worker_state(checkpoint, self.worker.index, self.worker.count), False)

    def finish(self, checkpoint: Callable[[], bool]) -> None:
        """Write with the others until the final epoch the supervisor set is done."""
        while self.due(False):
            checkpoint()


def restore_shared(worker: Worker, settings: ConsumeSettings) -> bool:
    """Fill the host's shared state from the newest checkpoint; False if there is none."""
    if settings.checkpoint_dir is None:
        return False
    checkpoint = latest_checkpoint(Path(settings.checkpoint_dir))
    if checkpoint is None:
        return False
    shared = host_parts(checkpoint)[0][SHARED_PART]
    config = settings.hyper_parameters()
    storage = worker.storage(config, torch.Generator())
    storage.users.load_state(section(shared, "user_ids."))
    storage.items.load_state(section(shared, "item_ids."))
    storage.user_table.load(shared["user_weight"], shared["user_accumulator"])
    storage.item_table.load(shared["item_weight"], shared["item_accumulator"])
    # A single learner's counts grow past its items; those of rows beyond are zero.
    counts = shared["popularity_counts"][: len(storage.items)]
    worker.popularity().load_state({**shared, "popularity_counts": counts})
    totals = worker.totals()
    totals[:] = [checkpoint.manifest["events"], checkpoint.manifest["version"]]
    log.info("restored the host's shared state from %s", checkpoint.path.name)
    return True


def _worker_main(settings: ConsumeSettings, worker: Worker) -> None:
    from consumers.run import run_learner

    for signum in (signal.SIGINT, signal.SIGTERM):  # the supervisor says when to stop
        signal.signal(signum, signal.SIG_IGN)
    run_learner(settings, worker.stop_flag(), worker)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def sweep_leftovers(base: Path) -> None:
    """Remove the shared directories of supervisors that died (kill -9) before their
    workers had mapped them; a directory is named after its supervisor's pid."""
    for leftover in base.glob(f"{SHARED_PREFIX}*-*"):
        owner = leftover.name[len(SHARED_PREFIX) :].split("-", 1)[0]
        if owner.isdigit() and not _pid_alive(int(owner)):
            log.warning("removing %s, left by a supervisor that is gone", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def run_workers(settings: ConsumeSettings) -> int:
    """Supervise `settings.workers` learner processes; returns the exit status.

    The shared files are unlinked as soon as every worker has mapped them, so nothing is
    left in /dev/shm however the host ends (the kernel frees them with the last mapping);
    a supervisor killed before that leaves a directory the next start removes.
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    count = settings.workers
    default = Path("/dev/shm")  # memory, not disk, where the machine has it
    base = (
        Path(settings.shared_dir)
        if settings.shared_dir
        else (default if default.is_dir() else Path(tempfile.gettempdir()))
    )
    sweep_leftovers(base)
    directory = Path(tempfile.mkdtemp(prefix=f"{SHARED_PREFIX}{os.getpid()}-", dir=base))
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
        failed = unlinked = False
        while any(process.is_alive() for process in processes):
            if not unlinked and all(sync.mapped[:count]):
                shutil.rmtree(directory, ignore_errors=True)
                unlinked = True
                log.info("every worker has mapped the shared tables: unlinked %s", directory)
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
