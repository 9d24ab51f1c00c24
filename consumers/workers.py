"""Several learner processes on one host, sharing their tables (`consume --workers N`).

A supervisor creates the shared registries, tables, popularity counts and
totals (consumers/model/shared.py), restores them from the newest checkpoint,
and starts N workers. Worker i reads the views partitions p with p % N == i, so
each user's history and served list stay in one process, and learns with
Hogwild updates on the shared rows, one torch thread each.

A checkpoint is a rendezvous of every worker (consumers/durability/rendezvous.py).
A worker that dies breaks its barrier: the supervisor stops the rest and exits
non-zero, and the next start restores the last checkpoint (every event since is
replayed once). The supervisor knows its workers only by the entry point it is given.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from consumers.durability.host import latest_checkpoint
from consumers.durability.rendezvous import HostSync
from consumers.model.packing import section
from consumers.model.popularity import Popularity
from consumers.model.shared import open_array
from consumers.model.storage import SharedLayout, Storage, shared_storage
from consumers.settings import ConsumeSettings

SHARED_PREFIX = "recstream-"
SPAWN = multiprocessing.get_context("spawn")

log = logging.getLogger("recstream.workers")


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

    @property
    def orphaned(self) -> bool:
        return self.stop_flag().orphaned

    @property
    def run(self) -> str:
        """Unique to this run of the host: the name of its shared directory."""
        return self.layout.directory.name

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


def restore_shared(worker: Worker, settings: ConsumeSettings) -> bool:
    """Fill the host's shared state from the newest checkpoint; False if there is none."""
    if settings.checkpoint_dir is None:
        return False
    checkpoint = latest_checkpoint(Path(settings.checkpoint_dir))
    if checkpoint is None:
        return False
    shared = checkpoint.shared
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
    totals[:] = [checkpoint.manifest.events, checkpoint.manifest.version]
    log.info("restored the host's shared state from %s", checkpoint.path.name)
    return True


WorkerEntry = Callable[[ConsumeSettings, Worker], None]
"""What each spawned worker process runs: a module-level function (spawn pickles it)."""


def _worker_main(entry: WorkerEntry, settings: ConsumeSettings, worker: Worker) -> None:
    for signum in (signal.SIGINT, signal.SIGTERM):  # the supervisor says when to stop
        signal.signal(signum, signal.SIG_IGN)
    entry(settings, worker)


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


def run_workers(settings: ConsumeSettings, entry: WorkerEntry, stop: threading.Event) -> int:
    """Supervise `settings.workers` processes, each running `entry`; returns the exit status.
    `stop`, set by a signal before the supervisor took the signals over, stops them too.

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
                args=(entry, settings, Worker(index, count, layout, sync, os.getpid())),
                name=f"recstream-worker-{index}",
            )
            for index in range(count)
        ]
        for process in processes:
            process.start()

        signal.signal(signal.SIGTERM, lambda *_: sync.stop())
        signal.signal(signal.SIGINT, lambda *_: sync.stop())
        if stop.is_set():
            sync.stop()
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
