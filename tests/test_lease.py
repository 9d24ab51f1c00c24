"""One model per prefix: the owner lease, alone and between learner processes."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from consumers.sinks.lease import Owner, OwnerConflict, OwnerLease
from consumers.sinks.memory import MemoryStore
from tests.conftest import RedisTarget
from tests.learners import Learner, wait_for

HERE = Owner.this_process()


def owner(**changes: object) -> Owner:
    fields = {"host": "elsewhere", "pid": 4242, "namespace": "", "since": 0.0, "nonce": "x"}
    return Owner(**{**fields, **changes})  # type: ignore[arg-type]


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_a_claim_is_refused_while_the_holder_renews_naming_prefix_and_holder() -> None:
    store = MemoryStore("m1:")
    other = owner(host="learner-a", pid=77)
    store.hold_owner(other.token, 60)
    with pytest.raises(OwnerConflict) as refused:
        OwnerLease(store, term_s=0.5).claim()
    message = str(refused.value)
    assert "'m1:'" in message and "m1:owner" in message
    assert "host learner-a, pid 77" in message
    assert store.hold_owner(other.token, 60) is None  # still the holder's


def test_a_claim_takes_over_a_lease_that_lapses_within_its_term() -> None:
    store = MemoryStore("m2:")
    store.hold_owner(owner().token, 0.3)
    lease = OwnerLease(store, term_s=5)
    lease.claim()
    assert store.hold_owner("someone", 5) == lease.owner.token


@pytest.mark.parametrize("pid", [dead_pid(), HERE.pid], ids=["pid gone", "own pid"])
def test_a_holder_that_died_in_this_pid_namespace_is_replaced_at_once(pid: int) -> None:
    if not HERE.namespace:
        pytest.skip("no /proc: pid namespaces unknown")
    store = MemoryStore("m3:")
    store.hold_owner(owner(host=HERE.host, pid=pid, namespace=HERE.namespace).token, 3600)
    lease = OwnerLease(store, term_s=3600)  # a wait would fail the test's time, not pass it
    lease.claim()
    assert store.hold_owner("someone", 5) == lease.owner.token


def test_a_live_pid_or_one_in_another_namespace_is_not_taken_for_dead() -> None:
    assert not owner(pid=os.getppid(), namespace=HERE.namespace).gone(HERE)
    assert not owner(pid=dead_pid(), namespace="another").gone(HERE)


def test_a_kept_lease_renews_releases_and_reports_a_loss() -> None:
    store = MemoryStore("m4:")
    lease = OwnerLease(store, term_s=0.3)
    lease.claim()
    lost = threading.Event()
    assert store.owner is not None
    claimed_until = store.owner[1]
    with lease.kept(on_lost=lost.set):
        wait_for(lambda: store.owner is not None and store.owner[1] > claimed_until, 5, "renewal")
        assert store.hold_owner("intruder", 5, replacing=lease.owner.token) is None
        wait_for(lost.is_set, 5, "the loss to be noticed")
    assert lease.lost
    assert store.hold_owner("third", 5) == "intruder"  # release leaves another's lease alone
    fresh = OwnerLease(MemoryStore("m5:"), term_s=60)
    fresh.claim()
    with fresh.kept(on_lost=lost.set):
        pass
    assert fresh.store.hold_owner("next", 5) is None


# -- learner processes on the real Redis ---------------------------------------------------


def consume(bootstrap: str, topic: str, url: str, prefix: str, *extra: str) -> list[str]:
    """Without checkpoints: the leases are under test, not restarts with another --workers."""
    return [
        "--bootstrap", bootstrap, "--topic", topic, "--group", f"{topic}-{prefix}",
        "--redis", url, "--prefix", prefix, "--users-topic", "", "--items-topic", "", "--dim", "8",
        "--checkpoint-dir", "none", *extra,
    ]  # fmt: skip


def holder(target: RedisTarget, prefix: str) -> Owner | None:
    token = target.client.get(f"{prefix}owner")
    return None if token is None else Owner.parse(token.decode())


def test_a_second_learner_on_a_prefix_is_refused_until_the_first_stops(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, tmp_path: Path
) -> None:
    prefix, other_prefix = redis_db.prefix, redis_db.prefix + "b:"
    args = consume(kafka_bootstrap, kafka_topic, redis_db.url, prefix, "--owner-lease-s", "1")
    first = Learner([*args, "--workers", "2"], tmp_path / "first.log").start()
    started = [first]
    try:
        assert first.process is not None
        wait_for(lambda: holder(redis_db, prefix) is not None, 60, first.log)
        held = holder(redis_db, prefix)
        assert held is not None and held.pid == first.process.pid  # the supervisor's token

        second = Learner(args, tmp_path / "second.log").start()
        elsewhere = consume(kafka_bootstrap, kafka_topic, redis_db.url, other_prefix)
        third = Learner(elsewhere, tmp_path / "third.log").start()
        started += [second, third]
        assert second.process is not None and second.process.wait(60) == 1
        assert f"another live model publishes under prefix '{prefix}'" in second.log()
        assert f"pid {first.process.pid}" in second.log()
        wait_for(lambda: holder(redis_db, other_prefix) is not None, 60, third.log)
        assert third.stop() == 0 and holder(redis_db, other_prefix) is None

        assert first.stop() == 0, first.log()
        assert holder(redis_db, prefix) is None  # released on a clean stop
        fourth = Learner(args, tmp_path / "fourth.log").start()
        started.append(fourth)
        assert fourth.process is not None
        wait_for(lambda: getattr(holder(redis_db, prefix), "pid", 0) == fourth.process.pid, 60, "")
        assert fourth.stop() == 0
    finally:
        for learner in started:
            if learner.alive():
                learner.kill()


# A SIGTERM that lands the moment the lease is claimed (a supervisor stopping a
# learner as it starts), by a learner that signals itself there.
FREE_METRICS = ["--metrics-port", "0"]
SIGTERM_AT_CLAIM = """
import os, signal, sys
from consumers.cli import main
from consumers.sinks.lease import OwnerLease
claim = OwnerLease.claim
def claim_then_sigterm(self):
    claim(self)
    os.kill(os.getpid(), signal.SIGTERM)
OwnerLease.claim = claim_then_sigterm
sys.exit(main(["consume", *sys.argv[1:]]))
"""


@pytest.mark.parametrize("workers", [1, 2])
def test_a_sigterm_as_the_lease_is_claimed_stops_cleanly_and_releases_it(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, workers: int
) -> None:
    args = consume(kafka_bootstrap, kafka_topic, redis_db.url, redis_db.prefix)
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    done = subprocess.run(
        [sys.executable, "-c", SIGTERM_AT_CLAIM, *args, "--workers", str(workers), *FREE_METRICS],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert holder(redis_db, redis_db.prefix) is None  # released, not left to lapse


def test_a_prefix_held_from_another_host_refuses_a_learner(
    kafka_bootstrap: str, kafka_topic: str, redis_db: RedisTarget, tmp_path: Path
) -> None:
    prefix = redis_db.prefix
    redis_db.client.set(f"{prefix}owner", owner(host="host-b", pid=9).token, px=60_000)
    learner = Learner(
        consume(kafka_bootstrap, kafka_topic, redis_db.url, prefix, "--owner-lease-s", "1"),
        tmp_path / "learner.log",
    ).start()
    assert learner.process is not None
    try:
        assert learner.process.wait(60) == 1
    finally:
        if learner.alive():
            learner.kill()
    assert f"another live model publishes under prefix '{prefix}'" in learner.log()
    assert "host host-b, pid 9" in learner.log()
