"""When and where a learner process checkpoints, and how: alone or with its host.

`ConsumeService.checkpoint` (consumers/service.py) holds the one durability order:
flush the outputs, write through `Checkpoints`, then commit the offsets. A
`Checkpoints` says whether one is due and persists a snapshot; `LocalCheckpoints`
is one process's, in the format of a host of one worker (the rendezvous of a
host's workers: consumers/durability/rendezvous.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from torch import Tensor

from consumers.durability.files import staging_dir
from consumers.durability.host import latest_checkpoint, seal_host, stage_worker, worker_state
from consumers.durability.manifest import WorkerManifest
from streamer.events import VIEWS_TOPIC


@dataclass(frozen=True, slots=True)
class CheckpointPolicy:
    """Where and how often to checkpoint; `None` disables that trigger."""

    directory: Path
    every_events: int | None = 100_000
    every_seconds: float | None = 60.0
    keep: int = 3


@dataclass(frozen=True, slots=True)
class Restored:
    """A checkpoint's state for this process; `shared` if it includes the tables."""

    tensors: dict[str, Tensor]
    manifest: WorkerManifest
    shared: bool = True


Snapshot = Callable[[], tuple[dict[str, Tensor], WorkerManifest]]


class Checkpoints(Protocol):
    """How a learner process persists its state: alone, or with a host's other workers."""

    @property
    def policy(self) -> CheckpointPolicy: ...

    @property
    def closing(self) -> bool:
        """Whether the next checkpoint is the last before this process stops: it must
        cover every record the process holds."""

    def due(self, wanted: bool) -> bool:
        """Whether to checkpoint now, given whether this process wants to."""

    def write(self, snapshot: Snapshot, ready: bool) -> bool:
        """Persist `snapshot()` (when `ready`: outputs flushed); False if it did not happen.

        The snapshot is taken inside, once every process that shares state has paused.
        """

    def read(self) -> Restored | None: ...

    def finish(self, checkpoint: Callable[[], bool]) -> None:
        """The last checkpoint(s) before this process stops."""


@dataclass(frozen=True, slots=True)
class LocalCheckpoints:
    """One process, one checkpoint directory, in the format of a host of one worker."""

    policy: CheckpointPolicy
    views_topic: str = VIEWS_TOPIC

    @property
    def closing(self) -> bool:
        """Never before `finish`, which runs once the service has learned what it holds."""
        return False

    def due(self, wanted: bool) -> bool:
        return wanted

    def write(self, snapshot: Snapshot, ready: bool) -> bool:
        if ready:
            directory = self.policy.directory
            temp = staging_dir(directory, uuid.uuid4().hex)  # this write's own
            stage_worker(temp, 0, *snapshot())
            seal_host(directory, temp, 1, self.views_topic, self.policy.keep)
        return ready

    def read(self) -> Restored | None:
        checkpoint = latest_checkpoint(self.policy.directory)
        if checkpoint is None:
            return None
        return Restored(*worker_state(checkpoint, 0, 1))

    def finish(self, checkpoint: Callable[[], bool]) -> None:
        checkpoint()
