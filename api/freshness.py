"""Is what this node has published as new as what the database has committed? The commit
fence, shared by concurrent requests, that lets a cached body answer a 200.

WHY. A 304 says "nothing was published for this topic since your ETag" -- memory only, and
a change that committed but that the listener has not read yet (listener lag, usually a
millisecond or two) is not seen. A 200 body has always promised more: it reflects every
change committed before the request (the read runs the sequencer first), so a writer that
reads right after its commit sees its write, whatever path the write took (our REST, psql,
another app, another node). A cached body keeps that promise only if the topic's version
is known to be current, and only the database knows that.

HOW. `SELECT sinal_sequence_changes(...)` numbers every change committed so far and
returns the head H; once the topic has published up to H (`topic.head >= H`, usually at
once, else after a short wait for the listener), the topic's version covers every change
committed before the fence began, so the body kept under that version's ETag is the
answer a fresh read would give (modulo its snapshot `offset`/`timestamp`, see
api/response_cache.py). If the listener is too slow or the fence fails, the caller reads.

COST. One short query, coalesced: a request joins the fence that starts after it arrived
(a fence already running may predate its caller's commit), so N concurrent requests cost
about two fences, not N. It does not touch rows or the change log's content.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:  # an annotation only: api/ never imports actors/ (docs/architecture.md)
    from sinal.actors.topic import Topic

log = logging.getLogger("sinal.api")

LISTENER_WAIT_SECONDS = 0.25  # past this, a fresh read is cheaper than waiting


class _Round:
    __slots__ = ("done", "head", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.done = trio.Event()
        self.head: int | None = None


class CommitFence:
    def __init__(self, sequence: Callable[[], Awaitable[int]], *,
                 listener_wait: float = LISTENER_WAIT_SECONDS) -> None:
        self.sequence = sequence  # runs the sequencer, returns the head
        self.listener_wait = listener_wait
        self._running: _Round | None = None
        self.rounds = 0  # fences started (queries made)
        self.waits = 0  # fences after which the listener had to catch up

    async def head(self) -> int | None:
        """The log head as of some moment after this call began (None: unknown)."""
        arrived = self.rounds
        while True:
            running = self._running
            if running is None:
                return await self._lead()
            await running.done.wait()
            if running.number > arrived:  # it began after this call did
                return running.head
            # it began before: one of its waiters leads the next round, the others join it

    async def current(self, topic: Topic) -> bool:
        """True when `topic` has published every change committed before this call."""
        head = await self.head()
        if head is None:
            return False
        if topic.head < head:
            self.waits += 1
            with trio.move_on_after(self.listener_wait):
                await topic.wait_head(head)
        return topic.head >= head

    async def _lead(self) -> int | None:
        self.rounds += 1
        round_ = self._running = _Round(self.rounds)
        try:
            round_.head = await self.sequence()
        except Exception as exc:  # the callers read instead (and meet the error there)
            log.debug("commit fence failed: %s", exc)
        finally:
            self._running = None
            round_.done.set()
        return round_.head
