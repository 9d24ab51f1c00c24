"""The rendezvous of a host's workers: every checkpoint is written by all of them together.

A worker that wants a checkpoint raises the host's epoch; every worker, at its next
batch boundary, meets the others at a barrier, so the shared tables stand still while
worker 0 writes them and each worker writes its own part (histories, offsets); worker 0
seals the lot atomically, and then each worker commits its offsets. A worker that dies
breaks the barrier, and no checkpoint follows.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Barrier, Event
from typing import Any, Protocol

from consumers.durability.files import staging_dir
from consumers.durability.host import latest_checkpoint, seal_host, stage_worker, worker_state
from consumers.durability.policy import CheckpointPolicy, Restored, Snapshot
from consumers.model.shared import Lock

BARRIER_TIMEOUT_S = 120.0


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
        """Primitives for `workers` processes started by the spawn method."""
        spawn = multiprocessing.get_context("spawn")
        return cls(
            spawn.Lock(),
            spawn.Barrier(workers, timeout=BARRIER_TIMEOUT_S),
            spawn.Value("q", 0),
            spawn.Array("b", workers),
            spawn.Event(),
            spawn.Array("b", workers),
        )

    def stop(self) -> None:
        """Ask every worker for one last checkpoint together, then to exit."""
        with self.lock:  # atomic with `WorkerCheckpoints.due`: no epoch is raised after it
            self.epoch.value += 1  # beyond what any worker has written
            self.stopping.set()


class HostMember(Protocol):
    """One worker's place on its host, as the rendezvous sees it."""

    @property
    def index(self) -> int: ...

    @property
    def count(self) -> int: ...

    @property
    def sync(self) -> HostSync: ...

    @property
    def run(self) -> str:
        """A label unique to this run of the host (a crashed run's staged parts are never
        sealed into this one's)."""

    @property
    def orphaned(self) -> bool:
        """Whether the supervisor is gone (then no checkpoint may be trusted)."""


@dataclass
class WorkerCheckpoints:
    """`Checkpoints` for one of a host's workers: all of them write, together."""

    policy: CheckpointPolicy
    worker: HostMember
    views_topic: str
    _done: int = field(default=0, init=False)

    @property
    def closing(self) -> bool:
        """Once the host is stopping, its final epoch may reach a worker inside `step`,
        before its shutdown learns the records it holds."""
        return self.worker.sync.stopping.is_set()

    def due(self, wanted: bool) -> bool:
        """Raise the host's epoch when wanted (never once stopping: a worker that has
        finished would not come); whether an epoch waits for this worker."""
        if self.worker.orphaned:
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
        temp = staging_dir(directory, f"{worker.run}-epoch-{self._done}")
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
