"""One scheduler task beats for every connection and notices silence, in virtual time."""

from __future__ import annotations

import trio
import trio.testing

from sinal.actors.heartbeat import HeartbeatScheduler
from sinal.protocol import Encoding


class FakeConn:
    def __init__(self, encoding: Encoding = Encoding.MSGPACK) -> None:
        self.encoding = encoding
        self.last_seen = trio.current_time()
        self.beating = False
        self.frames: list[tuple[float, bytes]] = []
        self.timed_out_at: float | None = None

    def offer(self, frame: bytes) -> bool:
        self.frames.append((trio.current_time(), frame))
        return True

    def timed_out(self) -> None:
        self.timed_out_at = trio.current_time()


async def test_beats_exactly_and_closes_only_the_silent(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    scheduler = HeartbeatScheduler(interval=5, timeout=12)
    await nursery.start(scheduler.run)
    chatty = [FakeConn() for _ in range(500)]
    silent = [FakeConn(Encoding.JSON) for _ in range(500)]
    for conn in chatty + silent:
        scheduler.add(conn)
    for _ in range(6):  # the chatty ones send something every 4 s
        await trio.sleep(4)
        for conn in chatty:
            conn.last_seen = trio.current_time()
    await trio.sleep(0.5)  # t = 24.5
    assert all(c.timed_out_at == 12 for c in silent)
    assert all(c.timed_out_at is None for c in chatty)
    assert [t for t, _ in silent[0].frames] == [5, 10]  # nothing after the timeout
    assert [t for t, _ in chatty[0].frames] == [5, 10, 15, 20]
    assert silent[0].frames[0][1] != chatty[0].frames[0][1]  # JSON text vs MessagePack
    # one wake-up serves every connection due at that time
    assert scheduler.wakeups < 20


async def test_a_removed_connection_gets_nothing_more(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    scheduler = HeartbeatScheduler(interval=5, timeout=60)
    await nursery.start(scheduler.run)
    conn = FakeConn()
    scheduler.add(conn)
    await trio.sleep(6)
    scheduler.remove(conn)
    await trio.sleep(100)
    assert [t for t, _ in conn.frames] == [5]
    assert conn.timed_out_at is None


async def test_a_new_earlier_deadline_wakes_the_scheduler(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    scheduler = HeartbeatScheduler(interval=30, timeout=60)
    await nursery.start(scheduler.run)
    first = FakeConn()
    scheduler.add(first)  # due at 30
    await trio.sleep(1)
    second = FakeConn()
    scheduler.interval = 2  # the next connection's first beat is due before the first's
    scheduler.add(second)
    await trio.sleep(2.5)
    assert [t for t, _ in second.frames] == [3]
