"""Republishing after the store lost its keys: a tombstone stays final, and each of a
host's workers writes only the users it owns (with their watched items excluded)."""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from consumers.model.config import ModelConfig
from consumers.model.popularity import Popularity
from consumers.model.shared import open_array
from consumers.model.storage import SharedLayout, Storage, local_storage, shared_storage
from consumers.sinks.base import StoreUnavailable
from consumers.sinks.memory import MemoryStore
from consumers.sinks.schema import Publication, string_writes
from streamer.events import Id, ViewEvent
from tests.learners import Online, online


class Host:
    """One store for every worker: fails while `down`, notes who wrote each user's list."""

    def __init__(self) -> None:
        self.strings: dict[str, bytes] = {}
        self.down = False
        self.writers: dict[Id, set[str]] = defaultdict(set)

    def lose_everything(self) -> None:
        self.strings.clear()
        self.writers.clear()


class Client(MemoryStore):
    def __init__(self, host: Host, name: str) -> None:
        super().__init__()
        self.host, self.name, self.strings = host, name, host.strings

    def _check(self) -> None:
        if self.host.down:
            raise StoreUnavailable("down for the test")

    def publish(self, publication: Publication) -> None:
        self._check()
        prefix, suffix = f"{self.keys.prefix}user:", ":top"
        for key in string_writes(publication, self.keys):
            if key.startswith(prefix) and key.endswith(suffix):
                self.host.writers[key[len(prefix) : -len(suffix)]].add(self.name)
        super().publish(publication)

    def get(self, key: str) -> bytes | None:
        self._check()
        return super().get(key)

    def delete(self, keys: list[str]) -> None:
        self._check()
        super().delete(keys)


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def views(user: str, items: list[int]) -> list[ViewEvent]:
    return [ViewEvent(user, item, 1.0) for item in items]


def lose_keys_and_republish(host: Host, clock: Clock, workers: dict[str, Online]) -> None:
    """An outage during a batch each, a store that comes back empty, then the catch-up."""
    host.down = True
    for name, worker in workers.items():
        worker.process(views(f"{name}2", [5]))  # fails: the outage begins
    host.lose_everything()
    host.down = False
    clock.now += 60
    for worker in workers.values():
        worker.publisher.flush()  # the waiting batch; probes older users: their keys are gone
        worker.publisher.flush()  # every (own, live) user again


def shared(directory: Path, lock: threading.Lock) -> tuple[SharedLayout, Popularity]:
    counts = open_array(directory, "popularity", "float64", (100,))
    return SharedLayout(directory, 100, 100), Popularity(shared=(counts, lock))


@pytest.mark.parametrize("where", ["local", "shared"])
def test_a_forgotten_user_stays_forgotten_when_the_store_loses_its_keys(
    where: str, tmp_path: Path
) -> None:
    host, clock, lock = Host(), Clock(), threading.Lock()
    layout, popularity = shared(tmp_path, lock)

    def storage(config: ModelConfig, generator: torch.Generator) -> Storage:
        if where == "local":
            return local_storage(config, generator)
        return shared_storage(layout, config, generator, lock)

    worker = online(
        ModelConfig(dim=4), Client(host, "a"), clock=clock, storage=storage, popularity=popularity
    )
    for user, items in {"a1": [1, 2], "a2": [3], "a3": [2, 4]}.items():
        worker.process(views(user, items))
    worker.forget_user("a1")
    worker.publisher.flush()
    lose_keys_and_republish(host, clock, {"a": worker})
    assert set(host.writers) == {"a2", "a3"}
    assert not any(key.startswith("rs:user:a1:") for key in host.strings)


def test_each_worker_republishes_only_the_users_it_owns(tmp_path: Path) -> None:
    host, clock, lock = Host(), Clock(), threading.Lock()
    layout, popularity = shared(tmp_path, lock)
    workers = {
        name: online(
            ModelConfig(dim=4),
            Client(host, name),
            clock=clock,
            storage=lambda config, generator: shared_storage(layout, config, generator, lock),
            popularity=popularity,
            owns=lambda user, name=name: str(user).startswith(name),  # type: ignore[misc]
        )
        for name in "ab"
    }
    watched = {"a1": [1, 2], "a2": [3, 6], "a3": [2, 4], "b1": [1, 3], "b2": [2, 6], "b3": [4]}
    for user, items in watched.items():
        workers[user[0]].process(views(user, items))
    workers["a"].forget_user("a1")
    workers["a"].publisher.flush()
    lose_keys_and_republish(host, clock, workers)
    del watched["a1"]
    watched["a2"].append(5)  # learned during the outage
    watched["b2"].append(5)
    assert set(host.writers) == set(watched)
    for user, items in watched.items():
        assert host.writers[user] == {user[0]}, user
        top = json.loads(host.strings[f"rs:user:{user}:top"])
        assert top["items"] and not set(top["items"]) & set(items), user
    assert not any(key.startswith("rs:user:a1:") for key in host.strings)


def test_a_restored_worker_keeps_only_its_own_live_users_to_publish(tmp_path: Path) -> None:
    host, clock, lock = Host(), Clock(), threading.Lock()
    layout, popularity = shared(tmp_path, lock)

    def worker(name: str) -> Online:
        return online(
            ModelConfig(dim=4),
            Client(host, name),
            clock=clock,
            storage=lambda config, generator: shared_storage(layout, config, generator, lock),
            popularity=popularity,
            owns=lambda user: str(user)[0] in name,
        )

    first = worker("ab")  # one worker before the restart: it owns everyone
    host.down = True
    first.process(views("a1", [1]) + views("a2", [2]) + views("b1", [3]))  # unpublished
    first.forget_user("a1")
    tensors, manifest = first.state()
    host.down = False
    for name in "ab":  # after it, two workers, both handed every unpublished user
        restored = worker(name)
        restored.learner.load_state(tensors, manifest, shared=False)
        restored.publisher.load_state(tensors, manifest, shared=False)
        restored.publisher.flush()
    assert set(host.writers) == {"a2", "b1"}
    assert all(writers == {user[0]} for user, writers in host.writers.items())
