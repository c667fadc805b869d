"""The GarbageCollector actor (actors/collector.py): takes the full collections over from
CPython while it runs, runs one per interval and says how long it took, gives the policy
back when the last holder stops. Virtual time."""

from __future__ import annotations

import gc
import weakref

import trio
import trio.testing

from sinal.actors.collector import DEEP_EVERY, NO_AUTOMATIC_FULL, GarbageCollector
from sinal.engine.registry import Registry


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_full_collections_run_on_the_timer_not_automatically(
        autojump_clock: trio.testing.MockClock) -> None:
    before = gc.get_threshold()
    first = GarbageCollector(60.0, registry=Registry())
    second = GarbageCollector(3600.0, registry=Registry())  # never ticks in this test
    async with trio.open_nursery() as nursery:
        await nursery.start(first.run)
        await nursery.start(second.run)
        assert gc.get_threshold() == (before[0], before[1], NO_AUTOMATIC_FULL)
        # cycles that reach the oldest generation, then become garbage: only a full
        # collection can free them (young ones are freed by CPython's young collections)
        held = [Cycle() for _ in range(100)]
        gc.collect(1)  # the survivors move to the oldest generation
        watch = [weakref.ref(c) for c in held]
        del held
        for _ in range(50):  # plenty of allocation: many young collections, no full one
            junk = [[i] for i in range(10_000)]
            del junk
            await trio.sleep(1)
        assert first.collections == 0
        assert all(ref() is not None for ref in watch)
        await trio.sleep(11)
        assert first.collections == 1 and first.collected >= 100
        assert all(ref() is None for ref in watch)
        status = first.describe()
        assert status["fullCollections"] == 1 and status["lastPauseMs"] >= 0
        first.ref.request_stop()
        await trio.testing.wait_all_tasks_blocked()
        assert gc.get_threshold()[2] == NO_AUTOMATIC_FULL  # the second still holds it
        nursery.cancel_scope.cancel()
    assert gc.get_threshold() == before  # the last one gave it back


async def test_with_freeze_survivors_leave_later_collections_until_the_deep_one(
        autojump_clock: trio.testing.MockClock) -> None:
    collector = GarbageCollector(60.0, freeze=True, registry=Registry())
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(collector.run)
            held = [Cycle() for _ in range(100)]
            await trio.sleep(61)  # the first collection freezes them (alive)
            assert collector.collections == 1 and gc.get_freeze_count() > 0
            watch = [weakref.ref(c) for c in held]
            del held  # garbage now, but frozen: ordinary collections do not see it
            await trio.sleep(60 * (DEEP_EVERY - 2))
            assert collector.collections == DEEP_EVERY - 1
            assert all(ref() is not None for ref in watch)
            await trio.sleep(60)  # the deep one unfreezes first
            assert collector.describe()["deepCollections"] == 1
            assert all(ref() is None for ref in watch)
            nursery.cancel_scope.cancel()
    finally:
        gc.unfreeze()
