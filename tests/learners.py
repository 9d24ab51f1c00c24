"""Learners for tests: in this process (`online`: a learner and its publisher), or as
`recstream consume` processes for integration tests (start, wait on Redis, stop)."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import redis
from torch import Tensor

from consumers.learner import LearnedBatch, OnlineLearner
from consumers.model.config import ModelConfig
from consumers.model.factory import StorageFactory
from consumers.model.mf import MatrixFactorization
from consumers.model.popularity import Popularity
from consumers.model.storage import local_storage
from consumers.publisher import Publisher, PublishResult
from consumers.service import process_state
from consumers.sinks.base import RecommendationStore
from consumers.sinks.memory import MemoryStore
from streamer.events import Id, ViewEvent

ROOT = Path(__file__).resolve().parent.parent


class Online(NamedTuple):
    """A learner and its publisher, driven as the service drives them."""

    learner: OnlineLearner
    publisher: Publisher

    def process(
        self, events: list[ViewEvent], arrivals: list[float] | None = None
    ) -> tuple[LearnedBatch, PublishResult | None]:
        learned = self.learner.learn(events, self.publisher.served, arrivals)
        return learned, self.publisher.add(learned)

    def forget_user(self, raw: Id) -> None:
        self.publisher.forget_user(raw, self.learner.forget_user(raw))

    def state(self) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """Both parts' state, as a checkpoint holds it."""
        return process_state(self.learner, self.publisher)


def online(
    config: ModelConfig,
    store: RecommendationStore | None = None,
    clock: Callable[[], float] = time.time,
    publish_interval_s: float = 0.0,
    similar_interval_s: float = 0.0,
    storage: StorageFactory = local_storage,
    popularity: Popularity | None = None,
    owns: Callable[[Id], bool] | None = None,
) -> Online:
    """Matrix factorisation learning from `config`, publishing to `store` (default: memory)."""
    learner = OnlineLearner(MatrixFactorization(config, storage), popularity)
    publisher = Publisher(
        learner, store or MemoryStore(), clock, publish_interval_s, similar_interval_s, owns
    )
    return Online(learner, publisher)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_ports(count: int) -> int:
    """A first port p with p .. p + count - 1 free (worker i of a host serves on p + i),
    below the ephemeral range, so no client connection takes one meanwhile."""
    rng = random.Random()
    while True:
        first = rng.randrange(20_000, 30_000)
        with contextlib.ExitStack() as probes:
            try:
                for port in range(first, first + count):
                    probes.enter_context(socket.socket()).bind(("127.0.0.1", port))
            except OSError:
                continue
        return first


def wait_for(
    condition: Callable[[], bool], timeout_s: float, what: str | Callable[[], str]
) -> None:
    """Poll `condition` until it holds; fail with `what` (called then, if a function:
    a process log read at the failure, not before) after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    told = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {told}")


@dataclass
class Learner:
    """One `recstream consume` process we started (and only we stop)."""

    args: list[str]
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Learner:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        command = [sys.executable, "-m", "consumers.cli", "consume", *self.args]
        command += ["--metrics-port", str(self.metrics_port)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log, env=env, cwd=ROOT)
        return self

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            return str(response.read().decode())

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int:
        """SIGTERM and wait: the exit code (SIGKILL after `timeout_s`, then raise)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def kill(self) -> None:
        """kill -9: no clean-up of any kind."""
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


def meta_events(client: redis.Redis, prefix: str) -> int:
    value = client.hget(f"{prefix}meta", "events")
    return int(value) if value is not None else 0
