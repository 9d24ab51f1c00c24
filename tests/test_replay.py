"""Replay pacing on a fake clock: steady rate, no drift, bounded catch-up, limits."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamer.events import ViewEvent
from streamer.replay import replay


class FakeClock:
    """A clock that moves only when slept on or pushed; `send` records when it was called."""

    def __init__(self) -> None:
        self.now = 100.0
        self.sent_at: list[float] = []
        self.send_cost = 0.0

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds

    def send(self, _event: ViewEvent) -> None:
        self.sent_at.append(self.now)
        self.now += self.send_cost


def views(n: int) -> Iterator[ViewEvent]:
    return (ViewEvent(user=f"u{i}", item="i1", ts=float(i)) for i in range(n))


def test_events_go_out_on_a_steady_schedule() -> None:
    fake = FakeClock()
    count = replay(views(10), fake.send, rate=5.0, clock=fake.clock, sleep=fake.sleep)
    assert count == 10
    assert fake.sent_at == pytest.approx([100.0 + i / 5.0 for i in range(10)])


def test_a_slow_send_does_not_accumulate_drift() -> None:
    fake = FakeClock()
    fake.send_cost = 0.03  # each send eats 30 ms of the 100 ms slot
    replay(views(50), fake.send, rate=10.0, clock=fake.clock, sleep=fake.sleep)
    assert fake.sent_at == pytest.approx([100.0 + i / 10.0 for i in range(50)])


def test_a_stall_is_caught_up_in_one_bounded_burst() -> None:
    fake = FakeClock()
    stalled = False

    def send(event: ViewEvent) -> None:
        nonlocal stalled
        fake.send(event)
        if event.user == "u2" and not stalled:  # the sink hangs for 10 s once
            stalled = True
            fake.now += 10.0

    replay(views(12), send, rate=10.0, burst=3, clock=fake.clock, sleep=fake.sleep)
    resumed = 100.2 + 10.0
    # Three go at once after the stall (the burst), then the schedule goes on from there.
    expected = [100.0, 100.1, 100.2] + [resumed] * 3 + [resumed + i / 10.0 for i in range(1, 7)]
    assert fake.sent_at == pytest.approx(expected)


def test_limit_stops_without_drawing_more_events() -> None:
    fake = FakeClock()
    source = views(100)
    assert replay(source, fake.send, rate=None, limit=7) == 7
    assert next(source).user == "u7"
    assert replay(views(3), fake.send, limit=10) == 3
    assert replay(views(3), fake.send, limit=0) == 0


def test_no_rate_means_no_sleep() -> None:
    def sleep(_seconds: float) -> None:
        raise AssertionError("slept without a rate")

    fake = FakeClock()
    assert replay(views(20), fake.send, clock=fake.clock, sleep=sleep) == 20
    assert fake.sent_at == [100.0] * 20


def test_progress_bar_counts_to_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    fake = FakeClock()
    replay(views(5), fake.send, rate=None, limit=5, progress=True)
    assert "5/5" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad", [{"rate": 0.0}, {"rate": -1.0}, {"limit": -1}, {"rate": 1.0, "burst": 0}]
)
def test_bad_arguments_are_refused(bad: dict[str, float]) -> None:
    fake = FakeClock()
    with pytest.raises(ValueError):
        replay(views(1), fake.send, **bad)  # type: ignore[arg-type]
