"""The commit fence alone (api/freshness.py), in virtual time: rounds shared but never
older than their callers, the wait for the listener, what a round proved reused; and
the version a fresh body reflects (`version_as_of`)."""

from __future__ import annotations

import psycopg
import pytest
import trio
import trio.testing

from sinal.api.freshness import CommitFence, version_as_of


class StubTopics:
    """Topic positions (api/realtime.py) with heads (and versions) set by the test."""

    def __init__(self, **heads: int) -> None:
        self.heads = heads
        self.versions: dict[str, int] = {}  # a topic's version; its head when not set
        self.moved = trio.Event()

    def topic_version(self, topic: str) -> int:
        return self.versions.get(topic, self.heads[topic])

    def topic_head(self, topic: str) -> int:
        return self.heads[topic]

    async def wait_head(self, topic: str, position: int) -> None:
        while self.heads[topic] < position:
            await self.moved.wait()

    def publish(self, topic: str, head: int) -> None:
        self.heads[topic] = head
        self.moved.set()
        self.moved = trio.Event()


async def test_fence_rounds_are_shared_but_never_predate_a_caller(
        autojump_clock: trio.testing.MockClock) -> None:
    committed = [0]

    async def sequence() -> int:
        seen = committed[0]
        await trio.sleep(1)
        return seen

    fence = CommitFence(sequence, StubTopics())
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

    topics = StubTopics(topic=8, late=8)
    fence = CommitFence(sequence, topics, listener_wait=0.25)
    async with trio.open_nursery() as nursery:

        async def publish_later() -> None:
            await trio.sleep(0.1)
            topics.publish("topic", 10)

        nursery.start_soon(publish_later)
        assert await fence.current("topic")
    start = trio.current_time()
    assert not await fence.current("late")
    assert trio.current_time() - start == pytest.approx(0.25)
    assert fence.waits == 2


async def test_what_a_round_proved_is_reused(autojump_clock: trio.testing.MockClock) -> None:
    """A topic still short of a head proven committed a while ago is still behind: the
    caller reads at once, with no second round (the full path, after the fast path gave up
    on the same request)."""
    async def sequence() -> int:
        return 10

    topics = StubTopics(topic=8, other=10)
    fence = CommitFence(sequence, topics, listener_wait=0.25)
    assert not await fence.current("topic")  # a round, then 0.25 s of waiting
    start = trio.current_time()
    assert not await fence.current("topic")
    assert (fence.rounds, trio.current_time()) == (1, start), "no round, no wait"
    assert await fence.current("other") and fence.rounds == 2, "other topics: a new round"
    topics.publish("topic", 10)
    assert await fence.current("topic") and fence.rounds == 3


async def test_a_failed_round_is_not_tried_again_at_once(
        autojump_clock: trio.testing.MockClock) -> None:
    failing = [True]

    async def sequence() -> int:
        if failing[0]:
            raise psycopg.OperationalError("the database is gone")
        return 0

    fence = CommitFence(sequence, StubTopics(topic=0), listener_wait=0.25)
    assert not await fence.current("topic") and fence.rounds == 1
    failing[0] = False
    await trio.sleep(0.2)
    assert not await fence.current("topic") and fence.rounds == 1, "the callers read"
    await trio.sleep(0.05)
    assert await fence.current("topic") and fence.rounds == 2


async def test_the_version_as_of_a_position(autojump_clock: trio.testing.MockClock) -> None:
    topics = StubTopics(topic=10)
    topics.versions["topic"] = 7  # its last change; positions 8-10 were other topics'
    for position in (7, 8, 10):
        assert await version_as_of(topics, "topic", position) == 7
    assert await version_as_of(topics, "topic", 6) is None, "a later change is published"

    async def publish_later() -> None:
        await trio.sleep(0.1)
        topics.versions["topic"] = 12
        topics.publish("topic", 14)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publish_later)
        assert await version_as_of(topics, "topic", 13, wait=0.25) == 12  # waited for it
    start = trio.current_time()
    assert await version_as_of(topics, "topic", 20, wait=0.25) is None  # never published
    assert trio.current_time() - start == pytest.approx(0.25)


async def test_a_failed_fence_means_read() -> None:
    async def sequence() -> int:
        raise psycopg.OperationalError("the database is gone")

    fence = CommitFence(sequence, StubTopics(topic=0))
    assert await fence.head() is None
    assert not await fence.current("topic")
