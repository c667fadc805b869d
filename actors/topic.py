"""Topic actor: one per topic. Filters, authorised subscribers, a replay ring, fan-out.

The listener sends each topic a `TopicBatch` (its changes of one read, and the position the
listener has reached). For every change the topic builds the `data_update` frame at most
once per wire encoding (the WebSocket frame bytes are identical for every socket) and
offers the same bytes to every subscription whose filter matches. Subscriptions with equal
filters form one group: the filter runs once per group, not once per socket.

`Sink.offer` never blocks. A sink that refuses a frame (its outbox is full) is a slow
consumer: its subscription ends at once, the topic tells the sink with `lagged(topic,
last_position)`, and the connection decides (resync or close). A slow socket never slows
the topic or anyone else.

`subscribe` is synchronous: it joins the live set only when nothing is owed after the
subscriber's `since`. Otherwise it answers what is owed -- a `Replay` of ring entries, or,
when `since` is older than the ring, a `CatchUp` that the caller reads from the change log
(engine.changes). The caller sends that with flow control (waiting for room in the socket's
outbox, so a big replay never trips the slow-consumer policy) and subscribes again from the
`until` it was given; each round owes less, and the last one joins with no checkpoint
between the check and the join, so every change after `since` arrives exactly once.
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
from sinal.protocol import DataUpdate, Encoding, encode
from sinal.websocket.frames import build_frame

log = logging.getLogger("sinal.topic")

DEFAULT_RING_SIZE = 4096


class Sink(Protocol):
    """What a topic needs of a connection."""

    encoding: Encoding

    def offer(self, frame: bytes) -> bool: ...

    def lagged(self, topic: str, last_position: int) -> None: ...


@dataclass(slots=True, eq=False)
class Subscription:
    sink: Sink
    topic: str
    filter: RowFilter
    last_position: int  # every matching change up to here was offered to the sink
    active: bool = True


@dataclass(frozen=True, slots=True)
class TopicBatch:
    changes: tuple[Change, ...]
    up_to: int  # the listener has read the whole log up to this position


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


class Topic:
    """State survives restarts of `run` (the supervisor restarts the loop, not the object)."""

    def __init__(self, name: str, head: int, *, ring_size: int = DEFAULT_RING_SIZE,
                 inbox_size: int = 64, render: Render = frame_of,
                 on_offered: Offered | None = None) -> None:
        self.name = name
        self.render = render
        self.on_offered = on_offered
        self.head = head
        self.ring: deque[_Entry] = deque(maxlen=ring_size)
        self.ring_floor = head  # the ring holds every change of this topic after this
        self.groups: dict[RowFilter, list[Subscription]] = {}
        self.subscribers = 0
        self.frames_out = 0
        self.encodes = 0
        self.lagged = 0
        self.send_channel, self.receive_channel = trio.open_memory_channel[TopicBatch](
            inbox_size)
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

    # --- subscriptions (synchronous: no checkpoint inside) -----------------------------

    def subscribe(self, sink: Sink, row_filter: RowFilter, since: int | None
                  ) -> Joined | Replay | CatchUp:
        """Join the live set at once when nothing is owed after `since`; otherwise say
        what is owed: a `Replay` from the ring, or a `CatchUp` from the table. The caller
        sends it (with flow control) and calls again with `since` = its `until`."""
        start = self.head if since is None else since
        if start < self.ring_floor:
            return CatchUp(since=start, until=self.ring_floor)
        if start < self.head:
            owed = [e for e in self.ring if e.change.position > start
                    and row_filter.matches(e.change.new_row, e.change.old_row, e.change.op)]
            if owed:
                return Replay(entries=owed, until=self.head)
        sub = Subscription(sink, self.name, row_filter, last_position=max(start, self.head))
        self.groups.setdefault(row_filter, []).append(sub)
        self.subscribers += 1
        return Joined(sub, self.head)

    def unsubscribe(self, sub: Subscription) -> None:
        if not sub.active:
            return
        sub.active = False
        group = self.groups.get(sub.filter)
        if group is not None:
            try:
                group.remove(sub)
                self.subscribers -= 1
            except ValueError:
                pass
            if not group:
                del self.groups[sub.filter]

    # --- fan-out -----------------------------------------------------------------------

    def publish(self, batch: TopicBatch) -> None:
        """Fan a batch out (synchronous). Called by `run` for every inbox message."""
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
        """One write per subscriber per batch: the frames a group's filter matches are
        joined once per encoding, and those same bytes go to every member of the group.
        Under load batches grow, so the cost per change falls as the rate rises."""
        dropped: list[Subscription] = []
        on_offered = self.on_offered
        for row_filter, subs in self.groups.items():
            matched = [e for e in entries
                       if row_filter.matches(e.change.new_row, e.change.old_row, e.change.op)]
            if not matched:
                continue
            first = matched[0].change.position
            last = matched[-1].change.position
            joined: dict[Encoding, bytes] = {}
            for sub in subs:
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
            self.lagged += 1
            sub.sink.lagged(self.name, sub.last_position)

    def end_all(self, reason_position: int | None = None) -> None:
        """Drop every subscription and tell its sink (after a crash: nothing is trusted)."""
        subs = [s for group in self.groups.values() for s in group]
        self.groups.clear()
        self.subscribers = 0
        for sub in subs:
            sub.active = False
            sub.sink.lagged(self.name, sub.last_position)

    def inbox_depth(self) -> int:
        return self.receive_channel.statistics().current_buffer_used

    def inbox_status(self) -> dict[str, int]:
        stats = self.receive_channel.statistics()
        return {"depth": stats.current_buffer_used, "capacity": int(stats.max_buffer_size),
                "refused": 0}

    async def run(self, *, task_status: trio.TaskStatus[Topic] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        try:
            task_status.started(self)
            async for batch in self.receive_channel:
                self.publish(batch)
        except BaseException as exc:
            if not isinstance(exc, trio.Cancelled):
                # mid-batch crash: some sinks may have a change others lack; resync all
                self.end_all()
            raise


def subscriptions_of(topics: Iterable[Topic]) -> int:
    return sum(t.subscribers for t in topics)
