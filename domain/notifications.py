"""Notifications (the seed's "notificações instantâneas"): who is told what, and the SQL
that creates, keeps and hands them out. The actor that applies these rules to every
change is actors/notifications.py.

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

from typing import Any

import psycopg
from psycopg.types.json import Jsonb

from sinal.domain.changes import Change

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
ALERT_KIND = "performance_alert"  # raised by the metrics service for admins
EVENT_KINDS = (*KINDS, ALERT_KIND)  # what notification preferences may name

_NOTIFY_ADMINS = """
INSERT INTO notifications (user_id, kind, message, action, sound, push)
SELECT u.id, %(kind)s, %(message)s, %(action)s,
       coalesce(p.sound_enabled, true), coalesce(p.frequency, 'immediate') = 'immediate'
  FROM users u LEFT JOIN notification_preferences p ON p.user_id = u.id
 WHERE u.is_active AND u.role = 'admin'
   AND (p.user_id IS NULL OR (p.frequency <> 'off'
        AND (cardinality(p.events) = 0 OR %(kind)s = ANY(p.events))))
"""


def insert_notifications(conn: psycopg.Connection[Any], pending: list[dict[str, Any]]) -> int:
    """Create the notifications `rules_for` asked for, in one transaction; idempotent (a
    change read twice, by a restart or by another node, creates nothing new)."""
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


def notify_admins(conn: psycopg.Connection[Any], message: str, action: dict[str, Any]) -> int:
    """One `performance_alert` notification per active admin (their preferences applied)."""
    cur = conn.execute(_NOTIFY_ADMINS, {"kind": ALERT_KIND, "message": message,
                                        "action": Jsonb(action)})
    return cur.rowcount
