"""The GarbageCollector actor (actors/collector.py): takes the full collections over from
CPython while it runs, runs one per interval and says how long it took, gives the policy
back when the last holder stops. Virtual time."""

from __future__ import annotations

import gc

import trio
import trio.testing

from sinal.actors.collector import NO_AUTOMATIC_FULL, GarbageCollector
from sinal.engine.registry import Registry


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_full_collections_run_on_the_timer_not_automatically(
        autojump_clock: trio.testing.MockClock) -> None:
    before = gc.get_threshold()
    first = GarbageCollector(60.0, registry=Registry())
    second = GarbageCollector(60.0, registry=Registry())
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await nursery.start(second.run)
        assert gc.get_threshold() == (before[0], before[1], NO_AUTOMATIC_FULL)
        for _ in range(100):
            Cycle()  # garbage that only a collection frees
        await trio.sleep(59)
        assert first.collections == 0
        await trio.sleep(2)
        assert first.collections == 1 and first.collected >= 100
        status = first.describe()
        assert status["fullCollections"] == 1 and status["lastPauseMs"] >= 0
        first.ref.request_stop()
        await trio.testing.wait_all_tasks_blocked()
        assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL  # the second still holds it
        nursery.cancel_scope.cancel()
    assert gc.get_threshold() == before  # the last one gave it back
