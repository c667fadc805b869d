"""How a connection joins a topic from the offset its client resumes at (docs/protocol.md,
"Offsets, data_update and resume"): ask the topic (`SubscribeRequest`); send what the ring
still holds (`Replay`), or read the change log for what it no longer holds (`CatchUp`),
each frame with flow control (waiting for room in the socket's outbox, so a big replay
never trips the slow-consumer policy); ask again from where that ended, until the topic
lets it join with nothing owed. A part of `ConnectionActor` (actors/connection.py), kept
apart because it is one concept of its own.
"""

from __future__ import annotations

from typing import Any, cast

import psycopg

from sinal.actors.hub import Hub
from sinal.actors.topic import CatchUp, Joined, Replay, Sink, Subscription, Topic
from sinal.domain.access import RowFilter, subscription_filter
from sinal.domain.changes import Change, head_position, read_changes, retained_since
from sinal.domain.principals import Principal
from sinal.protocol import Encoding, Resync, ServerMessage
from sinal.websocket import WebSocketConnection

CATCH_UP_PAGE = 1000
CATCH_UP_ROUNDS = 8


class TopicJoining:
    """What `ConnectionActor` does to join a topic; it provides the attributes below."""

    __slots__ = ()

    hub: Hub
    ws: WebSocketConnection
    encoding: Encoding
    principal: Principal | None
    subscriptions: dict[str, Subscription]
    known_head: int

    def _send(self, message: ServerMessage) -> bool:
        raise NotImplementedError

    def lagged(self, subscription: Subscription) -> None:
        raise NotImplementedError

    async def _subscribe_topic(self, name: str, row_filter: RowFilter | None,
                               since: int | None) -> None:
        assert self.principal is not None
        if row_filter is None:
            row_filter = subscription_filter(self.principal, name, None)
        topic = self.hub.topics[name]
        old = self.subscriptions.pop(name, None)
        if old is not None:
            topic.leave(old)
        if since is not None and since > max(topic.head, self.known_head):
            # the client knows of a change this node has not read yet: ask the database
            head = await self.hub.db.run(head_position)
            self.known_head = head  # type: ignore[misc]  # a slot of ConnectionActor's
            if since > head:
                self._send(Resync(topic=name, offset=topic.head, reason="offset_ahead"))
                return
        for _ in range(CATCH_UP_ROUNDS):
            result = await topic.request_subscription(cast(Sink, self), row_filter, since)
            if result is None:
                break  # the topic failed while deciding: start over from a resync
            if isinstance(result, Joined):
                sub = self.subscriptions[name] = result.subscription
                if not sub.active:  # lagged before we recorded it: its notice was dropped
                    self.lagged(sub)
                return
            if isinstance(result, Replay):
                for entry in result.entries:
                    await self._send_owed(topic, entry.change, entry.frame(self.encoding))
                since = result.until
                continue
            caught_up = await self._catch_up_from_log(name, row_filter, result)
            if caught_up is None:
                return  # resync sent
            since = caught_up
        self._send(Resync(topic=name, offset=since or 0, reason="catch_up_timeout"))

    async def _send_owed(self, topic: Topic, change: Change, frame: bytes) -> None:
        """A replayed frame: waits for room in the outbox (flow control, never 'slow')."""
        await self.ws.send_frame(frame)
        if topic.on_offered is not None:
            topic.on_offered(cast(Sink, self), change)

    async def _catch_up_from_log(self, name: str, row_filter: RowFilter,
                                 gap: CatchUp) -> int | None:
        """Send the topic's changes (since, until] from the table; return `until`."""
        topic = self.hub.topics[name]
        after = gap.since
        while after < gap.until:
            start = after

            def work(conn: psycopg.Connection[Any], start: int = start
                     ) -> tuple[int, list[Change]]:
                return retained_since(conn), read_changes(conn, start, CATCH_UP_PAGE, [name])

            retained, changes = await self.hub.db.run(work)
            if start < retained:
                self._send(Resync(topic=name, offset=topic.head, reason="retention"))
                return None
            for change in changes:
                if change.position > gap.until:
                    return gap.until
                if row_filter.matches(change.new_row, change.old_row, change.op):
                    await self._send_owed(topic, change, topic.render(change, self.encoding))
                after = change.position
            if len(changes) < CATCH_UP_PAGE:
                break
        return gap.until

