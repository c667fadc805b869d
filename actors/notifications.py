"""The notification actor and its frames: every change this node reads goes through the
rules of domain/notifications.py, and what they ask for is written to `notifications`
(idempotently, so several nodes reading the same change create each notification once).
The row travels the change log like any change and reaches its user's sockets on the
`notifications` topic as a `notification` frame (`render_notification`); notifications
kept for an offline user are handed out at their next connect (`kept_frames`; the
connect's one query takes them, domain/principals.py `load_sessions`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from typing import Any

import psycopg
import trio

from sinal.actors.presence import PresenceWriter
from sinal.actors.topic import Offered, Sink
from sinal.domain.changes import Change
from sinal.domain.db import Database
from sinal.domain.notifications import insert_notifications, rules_for
from sinal.engine.actor import Actor
from sinal.engine.registry import Registry
from sinal.protocol import Encoding, Notification, encode
from sinal.websocket.frames import build_frame

log = logging.getLogger("sinal.notifications")

PRODUCER_NAME = "notification_producer"


class NotificationProducer(Actor[list[Change]]):
    """Derives notifications from every change this node reads (idempotent across nodes).
    Its inbox gets every batch the listener reads."""

    kind = "notification_producer"

    def __init__(self, db: Database, *, registry: Registry | None = None,
                 inbox_size: int = 256) -> None:
        super().__init__(PRODUCER_NAME, capacity=inbox_size, registry=registry)
        self.db = db
        self.created = 0
        self.retries = 0

    async def handle(self, changes: list[Change]) -> None:
        pending = [p for c in changes for p in rules_for(c)]
        delay = 0.1
        while pending:
            try:
                self.created += await self.db.run(
                    partial(insert_notifications, pending=pending))
                break
            except psycopg.OperationalError as exc:
                # the database is away: keep the batch (nothing is lost), retry with
                # capped backoff; the insert is idempotent
                self.retries += 1
                log.warning("notification insert failed, retrying in %.1fs: %s", delay, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 5.0)


def notification_of(row: dict[str, Any], position: int | None) -> Notification:
    return Notification(
        id=row["id"],
        message=row["message"],
        kind=row["kind"],
        action=row.get("action"),
        timestamp=str(row["created_at"]),
        offset=position,
        sound=bool(row.get("sound", True)),
    )


def render_notification(change: Change, encoding: Encoding) -> bytes:
    """The notification topic's frames: `notification` messages, not data_update."""
    row = change.row
    return build_frame(encode(notification_of(row, change.position), encoding),
                       text=not encoding.binary)


def mark_offered(presence: PresenceWriter) -> Offered:
    """Topic hook: a notification written to a socket counts as delivered (batched)."""
    def on_offered(sink: Sink, change: Change) -> None:
        presence.delivered(int(change.row_id))
    return on_offered


def kept_frames(rows: Sequence[dict[str, Any]], encoding: Encoding) -> list[bytes]:
    """At connect: the frames of the notifications kept for the user (offline, or not
    pushed), oldest first; they carry no offset."""
    return [build_frame(encode(notification_of(row, None), encoding), text=not encoding.binary)
            for row in rows]
