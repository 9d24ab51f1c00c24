"""`consume`'s start-up checks that need no service: the metrics ports, and whether the
checkpoint it would restore was written with its model settings."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from consumers.cli import load_settings
from consumers.preflight import check_checkpoint, check_metrics_ports
from streamer.preflight import PreflightError


@pytest.fixture
def taken() -> Iterator[int]:
    """A loopback port that someone else listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_a_taken_metrics_port_stops_the_start_naming_it(taken: int) -> None:
    with pytest.raises(PreflightError, match=f"127.0.0.1:{taken}: .*--metrics-port"):
        check_metrics_ports("127.0.0.1", taken, 1)


@pytest.fixture
def taken_after_a_free_one() -> Iterator[int]:
    """A free loopback port whose next port someone else listens on (`taken - 1` alone
    was sometimes in use by another process: the check then named worker 0's port)."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            free = probe.getsockname()[1]
        with socket.socket() as other:
            try:
                other.bind(("127.0.0.1", free + 1))
            except OSError:
                continue
            other.listen()
            yield free
            return
    pytest.fail("no free loopback port with a bindable next port")


def test_the_port_of_a_later_worker_is_checked_too(taken_after_a_free_one: int) -> None:
    with pytest.raises(PreflightError, match=r"worker 1's: --metrics-port \+ 1"):
        check_metrics_ports("127.0.0.1", taken_after_a_free_one, 2)


def test_free_ports_and_port_0_pass() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    check_metrics_ports("127.0.0.1", free, 1)
    check_metrics_ports("127.0.0.1", 0, 8)


WRITTEN = Path(__file__).parent / "fixtures" / "checkpoint-v1"  # mf, dim 4, seed 5
SAME = {"dim": "4", "seed": "5"}


def test_a_checkpoint_written_with_other_model_settings_stops_the_start_naming_them() -> None:
    """Regression: restoring it raised a traceback from every worker (seen after an
    upgrade changed the features model's defaults)."""
    settings = load_settings("consume", {"checkpoint_dir": str(WRITTEN), **SAME, "dim": "8"})
    with pytest.raises(PreflightError, match=r"other model settings \(dim 4 -> 8\).*--group"):
        check_checkpoint(settings)
    other_model = load_settings(
        "consume", {"checkpoint_dir": str(WRITTEN), **SAME, "model": "features"}
    )
    with pytest.raises(PreflightError, match="negative_power"):
        check_checkpoint(other_model)


def test_its_own_settings_no_checkpoint_or_none_pass(tmp_path: Path) -> None:
    check_checkpoint(load_settings("consume", {"checkpoint_dir": str(WRITTEN), **SAME}))
    check_checkpoint(load_settings("consume", {"checkpoint_dir": str(tmp_path), "dim": "8"}))
    check_checkpoint(load_settings("consume", {"checkpoint_dir": "none", "dim": "8"}))
