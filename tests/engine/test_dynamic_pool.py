"""The dynamic pool: admission at the maximum, counts, top inboxes, restarts, shutdown."""

from __future__ import annotations

import json
import time

import pytest
import trio
from trio.testing import MockClock

from sinal.engine.actor import Actor, ActorRef
from sinal.engine.dynamic import DynamicSupervisor, PoolFull, PoolNotRunning
from sinal.engine.registry import Registry
from sinal.engine.supervisor import (
    ChildSpec,
    Restart,
    Supervisor,
    SupervisorEscalation,
    SupervisorFlags,
)
from tests.engine.engine_testing import Boom, engine_tasks, settle


class Connection(Actor[str]):
    """A stand-in for the connection actor: counted by kind, not named globally.

    "pause" makes it stop reading its inbox until ``resume`` is set, so tests can
    give each connection a chosen inbox depth. "crash" makes it fail, "close"
    makes it end.
    """

    kind = "connection"

    def __init__(self, name: str, registry: Registry) -> None:
        super().__init__(name, capacity=8, registry=registry, unique_name=False)
        self.resume = trio.Event()

    async def main(self) -> None:
        async for message in self.messages():
            if message == "crash":
                raise Boom(self.name)
            if message == "close":
                return
            if message == "pause":
                await self.resume.wait()


class Factory:
    """Start function of the pool: builds a Connection per child."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self.made: list[Connection] = []

    async def __call__(self, name: str, *, task_status: trio.TaskStatus[ActorRef[str]]) -> None:
        connection = Connection(name, self.registry)
        self.made.append(connection)
        await connection.run(task_status=task_status)


def make_pool(
    registry: Registry, max_children: int = 3, **kw: object
) -> tuple[DynamicSupervisor, Factory]:
    factory = Factory(registry)
    pool = DynamicSupervisor(
        "connections",
        factory,
        child_kind="connection",
        max_children=max_children,
        **kw,  # type: ignore[arg-type]
    )
    return pool, factory


async def test_pool_refuses_past_its_maximum_with_a_clear_reason(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    pool, _ = make_pool(registry, max_children=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        first = await pool.start_child("c1")
        await pool.start_child("c2")
        with pytest.raises(PoolFull) as caught:
            await pool.start_child("c3")
        assert str(caught.value) == (
            "pool 'connections' refused a new connection: it is at its maximum of 2 live children"
        )
        assert caught.value.limit == 2
        assert registry.count("connection") == 2
        assert registry.lookup("c1") is None  # counted by kind, not named globally
        await first.send("close")
        await settle()
        await pool.start_child("c3")  # the slot was freed
        counts = pool.status()["counts"]
        assert counts["live"] == 2
        assert counts["refused_total"] == 1
        assert counts["started_total"] == 3
        assert counts["exited_total"] == 1
        pool.request_stop()
    assert registry.total() == 0
    assert engine_tasks() == []


async def test_pool_refuses_before_it_runs_and_after_it_stops(autojump_clock: MockClock) -> None:
    pool, _ = make_pool(Registry())
    with pytest.raises(PoolNotRunning, match="not accepting children"):
        await pool.start_child("c1")
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        pool.request_stop()
    with pytest.raises(PoolNotRunning):
        await pool.start_child("c1")


async def test_children_are_temporary_by_default(autojump_clock: MockClock) -> None:
    registry = Registry()
    pool, factory = make_pool(registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        ref = await pool.start_child("c1")
        await ref.send("crash")
        await settle()
        counts = pool.status()["counts"]
        assert counts["live"] == 0
        assert counts["crashed_total"] == 1
        assert counts["restarts_total"] == 0
        assert len(factory.made) == 1
        pool.request_stop()


async def test_status_shows_counts_and_the_deepest_inboxes_only(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    pool, factory = make_pool(registry, max_children=10, top=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        refs: list[ActorRef[str]] = []
        for i in range(6):
            refs.append(await pool.start_child(f"c{i}"))
        for ref, depth in zip(refs, [0, 5, 2, 7, 5, 1], strict=True):
            await ref.send("pause")
            await settle()
            for _ in range(depth):
                assert ref.try_send("data")
        status = pool.status()
        json.dumps(status)
        assert status["type"] == "pool"
        assert status["max_children"] == 10
        assert status["counts"]["running"] == 6
        top = status["top_by_inbox_depth"]
        assert len(top) == 3
        assert [(n["name"], n["inbox"]["depth"]) for n in top] == [
            ("c3", 7),
            ("c1", 5),
            ("c4", 5),
        ]
        assert all(n["kind"] == "connection" and n["state"] == "running" for n in top)
        for connection in factory.made:
            connection.resume.set()
        pool.request_stop()
    assert pool.status()["counts"]["overruns_total"] == 0


async def test_permanent_children_restart_with_backoff_and_escalate(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    flags = SupervisorFlags(intensity=2, period=60.0, backoff_base=1.0, backoff_jitter=0.0)
    pool, factory = make_pool(registry, restart=Restart.PERMANENT, flags=flags)
    with pytest.RaisesGroup(SupervisorEscalation) as caught:
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            await pool.start_child("c1")
            other = await pool.start_child("c2")
            t0 = trio.current_time()
            await factory.made[0].ref.send("crash")
            await trio.sleep(0.5)
            assert pool.status()["counts"]["restarting"] == 1
            await trio.sleep(0.6)
            assert len(factory.made) == 3  # restarted after 1 s
            assert trio.current_time() - t0 == pytest.approx(1.1)
            await factory.made[2].ref.send("crash")
            await trio.sleep(2.1)  # second restart waits 2 s
            assert len(factory.made) == 4
            assert pool.status()["counts"]["restarts_total"] == 2
            await other.send("crash")  # third restart within 60 s: the pool gives up
            await trio.sleep(10)
    error = caught.value.exceptions[0]
    assert isinstance(error, SupervisorEscalation)
    assert isinstance(error.last_error, Boom)
    assert pool.state == "failed"
    assert registry.total() == 0
    assert engine_tasks() == []


async def test_run_child_runs_in_the_callers_task_and_is_stopped_by_the_pool(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    pool, factory = make_pool(registry, max_children=1)
    ended: list[str] = []

    async def handler(name: str) -> None:
        await pool.run_child(name)
        ended.append(name)

    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        async with trio.open_nursery() as handlers:
            handlers.start_soon(handler, "c1")
            await settle()
            assert pool.live == 1
            assert registry.count("connection") == 1
            with pytest.raises(PoolFull):
                await pool.run_child("c2")
            pool.request_stop()
    assert ended == ["c1"]
    assert pool.live == 0
    assert registry.total() == 0


async def test_pool_shutdown_asks_all_children_at_once_then_cancels_the_late(
    autojump_clock: MockClock,
) -> None:
    class Slow(Connection):
        async def main(self) -> None:
            with trio.CancelScope(shield=True):
                await trio.sleep(10)  # ignores stop requests and cancellation

    registry = Registry()
    made: list[Connection] = []

    async def start(name: str, slow: bool, *, task_status: trio.TaskStatus[ActorRef[str]]) -> None:
        connection = (Slow if slow else Connection)(name, registry)
        made.append(connection)
        await connection.run(task_status=task_status)

    pool = DynamicSupervisor("p", start, child_kind="connection", max_children=5, shutdown=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for i in range(4):
            await pool.start_child(f"c{i}", i == 3)
        t0 = trio.current_time()
        pool.request_stop()
    # all four were asked together: the three polite ones ended at once, the slow
    # one ran out its shielded 10 s (the pool waited 2 s, then cancelled it)
    assert trio.current_time() - t0 == pytest.approx(10.0)
    assert pool.status()["counts"]["overruns_total"] == 1
    assert pool.status()["overruns"] == 1


async def test_a_pool_is_a_child_of_a_supervisor(autojump_clock: MockClock) -> None:
    registry = Registry()
    pool, _ = make_pool(registry)
    root = Supervisor("root", [ChildSpec.of(pool)])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        await pool.start_child("c1")
        status = root.status()
        pool_node = status["children"][0]
        assert pool_node["type"] == "pool"
        assert pool_node["name"] == "connections"
        assert pool_node["counts"]["live"] == 1
        assert pool_node["restart"] == "permanent"
        root.request_stop()
    assert engine_tasks() == []


async def test_a_thousand_children_are_cheap(autojump_clock: MockClock) -> None:
    registry = Registry()
    pool, _ = make_pool(registry, max_children=1000)
    started = time.perf_counter()
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        for i in range(1000):
            await pool.start_child(f"c{i}")
        assert registry.count("connection") == 1000
        status = pool.status()
        assert len(status["top_by_inbox_depth"]) == 5
        with pytest.raises(PoolFull):
            await pool.start_child("one-too-many")
        pool.request_stop()
    assert registry.total() == 0
    assert time.perf_counter() - started < 5.0


async def test_a_child_failing_before_ready_reaches_the_caller(autojump_clock: MockClock) -> None:
    async def broken(*, task_status: trio.TaskStatus[None]) -> None:
        raise Boom("no handshake")

    pool = DynamicSupervisor("p", broken, child_kind="connection", max_children=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(pool.run)
        with pytest.raises(Boom, match="no handshake"):
            await pool.start_child()
        assert pool.live == 0
        pool.request_stop()


@pytest.mark.parametrize(
    ("kwargs", "field_name"),
    [({"max_children": 0}, "max_children"), ({"top": -1}, "top"), ({"shutdown": -1}, "shutdown")],
)
async def test_pool_settings_are_validated_at_start(
    autojump_clock: MockClock, kwargs: dict[str, object], field_name: str
) -> None:
    from sinal.engine.supervisor import InvalidSpec

    async def start(*, task_status: trio.TaskStatus[None]) -> None:
        task_status.started()

    settings: dict[str, object] = {"max_children": 2, **kwargs}
    pool = DynamicSupervisor("p", start, child_kind="connection", **settings)  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec) as caught:
        await pool.run()
    assert caught.value.field == field_name
