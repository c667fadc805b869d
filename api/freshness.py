"""What this node has published, against what the database has committed: the commit
fence that lets a cached body answer a 200, and the version a fresh body reflects (its
ETag).

WHY. A 304 says "nothing was published for this topic since your ETag" -- memory only, and
a change that committed but that the listener has not read yet (listener lag, usually a
millisecond or two) is not seen. A 200 body has always promised more: it reflects every
change committed before the request (the read runs the sequencer first), so a writer that
reads right after its commit sees its write, whatever path the write took (our REST, psql,
another app, another node). Two consequences:

- A cached body keeps that promise only if the topic's version is known to be current,
  and only the database knows that: `CommitFence.current`.
- A fresh body may already show a change the listener has not published: its ETag must
  be made from the version as of the body's log position, not from the version in
  memory when the request came (else the next request, once the change is published,
  would get the same body under another ETag): `version_as_of`.

HOW (the fence). `SELECT sinal_sequence_changes(...)` numbers every change committed so
far and returns the head H; once the topic has published up to H (`head >= H`, usually at
once, else after a short wait for the listener), the topic's version covers every change
committed before the fence began, so the body kept under that version's ETag is the
answer a fresh read would give (modulo its snapshot `offset`/`timestamp`, see
api/response_cache.py). If the listener is too slow or the fence fails, the caller reads.

COST. One short query, coalesced: a request joins the fence that starts after it arrived
(a fence already running may predate its caller's commit), so N concurrent requests cost
about two fences, not N. It does not touch rows or the change log's content. What a round
proved negative stays true for a while, and is reused without a query: a topic that has
not reached a head proven committed `listener_wait` seconds ago is still behind, and for
`listener_wait` seconds after a failed round the callers read instead of trying again
(the fast path gives up on such a request and the full path, behind it, asks again).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Awaitable, Callable

import trio

from sinal.api.realtime import TopicPositions

log = logging.getLogger("sinal.api")

LISTENER_WAIT_SECONDS = 0.25  # past this, a fresh read is cheaper than waiting


async def version_as_of(topics: TopicPositions, topic: str, position: int, *,
                        wait: float = LISTENER_WAIT_SECONDS) -> int | None:
    """The topic's version as of log position `position` -- what a body that reflects the
    log up to `position` shows -- from memory: once the topic has published up to
    `position` (waiting up to `wait` seconds for the listener), its version, provided it
    has published no later change meanwhile. None when that cannot be known."""
    if topics.topic_head(topic) < position:
        with trio.move_on_after(wait):
            await topics.wait_head(topic, position)
        if topics.topic_head(topic) < position:
            return None
    version = topics.topic_version(topic)
    return version if version <= position else None


class _Round:
    __slots__ = ("done", "head", "number")

    def __init__(self, number: int) -> None:
        self.number = number
        self.done = trio.Event()
        self.head: int | None = None


class CommitFence:
    def __init__(self, sequence: Callable[[], Awaitable[int]], topics: TopicPositions, *,
                 listener_wait: float = LISTENER_WAIT_SECONDS,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.sequence = sequence  # runs the sequencer, returns the head
        self.topics = topics
        self.listener_wait = listener_wait
        self.clock = clock
        self._running: _Round | None = None
        self._proofs: deque[tuple[float, int]] = deque()  # (when, head) of recent rounds
        self._failed_at = float("-inf")
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

    async def current(self, topic: str) -> bool:
        """True when `topic` has published every change committed before this call."""
        if self._known_behind(topic):
            return False
        head = await self.head()
        if head is None:
            return False
        if self.topics.topic_head(topic) < head:
            self.waits += 1
            with trio.move_on_after(self.listener_wait):
                await self.topics.wait_head(topic, head)
        return self.topics.topic_head(topic) >= head

    def _known_behind(self, topic: str) -> bool:
        """An earlier round already answers no: the topic is still short of a head proven
        committed longer than `listener_wait` ago, or a round failed just now."""
        now = self.clock()
        if now - self._failed_at < self.listener_wait:
            return True
        cutoff, proofs = now - self.listener_wait, self._proofs
        while len(proofs) > 1 and proofs[1][0] <= cutoff:
            proofs.popleft()  # the first proof left is the latest one old enough
        return bool(proofs) and proofs[0][0] <= cutoff \
            and self.topics.topic_head(topic) < proofs[0][1]

    async def _lead(self) -> int | None:
        self.rounds += 1
        round_ = self._running = _Round(self.rounds)
        try:
            round_.head = await self.sequence()
        except Exception as exc:  # the callers read instead (and meet the error there)
            log.debug("commit fence failed: %s", exc)
            self._failed_at = self.clock()
        else:
            self._proofs.append((self.clock(), round_.head))
        finally:
            self._running = None
            round_.done.set()
        return round_.head
