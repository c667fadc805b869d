"""PeriodicActor: its schedule, RunNow, no overlapping ticks, crashes, stopping, in virtual time."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from trio.testing import MockClock

from sinal.engine.periodic import PeriodicActor, RunNow
from sinal.engine.registry import Registry
from sinal.engine.spec import ChildSpec, SupervisorFlags
from sinal.engine.supervisor import Supervisor
from tests.engine.engine_testing import Boom, engine_tasks, node, settle


class Recorder(PeriodicActor):
    """Records when each tick starts and ends (seconds since ``t0``)."""

    kind = "recorder"

    def __init__(
        self,
        name: str,
        interval: float,
        *,
        duration: float = 0.0,
        fail_on: set[int] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, interval, **kwargs)
        self.t0 = 0.0
        self.duration = duration
        self.fail_on = fail_on or set()
        self.starts: list[float] = []
        self.ends: list[float] = []
        self.active = 0
        self.max_active = 0

    def now(self) -> float:
        return trio.current_time() - self.t0

    async def tick(self) -> None:
        self.starts.append(self.now())
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            if self.duration:
                await trio.sleep(self.duration)
            if len(self.starts) in self.fail_on:
                raise Boom(f"tick {len(self.starts)} failed")
        finally:
            self.active -= 1
            self.ends.append(self.now())


def recorder(name: str = "rec", interval: float = 10.0, **kwargs: Any) -> Recorder:
    actor = Recorder(name, interval, registry=Registry(), **kwargs)
    actor.t0 = trio.current_time()
    return actor


async def test_ticks_follow_the_schedule(autojump_clock: MockClock) -> None:
    actor = recorder(interval=10.0, first_after=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(35.0)
        actor.ref.request_stop()
    assert actor.starts == pytest.approx([1.0, 11.0, 21.0, 31.0])
    assert actor.ticks == 4


async def test_the_first_tick_comes_after_one_interval_by_default(
    autojump_clock: MockClock,
) -> None:
    actor = recorder(interval=10.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(25.0)
        actor.ref.request_stop()
    assert actor.starts == pytest.approx([10.0, 20.0])


async def test_run_now_ticks_at_once_and_sets_done(autojump_clock: MockClock) -> None:
    actor = recorder(interval=100.0)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await trio.sleep(5.0)
        await actor.run_now()
        assert actor.starts == pytest.approx([5.0])
        assert actor.ticks == 1
        request = RunNow()
        assert not request.done.is_set()
        await ref.send(request)
        await request.done.wait()
        assert actor.now() == pytest.approx(5.0)  # no virtual time passed
        assert actor.ticks == 2
        ref.request_stop()
    assert actor.starts == pytest.approx([5.0, 5.0])


async def test_ticks_never_overlap(autojump_clock: MockClock) -> None:
    actor = recorder(interval=10.0, first_after=0.0, duration=3.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await trio.sleep(1.0)  # the scheduled tick at 0 runs until 3
        await actor.run_now()  # waits for it, then runs its own: 3 to 6
        assert actor.now() == pytest.approx(6.0)
        await trio.sleep(15.0)
        actor.ref.request_stop()
    assert actor.max_active == 1
    assert actor.starts == pytest.approx([0.0, 3.0, 10.0, 20.0])
    assert actor.ends == pytest.approx([3.0, 6.0, 13.0, 23.0])


async def test_a_failing_tick_crashes_the_actor_with_its_own_exception(
    autojump_clock: MockClock,
) -> None:
    actor = recorder(interval=10.0, fail_on={2})
    with pytest.raises(Boom, match="tick 2 failed"):
        await actor.run()
    assert actor.now() == pytest.approx(20.0)
    assert actor.ticks == 1
    assert not actor.running
    assert actor.registry.lookup("rec") is None


async def test_a_failing_run_now_sets_done_and_crashes(autojump_clock: MockClock) -> None:
    actor = recorder(interval=100.0, fail_on={1})
    request = RunNow()
    actor.ref.try_send(request)  # queued before the run: served at once
    with pytest.raises(Boom, match="tick 1 failed"):
        await actor.run()
    assert request.done.is_set()
    assert actor.ticks == 0
    assert actor.now() == pytest.approx(0.0)


async def test_a_supervisor_restarts_a_crashed_periodic_actor(autojump_clock: MockClock) -> None:
    actor = recorder(interval=10.0, fail_on={2})
    flags = SupervisorFlags(backoff_base=1.0, backoff_cap=1.0, backoff_jitter=0.0)
    sup = Supervisor("sup", [ChildSpec.of(actor)], flags)
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(25.0)
        status = node(sup.status(), "rec")
        assert status["restarts"] == 1
        assert status["state"] == "running"
        assert status["kind"] == "recorder"
        assert status["last_error"]["type"] == "Boom"
        assert actor.registry.lookup("rec") is actor.ref
        await actor.run_now()  # the restarted run serves requests
        sup.request_stop()
    # Ticks at 10 and 20 (crash), restart at 21 after 1 s of backoff, next tick at 31;
    # the requested one ran at 25.
    assert actor.starts == pytest.approx([10.0, 20.0, 25.0])
    assert actor.ticks == 2
    assert engine_tasks() == []


async def test_request_stop_ends_it_cleanly(autojump_clock: MockClock) -> None:
    actor = recorder(interval=10.0)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await trio.sleep(15.0)
        assert ref.request_stop()
        await settle()
        assert not actor.running
        assert engine_tasks() == []
    assert actor.now() == pytest.approx(15.0)  # ended at once, not at the next tick
    assert actor.ticks == 1
    assert not ref.request_stop()  # nobody listens any more


async def test_stopping_lets_a_tick_in_progress_finish(autojump_clock: MockClock) -> None:
    actor = recorder(interval=10.0, duration=4.0)
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await trio.sleep(11.0)  # inside the tick that runs from 10 to 14
        ref.request_stop()
    assert actor.now() == pytest.approx(14.0)
    assert actor.ends == pytest.approx([14.0])
    assert actor.ticks == 1


async def test_it_registers_its_name_in_the_given_registry(autojump_clock: MockClock) -> None:
    registry = Registry()
    actor = Recorder("sweeper", 60.0, registry=registry)
    assert registry.lookup("sweeper") is None
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        assert ref.kind == "recorder"
        assert registry.lookup("sweeper") is actor.ref is ref
        assert registry.count("recorder") == 1
        actor.ref.request_stop()
    assert registry.lookup("sweeper") is None
    assert registry.count("recorder") == 0


def test_the_base_kind_is_periodic() -> None:
    assert PeriodicActor.kind == "periodic"
    assert PeriodicActor("p", 1.0, registry=Registry()).ref.kind == "periodic"


@pytest.mark.parametrize(
    ("interval", "first_after"), [(0.0, None), (-1.0, None), (float("inf"), None), (1.0, -1.0)]
)
def test_a_bad_schedule_is_refused_at_construction(
    interval: float, first_after: float | None
) -> None:
    with pytest.raises(ValueError, match="interval|first_after"):
        PeriodicActor("p", interval, first_after=first_after, registry=Registry())


async def test_tick_must_be_implemented(autojump_clock: MockClock) -> None:
    actor = PeriodicActor("p", 1.0, registry=Registry())
    with pytest.raises(NotImplementedError, match="tick"):
        await actor.run()
