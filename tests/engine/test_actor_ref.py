"""Actors, their references and the registry."""

from __future__ import annotations

import pytest
import trio
from trio.testing import MockClock

from sinal.engine.actor import Actor
from sinal.engine.registry import ActorNotFound, NameTaken, Registry
from tests.engine.engine_testing import settle


class Collector(Actor[int]):
    kind = "collector"

    def __init__(self, name: str, registry: Registry, capacity: int = 4, **kw: bool) -> None:
        super().__init__(name, capacity=capacity, registry=registry, **kw)
        self.seen: list[int] = []
        self.gate = trio.Event()
        self.gate.set()
        self.runs = 0

    async def on_start(self) -> None:
        self.runs += 1

    async def handle(self, message: int) -> None:
        await self.gate.wait()
        self.seen.append(message)
        if message < 0:
            raise ValueError(f"negative: {message}")


async def test_try_send_refuses_when_full_and_counts(autojump_clock: MockClock) -> None:
    registry = Registry()
    actor = Collector("c", registry, capacity=2)
    ref = actor.ref
    assert (ref.depth, ref.capacity) == (0, 2)
    assert ref.try_send(1) and ref.try_send(2)
    assert not ref.try_send(3)
    assert not ref.try_send(4)
    assert ref.refused == 2
    assert ref.inbox_status() == {"depth": 2, "capacity": 2, "refused": 2}
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        await settle()
        assert actor.seen == [1, 2]
        assert ref.depth == 0
        ref.request_stop()


async def test_send_waits_while_the_inbox_is_full(autojump_clock: MockClock) -> None:
    registry = Registry()
    actor = Collector("c", registry, capacity=1)
    actor.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await ref.send(1)  # taken by handle(), which waits at the gate
        await settle()
        await ref.send(2)  # sits in the inbox
        with trio.move_on_after(5) as waited:
            await ref.send(3)
        assert waited.cancelled_caught  # back-pressure: no room for 3
        actor.gate.set()
        await ref.send(3)
        await settle()
        assert actor.seen == [1, 2, 3]
        ref.request_stop()


async def test_registry_finds_singletons_and_counts_dynamic_actors(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    listener = Collector("db-listener", registry)
    conns = [Collector(f"conn-{i}", registry, unique_name=False) for i in range(3)]
    async with trio.open_nursery() as nursery:
        await nursery.start(listener.run)
        for conn in conns:
            await nursery.start(conn.run)
        assert registry.lookup("db-listener") is listener.ref
        assert registry.require("db-listener") is listener.ref
        assert registry.lookup("conn-0") is None
        assert registry.names() == ["db-listener"]
        assert registry.count("collector") == 4
        assert registry.counts() == {"collector": 4}
        twin = Collector("db-listener", registry)
        with pytest.raises(NameTaken, match="'db-listener' is already registered"):
            await nursery.start(twin.run)
        assert not twin.running  # may try again once the name is free
        for actor in [listener, *conns]:
            actor.ref.request_stop()
    assert registry.lookup("db-listener") is None
    with pytest.raises(ActorNotFound, match="no live actor is registered under the name 'x'"):
        registry.require("x")
    assert registry.total() == 0


async def test_stop_request_ends_the_loop_between_messages(autojump_clock: MockClock) -> None:
    registry = Registry()
    actor = Collector("c", registry)
    actor.gate = trio.Event()
    async with trio.open_nursery() as nursery:
        ref = await nursery.start(actor.run)
        await ref.send(1)
        await ref.send(2)
        await settle()
        assert ref.request_stop()
        actor.gate.set()
    assert actor.seen == [1]  # finished the message in hand, left 2 in the inbox
    assert ref.depth == 1
    assert not actor.running
    assert not ref.request_stop()  # nobody listens any more


async def test_a_new_run_keeps_the_reference_and_the_queued_messages(
    autojump_clock: MockClock,
) -> None:
    registry = Registry()
    actor = Collector("c", registry)
    with pytest.RaisesGroup(ValueError):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(actor.run)
            await ref.send(-1)
            await settle()
    # the first run crashed; messages sent meanwhile wait for the next one
    ref.try_send(5)
    async with trio.open_nursery() as nursery:
        again = await nursery.start(actor.run)
        assert again is ref
        await settle()
        ref.request_stop()
    assert actor.seen == [-1, 5]
    assert actor.runs == 2


async def test_a_crash_propagates_and_unregisters(autojump_clock: MockClock) -> None:
    registry = Registry()
    actor = Collector("c", registry)
    with pytest.RaisesGroup(pytest.RaisesExc(ValueError, match="negative: -3")):
        async with trio.open_nursery() as nursery:
            ref = await nursery.start(actor.run)
            await ref.send(-3)
    assert registry.total() == 0


async def test_running_the_same_actor_twice_at_once_is_refused(
    autojump_clock: MockClock,
) -> None:
    actor = Collector("c", Registry())
    async with trio.open_nursery() as nursery:
        await nursery.start(actor.run)
        with pytest.raises(RuntimeError, match="already running"):
            await actor.run()
        actor.ref.request_stop()


@pytest.mark.parametrize("capacity", [0, -1, 2.5, True])
def test_inbox_capacity_must_be_a_positive_int(capacity: object) -> None:
    with pytest.raises((ValueError, TypeError)):
        Collector("c", Registry(), capacity=capacity)  # type: ignore[arg-type]


def test_actor_name_must_be_a_non_empty_string() -> None:
    with pytest.raises(ValueError, match="non-empty string"):
        Collector("", Registry())


def test_handle_must_be_implemented() -> None:
    class Bare(Actor[int]):
        pass

    async def main() -> None:
        with pytest.RaisesGroup(NotImplementedError):
            async with trio.open_nursery() as nursery:
                ref = await nursery.start(Bare("b", registry=Registry()).run)
                await ref.send(1)

    trio.run(main)
