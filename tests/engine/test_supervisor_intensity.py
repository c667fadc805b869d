"""Restart intensity, escalation through the tree, backoff, shutdown deadlines, leaks."""

from __future__ import annotations

import logging

import pytest
import trio
from trio.testing import MockClock

from sinal.engine.actor import Actor
from sinal.engine.registry import Registry
from sinal.engine.supervisor import (
    ChildSpec,
    Restart,
    Strategy,
    Supervisor,
    SupervisorEscalation,
    SupervisorFlags,
    backoff_delay,
)
from tests.engine.engine_testing import Boom, Workers, engine_tasks, node, settle


def no_backoff(**kw: object) -> SupervisorFlags:
    return SupervisorFlags(backoff_base=0.0, backoff_cap=0.0, **kw)  # type: ignore[arg-type]


async def test_intensity_exceeded_stops_children_in_reverse_and_escalates(
    autojump_clock: MockClock, workers: Workers
) -> None:
    sup = Supervisor("s", [workers.spec(n) for n in "abcd"], no_backoff(intensity=2, period=10.0))
    with pytest.RaisesGroup(SupervisorEscalation) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            for _ in range(2):
                workers.current["b"].crash()
                await settle()
            assert node(sup.status(), "b")["restarts"] == 2
            workers.starts_and_ends()
            workers.current["b"].crash()  # third restart within 10 s: one too many
            await settle()
    error = caught.value.exceptions[0]
    assert isinstance(error, SupervisorEscalation)
    assert error.supervisor == "s" and error.child == "b"
    assert isinstance(error.last_error, Boom)
    assert error.__cause__ is error.last_error
    assert "more than 2 restarts in 10s" in str(error)
    assert workers.starts_and_ends() == [("end", "b"), ("end", "d"), ("end", "c"), ("end", "a")]
    status = sup.status()
    assert status["state"] == "failed"
    assert status["last_error"]["type"] == "SupervisorEscalation"
    assert node(status, "b")["state"] == "failed"
    assert [node(status, n)["state"] for n in "acd"] == ["stopped"] * 3
    assert engine_tasks() == []


async def test_restarts_spread_wider_than_the_period_never_escalate(
    autojump_clock: MockClock, workers: Workers
) -> None:
    sup = Supervisor("s", [workers.spec("a")], no_backoff(intensity=1, period=5.0))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(6):
            workers.current["a"].crash()
            await settle()
            await trio.sleep(5.0)
        assert node(sup.status(), "a")["restarts"] == 6
        assert sup.status()["intensity"]["recent_restarts"] == 0
        sup.request_stop()


def sub_tree(workers: Workers, name: str, children: str) -> Supervisor:
    return Supervisor(name, [workers.spec(n) for n in children], no_backoff(intensity=0))


@pytest.mark.parametrize(
    ("parent_strategy", "expected"),
    [
        # x, sub(a, b), y: a crashes, sub gives up at once (intensity 0).
        (
            Strategy.ONE_FOR_ONE,
            [("end", "a"), ("end", "b"), ("start", "a"), ("start", "b")],
        ),
        (
            Strategy.REST_FOR_ONE,
            [
                ("end", "a"),
                ("end", "b"),
                ("end", "y"),
                ("start", "a"),
                ("start", "b"),
                ("start", "y"),
            ],
        ),
        (
            Strategy.ONE_FOR_ALL,
            [
                ("end", "a"),
                ("end", "b"),
                ("end", "y"),
                ("end", "x"),
                ("start", "x"),
                ("start", "a"),
                ("start", "b"),
                ("start", "y"),
            ],
        ),
    ],
)
async def test_escalation_is_a_child_crash_for_the_parent_strategy(
    autojump_clock: MockClock,
    workers: Workers,
    parent_strategy: Strategy,
    expected: list[tuple[str, str]],
) -> None:
    sub = sub_tree(workers, "sub", "ab")
    root = Supervisor(
        "root",
        [workers.spec("x"), ChildSpec.of(sub), workers.spec("y")],
        no_backoff(strategy=parent_strategy),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        workers.starts_and_ends()
        workers.current["a"].crash()
        await settle()
        assert workers.starts_and_ends() == expected
        status = root.status()
        sub_node = node(status, "sub")
        assert sub_node["type"] == "supervisor"
        assert sub_node["restarts"] == 1
        assert sub_node["state"] == "running"
        assert sub_node["last_error"]["type"] == "SupervisorEscalation"
        assert [c["state"] for c in sub_node["children"]] == ["running", "running"]
        root.request_stop()
    assert engine_tasks() == []


async def test_escalation_climbs_until_a_supervisor_can_absorb_it(
    autojump_clock: MockClock, workers: Workers
) -> None:
    leaf = sub_tree(workers, "leaf", "a")
    middle = Supervisor("middle", [ChildSpec.of(leaf)], no_backoff(intensity=0))
    root = Supervisor("root", [ChildSpec.of(middle)], no_backoff(intensity=3))
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        workers.current["a"].crash()
        await settle()
        middle_node = node(root.status(), "middle")
        assert middle_node["restarts"] == 1
        assert node(middle_node, "leaf")["restarts"] == 0  # a fresh leaf in a fresh middle
        assert workers.starts["a"] == 2
        root.request_stop()


async def test_backoff_delays_follow_the_documented_curve(
    autojump_clock: MockClock, workers: Workers
) -> None:
    u = 0.25
    flags = SupervisorFlags(
        intensity=20, period=1000.0, backoff_base=0.5, backoff_cap=4.0, backoff_jitter=0.4
    )
    sup = Supervisor("s", [workers.spec("a")], flags, rng=lambda: u)
    restart_times: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        for _ in range(7):
            crashed_at = trio.current_time()
            workers.current["a"].crash()
            await workers.next_start("a")
            restart_times.append(trio.current_time() - crashed_at)
        sup.request_stop()
    # delay_k = min(cap, base * 2**k) * (1 - jitter * u)
    expected = [min(4.0, 0.5 * 2**k) * (1 - 0.4 * u) for k in range(7)]
    assert expected[:5] == pytest.approx([0.45, 0.9, 1.8, 3.6, 3.6])
    assert restart_times == pytest.approx(expected, abs=1e-9)


def test_backoff_delay_bounds() -> None:
    flags = SupervisorFlags(backoff_base=1.0, backoff_cap=30.0, backoff_jitter=0.5)
    assert [backoff_delay(flags, k, 0.0) for k in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert backoff_delay(flags, 3, 0.999999) == pytest.approx(4.0, abs=1e-5)
    assert backoff_delay(flags, 10_000, 0.0) == 30.0  # no overflow for large k
    no_jitter = SupervisorFlags(backoff_base=1.0, backoff_cap=30.0, backoff_jitter=0.0)
    assert backoff_delay(no_jitter, 2, 0.9) == 4.0


async def test_jitter_uses_the_injected_random_source(
    autojump_clock: MockClock, workers: Workers
) -> None:
    draws = iter([0.0, 0.9])
    flags = SupervisorFlags(backoff_base=1.0, backoff_cap=1.0, backoff_jitter=0.5)
    sup = Supervisor("s", [workers.spec("a")], flags, rng=lambda: next(draws))
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        delays = []
        for _ in range(2):
            t0 = trio.current_time()
            workers.current["a"].crash()
            await workers.next_start("a")
            delays.append(trio.current_time() - t0)
        sup.request_stop()
    assert delays == pytest.approx([1.0, 0.55], abs=1e-9)


class Stubborn(Actor[str]):
    """Handles each message for a long time; stop requests wait for the message."""

    kind = "stubborn"

    def __init__(self, name: str, registry: Registry, seconds: float) -> None:
        super().__init__(name, registry=registry)
        self.seconds = seconds
        self.handled: list[str] = []

    async def handle(self, message: str) -> None:
        await trio.sleep(self.seconds)
        self.handled.append(message)


async def test_polite_stop_waits_for_the_current_message_within_the_deadline(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    actor = Stubborn("quick", registry, seconds=2.0)
    sup = Supervisor("s", [ChildSpec.of(actor, shutdown=5.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await actor.ref.send("one")
        await actor.ref.send("two")
        await trio.sleep(1.0)  # "one" is half done
        t0 = trio.current_time()
        sup.request_stop()
    assert trio.current_time() - t0 == pytest.approx(1.0)
    assert actor.handled == ["one"]  # finished, then stopped between messages
    assert actor.ref.depth == 1  # "two" waits in the inbox for a next run
    assert node(sup.status(), "quick")["overruns"] == 0


async def test_child_overrunning_its_shutdown_deadline_is_cancelled_and_reported(
    autojump_clock: MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    registry = Registry()
    slow = Stubborn("slow", registry, seconds=100.0)
    sup = Supervisor("s", [ChildSpec.of(slow, shutdown=3.0)])
    caplog.set_level(logging.WARNING, logger="sinal.supervisor")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await slow.ref.send("forever")
        await settle()
        t0 = trio.current_time()
        sup.request_stop()
    assert trio.current_time() - t0 == pytest.approx(3.0)
    assert slow.handled == []
    child = node(sup.status(), "slow")
    assert child["overruns"] == 1
    assert child["state"] == "stopped"
    assert "did not stop within its 3s shutdown deadline" in caplog.text


async def test_shielded_cleanup_past_the_deadline_is_reported(
    autojump_clock: MockClock, workers: Workers
) -> None:
    workers.cleanup_seconds["b"] = 4.0  # cleanup that cancellation cannot cut short
    sup = Supervisor("s", [workers.spec("a"), workers.spec("b", shutdown=1.0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        t0 = trio.current_time()
        sup.request_stop()
    assert trio.current_time() - t0 == pytest.approx(4.0)
    assert node(sup.status(), "b")["overruns"] == 1
    assert node(sup.status(), "a")["overruns"] == 0


async def test_zero_shutdown_cancels_at_once_without_an_overrun(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    slow = Stubborn("slow", registry, seconds=100.0)
    sup = Supervisor("s", [ChildSpec.of(slow, shutdown=0)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await slow.ref.send("x")
        await settle()
        t0 = trio.current_time()
        sup.request_stop()
    assert trio.current_time() == t0
    assert node(sup.status(), "slow")["overruns"] == 0


async def test_no_task_or_registration_remains_after_the_tree_stops(
    autojump_clock: MockClock, workers: Workers
) -> None:
    registry = Registry()
    actors = [Stubborn(f"act{i}", registry, seconds=0.1) for i in range(3)]
    sub = Supervisor(
        "sub",
        [ChildSpec.of(a) for a in actors] + [workers.spec("w", Restart.TRANSIENT)],
        no_backoff(strategy=Strategy.ONE_FOR_ALL),
    )
    root = Supervisor("root", [workers.spec("x"), ChildSpec.of(sub)], no_backoff())
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert registry.total() == 3
        assert len(engine_tasks()) >= 7  # root, x, sub, 3 actors, w
        workers.current["w"].crash()
        await settle()
        assert registry.total() == 3
        root.request_stop()
    assert engine_tasks() == []
    assert registry.total() == 0
    assert registry.names() == []


async def test_cancellation_during_a_backoff_wait_leaves_nothing_behind(
    autojump_clock: MockClock, workers: Workers
) -> None:
    flags = SupervisorFlags(backoff_base=30.0, backoff_cap=30.0, backoff_jitter=0.0)
    sup = Supervisor("s", [workers.spec("a"), workers.spec("b")], flags)
    with trio.move_on_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            workers.current["a"].crash()
            await trio.sleep(1)
            assert node(sup.status(), "a")["state"] == "restarting"
            await trio.sleep_forever()
    assert workers.starts["a"] == 1  # never restarted: the wait was cut short
    assert [node(sup.status(), n)["state"] for n in "ab"] == ["stopped", "stopped"]
    assert engine_tasks() == []


async def test_cancellation_while_a_child_is_starting_leaves_nothing_behind(
    autojump_clock: MockClock, workers: Workers
) -> None:
    async def never_ready(*, task_status: trio.TaskStatus[None]) -> None:
        await trio.sleep_forever()

    sup = Supervisor("s", [workers.spec("a"), ChildSpec("stuck", never_ready)])
    with trio.move_on_after(5) as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
    assert scope.cancelled_caught
    assert workers.starts_and_ends() == [("start", "a"), ("end", "a")]
    assert engine_tasks() == []
