"""Topic actor: one per topic. Filters, authorised subscribers, a replay ring, fan-out.

Its inbox carries two kinds of message, handled one at a time in order:
- `TopicBatch` from the listener: the topic's changes of one read of the log, covering the
  positions (since, up_to]. For every change the topic builds the `data_update` frame at
  most once per wire encoding (the WebSocket frame bytes are identical for every socket)
  and offers the same bytes to every subscription whose filter matches. Subscriptions with
  equal filters form one group: the filter runs once per group, not once per socket, and
  only for the groups whose filters pin a key the change carries (or pin none): the
  groups are routed by key (`FilterIndex`, domain/routing.py), so a notification costs one
  evaluation however many users are connected.
- `SubscribeRequest` from a connection: join the live set when nothing is owed after the
  subscriber's `since`; otherwise answer what is owed -- a `Replay` of ring entries, or,
  when `since` is older than the ring, a `CatchUp` that the caller reads from the change
  log (domain/changes.py). The caller sends that with flow control (waiting for room in
  the socket's outbox, so a big replay never trips the slow-consumer policy) and asks
  again from the `until` it was given; each round owes less. The topic decides between
  two batches, so every change after `since` arrives exactly once.

THE HOT PATH SKIPS A CHANNEL, deliberately: fan-out hands frame bytes straight to each
subscriber's `Sink.offer`, the connection's outbox, which writes to the socket at once or
queues (never blocks). A message per socket per change would cost 2-4x the CPU
(docs/architecture.md, "Encode once, write many"). Control goes through inboxes: a sink
that refuses a frame (its outbox is full) is a slow consumer; its subscription ends at
once and the topic reports it with `Sink.lagged(subscription)`, which only posts a message
to the connection's inbox; the connection decides (resync or close). A slow socket never
slows the topic or anyone else. Unsubscribing (`Topic.leave`) drops the subscription at
once, in the caller's task: the topic's handlers never yield in the middle of their work
(publishing and deciding a subscription are synchronous), so the group lists cannot change
under them, and a closed connection is referenced by no topic the moment it leaves.

The ring holds every change of the topic after `ring_floor`. The topic learns where it
stands from the batches alone: a batch that starts after the topic's head (the node
started, or the listener started from a new position) moves the floor up to that start.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import trio

from sinal.domain.access import RowFilter
from sinal.domain.changes import Change
from sinal.domain.routing import FilterIndex
from sinal.engine.actor import Actor
from sinal.engine.registry import Registry
from sinal.protocol import DataUpdate, Encoding, encode
from sinal.websocket.frames import build_frame

log = logging.getLogger("sinal.topic")

DEFAULT_RING_SIZE = 4096


class Sink(Protocol):
    """What a topic needs of a connection: its encoding, its outbox's non-blocking `offer`
    (the hot path), and where to report that a subscription ended as a slow consumer."""

    encoding: Encoding
    offer: Callable[[bytes], bool]

    def lagged(self, subscription: Subscription) -> None: ...


@dataclass(slots=True, eq=False)
class Subscription:
    sink: Sink
    topic: str
    filter: RowFilter
    last_position: int  # every matching change up to here was offered to the sink
    active: bool = True


@dataclass(frozen=True, slots=True)
class TopicBatch:
    """The topic's changes among the log positions (since, up_to], in order."""

    changes: tuple[Change, ...]
    since: int  # the listener read the log after this position...
    up_to: int  # ...up to this one


@dataclass(slots=True, eq=False)
class SubscribeRequest:
    """Join (or learn what is owed first); the answer is in `result` once `done` is set
    (None if the topic failed while deciding: the caller tells its client to resync)."""

    sink: Sink
    filter: RowFilter
    since: int | None
    done: trio.Event = field(default_factory=trio.Event)
    result: Joined | Replay | CatchUp | None = None


TopicMessage = TopicBatch | SubscribeRequest


@dataclass(frozen=True, slots=True)
class CatchUp:
    """`since` is older than the ring: read the log (since, until], then subscribe again."""

    since: int
    until: int


@dataclass(frozen=True, slots=True)
class Joined:
    subscription: Subscription
    head: int


@dataclass(frozen=True, slots=True)
class Replay:
    """Changes after `since` still in the ring: send `entries`, then subscribe from `until`."""

    entries: list[_Entry]
    until: int


def data_update_of(change: Change) -> DataUpdate:
    return DataUpdate(
        topic=change.topic,
        op=change.op,  # type: ignore[arg-type]
        id=change.row_id,
        data=change.row,
        delta=(change.changed or {}) if change.op == "update" else {},
        offset=change.position,
        timestamp=change.changed_at.isoformat(),
    )


def frame_of(change: Change, encoding: Encoding) -> bytes:
    return build_frame(encode(data_update_of(change), encoding), text=not encoding.binary)


Render = Callable[[Change, Encoding], bytes]
Offered = Callable[[Sink, Change], None]


@dataclass(slots=True)
class _Entry:
    change: Change
    render: Render
    frames: dict[Encoding, bytes] = field(default_factory=dict)

    def frame(self, encoding: Encoding) -> bytes:
        frame = self.frames.get(encoding)
        if frame is None:
            frame = self.frames[encoding] = self.render(self.change, encoding)
        return frame


class Topic(Actor[TopicMessage]):
    """Registered as `topic:<topic>`. State survives restarts of `run` (the supervisor
    restarts the task, not the object; the inbox and the ring stay)."""

    kind = "topic"

    def __init__(self, topic: str, head: int = 0, *, ring_size: int = DEFAULT_RING_SIZE,
                 inbox_size: int = 64, render: Render = frame_of,
                 on_offered: Offered | None = None, registry: Registry | None = None) -> None:
        super().__init__(f"topic:{topic}", capacity=inbox_size, registry=registry)
        self.topic = topic
        self.render = render
        self.on_offered = on_offered
        self.head = head
        self.ring: deque[_Entry] = deque(maxlen=ring_size)
        self.ring_floor = head  # the ring holds every change of this topic after this
        self.groups: dict[RowFilter, list[Subscription]] = {}
        self.index = FilterIndex()  # the groups' filters by the keys they pin
        self.subscribers = 0
        self.frames_out = 0
        self.encodes = 0
        self.lagged_total = 0  # subscriptions ended as slow consumers
        self._head_lot = trio.lowlevel.ParkingLot()

    @property
    def version(self) -> int:
        """The position of the topic's last published change, or its ring floor when it has
        published none since it started: moves exactly when a change is published (REST
        ETags are made from it)."""
        ring = self.ring
        return ring[-1].change.position if ring else self.ring_floor

    async def wait_head(self, position: int) -> None:
        """Return once the topic has published everything up to `position`."""
        while self.head < position:
            await self._head_lot.park()

    # --- the inbox ----------------------------------------------------------------------

    async def handle(self, message: TopicMessage) -> None:
        if isinstance(message, TopicBatch):
            self.publish(message)
        else:
            try:
                message.result = self.subscribe(message.sink, message.filter, message.since)
            finally:
                message.done.set()

    async def main(self) -> None:
        try:
            await super().main()
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                # mid-batch crash: some sinks may have a change others lack; resync all
                self.end_all()
            raise

    async def request_subscription(self, sink: Sink, row_filter: RowFilter,
                                   since: int | None) -> Joined | Replay | CatchUp | None:
        """Ask through the inbox (for connections); see `SubscribeRequest`."""
        request = SubscribeRequest(sink, row_filter, since)
        await self.ref.send(request)
        await request.done.wait()
        return request.result

    def leave(self, sub: Subscription) -> None:
        """Called by the subscriber: the subscription is dropped at once (synchronous, no
        checkpoint: safe from any task, see the module's docstring)."""
        self.unsubscribe(sub)

    # --- subscriptions (synchronous: no checkpoint inside) -----------------------------

    def subscribe(self, sink: Sink, row_filter: RowFilter, since: int | None
                  ) -> Joined | Replay | CatchUp:
        """Join the live set at once when nothing is owed after `since`; otherwise say
        what is owed: a `Replay` from the ring, or a `CatchUp` from the table. The caller
        sends it (with flow control) and asks again with `since` = its `until`."""
        start = self.head if since is None else since
        if start < self.ring_floor:
            return CatchUp(since=start, until=self.ring_floor)
        if start < self.head:
            owed = [e for e in self.ring if e.change.position > start
                    and row_filter.matches(e.change.new_row, e.change.old_row, e.change.op)]
            if owed:
                return Replay(entries=owed, until=self.head)
        sub = Subscription(sink, self.topic, row_filter, last_position=max(start, self.head))
        group = self.groups.get(row_filter)
        if group is None:
            group = self.groups[row_filter] = []
            self.index.add(row_filter)
        group.append(sub)
        self.subscribers += 1
        return Joined(sub, self.head)

    def unsubscribe(self, sub: Subscription) -> None:
        """Drop `sub` from its group (idempotent)."""
        sub.active = False
        group = self.groups.get(sub.filter)
        if group is None:
            return
        try:
            group.remove(sub)
        except ValueError:
            return
        self.subscribers -= 1
        if not group:
            del self.groups[sub.filter]
            self.index.remove(sub.filter)

    # --- fan-out -----------------------------------------------------------------------

    def publish(self, batch: TopicBatch) -> None:
        """Fan a batch out (synchronous, no checkpoint inside)."""
        if batch.since > self.head:
            # the listener starts after what this topic has seen (a node start): the ring
            # cannot speak for anything before that start
            self.ring.clear()
            self.head = self.ring_floor = batch.since
        entries: list[_Entry] = []
        for change in batch.changes:
            if change.position <= self.head:
                continue  # already seen (a listener replay after a restart)
            entry = _Entry(change, self.render)
            if len(self.ring) == self.ring.maxlen:
                self.ring_floor = self.ring[0].change.position
            self.ring.append(entry)
            self.head = change.position
            entries.append(entry)
        if entries:
            self._fan_out(entries)
        if batch.up_to > self.head:
            self.head = batch.up_to
        if self._head_lot:
            self._head_lot.unpark_all()

    def _fan_out(self, entries: list[_Entry]) -> None:
        """Route each change to the groups whose filters it matches (`FilterIndex`: only
        the groups that pin one of its keys, and those that pin none, are evaluated), then
        make one write per subscriber per batch: the frames a group matched are joined once
        per encoding, and those same bytes go to every member of the group. Under load
        batches grow, so the cost per change falls as the rate rises."""
        matching = self.index.matching
        by_group: dict[RowFilter, list[_Entry]] = {}
        for entry in entries:
            change = entry.change
            for row_filter in matching(change.new_row, change.old_row, change.op):
                matched = by_group.get(row_filter)
                if matched is None:
                    by_group[row_filter] = [entry]
                else:
                    matched.append(entry)
        dropped: list[Subscription] = []
        on_offered = self.on_offered
        groups = self.groups
        for row_filter, matched in by_group.items():
            first = matched[0].change.position
            last = matched[-1].change.position
            joined: dict[Encoding, bytes] = {}
            for sub in groups[row_filter]:
                if not sub.active:
                    continue  # a guard: a subscription leaves its group as it ends
                encoding = sub.sink.encoding
                if sub.last_position < first:
                    items = matched
                    data = joined.get(encoding)
                    if data is None:
                        data = joined[encoding] = (
                            matched[0].frame(encoding) if len(matched) == 1
                            else b"".join([e.frame(encoding) for e in matched]))
                else:  # joined after part of this batch (a resume): only what it lacks
                    items = [e for e in matched if e.change.position > sub.last_position]
                    if not items:
                        continue
                    data = b"".join([e.frame(encoding) for e in items])
                if sub.sink.offer(data):
                    sub.last_position = last
                    self.frames_out += len(items)
                    if on_offered is not None:
                        for e in items:
                            on_offered(sub.sink, e.change)
                else:
                    dropped.append(sub)
        for sub in dropped:
            self.unsubscribe(sub)
            self.lagged_total += 1
            sub.sink.lagged(sub)

    def end_all(self) -> None:
        """Drop every subscription and tell its sink (after a crash: nothing is trusted)."""
        subs = [s for group in self.groups.values() for s in group if s.active]
        self.groups.clear()
        self.index.clear()
        self.subscribers = 0
        for sub in subs:
            sub.active = False
            sub.sink.lagged(sub)


def subscriptions_of(topics: Iterable[Topic]) -> int:
    return sum(t.subscribers for t in topics)
