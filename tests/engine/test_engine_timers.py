"""The heartbeat timer, in virtual time."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from sinal.engine.timers import Heartbeat


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
