"""Notifications (the seed's "notificações instantâneas"): rules, the producer actor,
rendering, and delivery of notifications kept for offline users.

Rules (kind -> who):
- approval_required: a request enters pending_aN -> every active approver_aN;
- purchase_request_approved / purchase_request_rejected -> the requester;
- quotation_received: a quotation is added -> the buyers and the request's requester;
- order_issued: an order is issued -> the requester;
- delivery_late: an order becomes late -> the buyers and the requester;
- order_delivered -> the requester.

User preferences (notification_preferences, seed 4.2) are applied in the same INSERT:
frequency 'off' creates nothing; a non-empty `events` list keeps only those kinds;
soundEnabled sets `sound`; frequency hourly/daily keeps the notification for the next
connect instead of pushing it (push = false). Each notifying change is one statement.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import TYPE_CHECKING, Any

import psycopg
import trio
from psycopg.types.json import Jsonb

from sinal.domain.changes import Change
from sinal.domain.db import Database
from sinal.protocol import Encoding, Notification, encode
from sinal.websocket.frames import build_frame

if TYPE_CHECKING:
    from sinal.actors.connection import ConnectionActor
    from sinal.actors.hub import Hub

log = logging.getLogger("sinal.notifications")

KINDS = ("approval_required", "purchase_request_approved", "purchase_request_rejected",
         "quotation_received", "order_issued", "delivery_late", "order_delivered")

_INSERT = """
INSERT INTO notifications (user_id, kind, message, action, source_position, sound, push)
SELECT u.id, %(kind)s, %(message)s, %(action)s, %(position)s,
       coalesce(p.sound_enabled, true), coalesce(p.frequency, 'immediate') = 'immediate'
  FROM users u LEFT JOIN notification_preferences p ON p.user_id = u.id
 WHERE u.is_active
   AND (u.role = ANY(%(roles)s) OR u.id = ANY(%(users)s::uuid[]))
   AND (p.user_id IS NULL OR (p.frequency <> 'off'
        AND (cardinality(p.events) = 0 OR %(kind)s = ANY(p.events))))
ON CONFLICT (user_id, kind, source_position) DO NOTHING
"""


def rules_for(change: Change) -> list[dict[str, Any]]:
    """The notifications a change raises, as INSERT parameters (requester ids may be
    looked up later: `request_id` is set when the requester of a request is meant)."""
    row = change.row
    out: list[dict[str, Any]] = []

    def add(kind: str, message: str, action: dict[str, Any], roles: tuple[str, ...] = (),
            users: tuple[str, ...] = (), request_id: str | None = None) -> None:
        out.append({"kind": kind, "message": message, "action": action,
                    "position": change.position, "roles": list(roles), "users": list(users),
                    "request_id": request_id})

    if change.table == "purchase_requests" and change.op in ("insert", "update"):
        status = row.get("status")
        if change.op == "update" and "status" not in (change.changed or {}):
            return out
        action = {"kind": "open", "resource": "purchase_request", "id": row.get("id")}
        title = row.get("title", "")
        if isinstance(status, str) and status.startswith("pending_a"):
            level = status[-1]
            add("approval_required", f"Solicitação '{title}' aguarda aprovação no nível {level}",
                action, roles=(f"approver_a{level}",))
        elif status == "approved" and change.op == "update":
            add("purchase_request_approved", f"Solicitação '{title}' foi aprovada", action,
                users=(row["requester_id"],))
        elif status == "rejected":
            add("purchase_request_rejected", f"Solicitação '{title}' foi rejeitada", action,
                users=(row["requester_id"],))
    elif change.table == "quotations" and change.op == "insert":
        add("quotation_received", "Nova cotação recebida",
            {"kind": "open", "resource": "quotation", "id": row.get("id"),
             "purchaseRequestId": row.get("purchase_request_id")},
            roles=("buyer",), request_id=row.get("purchase_request_id"))
    elif change.table == "purchase_orders":
        action = {"kind": "open", "resource": "purchase_order", "id": row.get("id")}
        if change.op == "insert":
            add("order_issued", "Pedido de compra emitido", action,
                request_id=row.get("purchase_request_id"))
        elif change.op == "update" and "delivery_status" in (change.changed or {}):
            if row.get("delivery_status") == "late":
                add("delivery_late",
                    f"Entrega atrasada (prevista para {row.get('expected_delivery_date')})",
                    action, roles=("buyer",), request_id=row.get("purchase_request_id"))
            elif row.get("delivery_status") == "delivered":
                add("order_delivered", "Pedido entregue", action,
                    request_id=row.get("purchase_request_id"))
    return out


class NotificationProducer:
    """Derives notifications from every change this node reads (idempotent across nodes)."""

    kind = "notification_producer"

    def __init__(self, db: Database, inbox_size: int = 256) -> None:
        self.db = db
        self.send_channel, self.receive_channel = trio.open_memory_channel[list[Change]](
            inbox_size)
        self.created = 0
        self.retries = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        task_status.started()
        async for changes in self.receive_channel:
            pending = [p for c in changes for p in rules_for(c)]
            delay = 0.1
            while pending:
                try:
                    self.created += await self.db.run(partial(self._insert, pending=pending))
                    break
                except psycopg.OperationalError as exc:
                    # the database is away: keep the batch (nothing is lost), retry with
                    # capped backoff; the insert is idempotent
                    self.retries += 1
                    log.warning("notification insert failed, retrying in %.1fs: %s", delay, exc)
                    await trio.sleep(delay)
                    delay = min(delay * 2, 5.0)

    @staticmethod
    def _insert(conn: psycopg.Connection[Any], pending: list[dict[str, Any]]) -> int:
        created = 0
        with conn.transaction():
            for params in pending:
                users = list(params["users"])
                if params["request_id"]:
                    row = conn.execute("SELECT requester_id::text AS r FROM purchase_requests "
                                       "WHERE id = %s", (params["request_id"],)).fetchone()
                    if row:
                        users.append(row["r"] if isinstance(row, dict) else row[0])
                cur = conn.execute(_INSERT, {**params, "users": users,
                                             "action": Jsonb(params["action"])})
                created += cur.rowcount
        return created


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


def mark_offered(hub: Hub) -> Any:
    """Topic hook: a notification written to a socket counts as delivered (batched)."""
    def on_offered(sink: Any, change: Change) -> None:
        if hub.presence is not None:
            hub.presence.delivered(int(change.row_id))
    return on_offered


async def deliver_kept(conn: ConnectionActor) -> None:
    """At connect: every notification kept for this user (offline, or not pushed)."""
    user_id = conn.user_id

    def fetch(db: psycopg.Connection[Any]) -> list[dict[str, Any]]:
        with db.transaction():
            rows = db.execute(
                "UPDATE notifications SET delivered_at = now() WHERE id IN ("
                " SELECT id FROM notifications WHERE user_id = %s AND delivered_at IS NULL"
                " ORDER BY id LIMIT 500 FOR UPDATE SKIP LOCKED) "
                "RETURNING id, kind, message, action, sound, created_at", (user_id,),
            ).fetchall()
        return sorted(rows, key=lambda r: r["id"])

    rows = await conn.hub.db.run(fetch)
    for row in rows:
        frame = build_frame(encode(notification_of(row, None), conn.encoding),
                            text=not conn.encoding.binary)
        if not conn.offer(frame):
            break
