"""Heartbeat and idle-timeout helpers, in virtual time."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from sinal.engine.timers import Heartbeat, IdleTimeout, IdleTimeoutError


async def test_heartbeat_beats_on_a_fixed_schedule(autojump_clock: MockClock) -> None:
    times: list[float] = []
    t0 = trio.current_time()

    async def beat() -> None:
        times.append(trio.current_time() - t0)
        await trio.sleep(0.25)  # a beat that takes time does not shift the schedule

    heartbeat = Heartbeat(2.0, beat)
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        await trio.sleep(9.0)
        nursery.cancel_scope.cancel()
    assert times == pytest.approx([2.0, 4.0, 6.0, 8.0])
    assert heartbeat.beats == 4


async def test_heartbeat_first_beat_can_come_sooner(autojump_clock: MockClock) -> None:
    times: list[float] = []
    t0 = trio.current_time()

    async def beat() -> None:
        times.append(trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        await nursery.start(Heartbeat(3.0, beat, first_after=0).run)
        await trio.sleep(7.0)
        nursery.cancel_scope.cancel()
    assert times == pytest.approx([0.0, 3.0, 6.0])


async def test_a_slow_beat_skips_missed_ticks_instead_of_bunching(
    autojump_clock: MockClock,
) -> None:
    times: list[float] = []
    t0 = trio.current_time()

    async def beat() -> None:
        times.append(trio.current_time() - t0)
        if len(times) == 2:
            await trio.sleep(3.5)  # overruns the ticks at 3 and 4

    heartbeat = Heartbeat(1.0, beat)
    async with trio.open_nursery() as nursery:
        await nursery.start(heartbeat.run)
        await trio.sleep(7.5)
        nursery.cancel_scope.cancel()
    assert times == pytest.approx([1.0, 2.0, 6.0, 7.0])
    assert heartbeat.skipped == 3


@pytest.mark.parametrize("interval", [0, -1, float("inf"), float("nan")])
def test_heartbeat_interval_must_be_positive(interval: float) -> None:
    async def beat() -> None:
        pass

    with pytest.raises(ValueError, match="interval"):
        Heartbeat(interval, beat)


async def test_idle_timeout_expires_after_silence(autojump_clock: MockClock) -> None:
    t0 = trio.current_time()
    with IdleTimeout(8.0, slack=1.0) as idle:
        await trio.sleep_forever()
    assert idle.expired
    assert trio.current_time() - t0 == pytest.approx(9.0)  # timeout + slack at most


async def test_touch_keeps_the_block_alive_and_expiry_follows_the_last_touch(
    autojump_clock: MockClock,
) -> None:
    t0 = trio.current_time()
    with IdleTimeout(8.0, slack=1.0) as idle:
        for _ in range(30):  # 30 s of traffic, one message a second
            await trio.sleep(1.0)
            idle.touch()
        last_touch = trio.current_time()
        await trio.sleep_forever()
    assert idle.expired
    silence = trio.current_time() - last_touch
    assert 8.0 <= silence <= 9.0
    assert trio.current_time() - t0 > 30


async def test_touch_moves_the_deadline_at_most_once_per_slack(
    autojump_clock: MockClock,
) -> None:
    with IdleTimeout(10.0, slack=2.0) as idle:
        deadlines = set()
        for _ in range(1000):  # 1000 messages within 1 s
            await trio.sleep(0.001)
            idle.touch()
            assert idle._scope is not None
            deadlines.add(idle._scope.deadline)
        assert len(deadlines) == 1
        assert idle.idle_for == pytest.approx(0.0)
    assert not idle.expired


async def test_idle_timeout_can_raise(autojump_clock: MockClock) -> None:
    with pytest.raises(IdleTimeoutError, match="no activity for 5s"):
        with IdleTimeout(5.0, raise_on_expiry=True):
            await trio.sleep_forever()


async def test_a_finished_block_is_not_expired(autojump_clock: MockClock) -> None:
    with IdleTimeout(5.0, raise_on_expiry=True) as idle:
        await trio.sleep(1.0)
    assert not idle.expired


async def test_outer_cancellation_is_not_taken_for_idleness(autojump_clock: MockClock) -> None:
    with trio.move_on_after(1.0) as outer:
        with IdleTimeout(5.0, raise_on_expiry=True) as idle:
            await trio.sleep_forever()
    assert outer.cancelled_caught
    assert not idle.expired
