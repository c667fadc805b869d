"""The commit fence alone (api/freshness.py), in virtual time: rounds shared but never
older than their callers, the wait for the listener."""

from __future__ import annotations

import psycopg
import pytest
import trio
import trio.testing

from sinal.api.freshness import CommitFence


class StubTopic:
    def __init__(self, head: int) -> None:
        self.head = head
        self.moved = trio.Event()

    async def wait_head(self, position: int) -> None:
        while self.head < position:
            await self.moved.wait()
            self.moved = trio.Event()

    def publish(self, head: int) -> None:
        self.head = head
        self.moved.set()


async def test_fence_rounds_are_shared_but_never_predate_a_caller(
        autojump_clock: trio.testing.MockClock) -> None:
    committed = [0]

    async def sequence() -> int:
        seen = committed[0]
        await trio.sleep(1)
        return seen

    fence = CommitFence(sequence)
    results: dict[str, tuple[int, int | None]] = {}

    async def caller(name: str) -> None:
        arrived = committed[0]
        results[name] = (arrived, await fence.head())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "first")
        await trio.sleep(0.5)
        committed[0] = 7  # a commit while the first round runs
        for name in ("second", "third", "fourth"):
            nursery.start_soon(caller, name)
    assert fence.rounds == 2
    assert results["first"] == (0, 0)
    for name in ("second", "third", "fourth"):
        arrived, head = results[name]
        assert head is not None and head >= arrived == 7


async def test_fence_waits_for_the_listener_then_gives_up(
        autojump_clock: trio.testing.MockClock) -> None:
    async def sequence() -> int:
        return 10

    fence = CommitFence(sequence, listener_wait=0.25)
    topic = StubTopic(8)
    async with trio.open_nursery() as nursery:

        async def publish_later() -> None:
            await trio.sleep(0.1)
            topic.publish(10)

        nursery.start_soon(publish_later)
        assert await fence.current(topic)  # type: ignore[arg-type]
    late = StubTopic(8)
    start = trio.current_time()
    assert not await fence.current(late)  # type: ignore[arg-type]
    assert trio.current_time() - start == pytest.approx(0.25)
    assert fence.waits == 2


async def test_a_failed_fence_means_read() -> None:
    async def sequence() -> int:
        raise psycopg.OperationalError("the database is gone")

    fence = CommitFence(sequence)
    assert await fence.head() is None
    assert not await fence.current(StubTopic(0))  # type: ignore[arg-type]
