"""`consume`'s start-up checks that need no service: the metrics ports."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from consumers.preflight import check_metrics_ports
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


def test_the_port_of_a_later_worker_is_checked_too(taken: int) -> None:
    with pytest.raises(PreflightError, match=r"worker 1's: --metrics-port \+ 1"):
        check_metrics_ports("127.0.0.1", taken - 1, 2)


def test_free_ports_and_port_0_pass() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    check_metrics_ports("127.0.0.1", free, 1)
    check_metrics_ports("127.0.0.1", 0, 8)
