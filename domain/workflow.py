"""The procurement workflow: every write is one transaction; the triggers do the rest.

Used by the REST write endpoints and by `sinal simulate`. Functions take a psycopg
connection (autocommit off or on: each opens its own transaction block) and the acting
user (`who`, a Principal), whom each transaction names first (`act_as`: SET LOCAL
sinal.actor), so the capture trigger records who made every change it logs
(sql/007_actors_and_waits.sql; the request history shows it). They raise
`WorkflowError` with an HTTP-ish status: 403 wrong role, 404 unknown row, 409 invalid
transition, 422 bad value.

    draft --submit--> pending_a1 --a1--> pending_a2 --a2--> pending_a3 --a3--> approved
    pending_aN --reject--> rejected
    approved --first quotation--> quoting --issue order--> ordered --delivered--> delivered
    draft | pending_aN | approved | quoting --cancel--> cancelled
"""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from sinal.domain.principals import Principal

PENDING = ("pending_a1", "pending_a2", "pending_a3")
CANCELLABLE = ("draft", *PENDING, "approved", "quoting")
MAX_AMOUNT = Decimal("999999999999.99")


class WorkflowError(Exception):
    def __init__(self, status: int, code: str, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.code = code
        self.reason = reason


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise WorkflowError(422, "invalid_amount", "amount must be a number")
    try:
        amount = Decimal(str(value))
    except (InvalidOperation, ValueError) as exc:
        raise WorkflowError(422, "invalid_amount", "amount must be a number") from exc
    if not amount.is_finite() or amount < 0 or amount > MAX_AMOUNT:
        raise WorkflowError(422, "invalid_amount", f"amount must be between 0 and {MAX_AMOUNT}")
    return amount.quantize(Decimal("0.01"))


def _lock_request(conn: psycopg.Connection[Any], request_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        try:
            row = cur.execute(
                "SELECT * FROM purchase_requests WHERE id = %s FOR UPDATE", (request_id,)
            ).fetchone()
        except psycopg.errors.InvalidTextRepresentation as exc:
            raise WorkflowError(404, "not_found", "no such purchase request") from exc
    if row is None:
        raise WorkflowError(404, "not_found", "no such purchase request")
    return row


SYSTEM_ACTOR = "system:"  # prefix of the actors that are Sinal itself, not a user


def act_as(conn: psycopg.Connection[Any], actor: str) -> None:
    """Name the acting user (or `system:<part>`) for the changes of this transaction:
    `SET LOCAL sinal.actor`, which ends with the transaction."""
    conn.execute("SELECT set_config('sinal.actor', %s, true)", (actor,))


def _audit(conn: psycopg.Connection[Any], table: str, record: str, action: str,
           who: Principal, details: dict[str, Any]) -> None:
    conn.execute(
        "INSERT INTO audit_logs (table_name, record_id, action, actor_id, details) "
        "VALUES (%s, %s, %s, %s, %s)",
        (table, record, action, who.user_id, Jsonb(details)),
    )


def _set_status(conn: psycopg.Connection[Any], request_id: str, status: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "UPDATE purchase_requests SET status = %s, updated_at = now() WHERE id = %s "
            "RETURNING *", (status, request_id),
        ).fetchone()
    assert row is not None
    return row


def create_request(conn: psycopg.Connection[Any], who: Principal, *, title: str,
                   amount: Any, items: list[dict[str, Any]] | None = None,
                   description: str = "", department_id: str | None = None,
                   needed_by: date | None = None, submit: bool = False) -> dict[str, Any]:
    if who.role not in ("requester", "admin", "buyer"):
        raise WorkflowError(403, "forbidden", f"role {who.role} cannot create requests")
    if not isinstance(title, str) or not 1 <= len(title.strip()) <= 200:
        raise WorkflowError(422, "invalid_title", "title must be 1-200 characters")
    value = _amount(amount)
    department = department_id or who.department_id
    if who.role == "requester" and department != who.department_id:
        # seed: requesters file requests for their department; buyers and admins may file
        # for any department
        raise WorkflowError(403, "forbidden",
                            "a requester files requests for their own department only")
    if department is None:
        raise WorkflowError(422, "invalid_department", "department_id is required")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        act_as(conn, who.user_id)
        try:
            row = cur.execute(
                "INSERT INTO purchase_requests (title, description, requester_id, department_id,"
                " amount, items, status, needed_by) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
                " RETURNING *",
                (title.strip(), description, who.user_id, department, value,
                 Jsonb(items or []), "pending_a1" if submit else "draft", needed_by),
            ).fetchone()
        except (psycopg.errors.ForeignKeyViolation,
                psycopg.errors.InvalidTextRepresentation) as exc:
            raise WorkflowError(422, "invalid_department", "unknown department_id") from exc
        assert row is not None
        _audit(conn, "purchase_requests", str(row["id"]), "create", who, {"submit": submit})
    return row


def _requester_step(conn: psycopg.Connection[Any], who: Principal, request_id: str, *,
                    allowed_from: tuple[str, ...], to: str, action: str) -> dict[str, Any]:
    """A step only the request's requester (or an admin) may take: submit, cancel."""
    with conn.transaction():
        act_as(conn, who.user_id)
        req = _lock_request(conn, request_id)
        if str(req["requester_id"]) != who.user_id and who.role != "admin":
            raise WorkflowError(403, "forbidden",
                                f"only the requester or an admin can {action} a request")
        if req["status"] not in allowed_from:
            raise WorkflowError(409, "invalid_transition",
                                f"cannot {action} a request in status {req['status']}")
        row = _set_status(conn, request_id, to)
        _audit(conn, "purchase_requests", request_id, action, who, {})
    return row


def submit_request(conn: psycopg.Connection[Any], who: Principal, request_id: str
                   ) -> dict[str, Any]:
    return _requester_step(conn, who, request_id, allowed_from=("draft",),
                           to="pending_a1", action="submit")


def decide(conn: psycopg.Connection[Any], who: Principal, request_id: str, verdict: str,
           comment: str = "") -> dict[str, Any]:
    """Approve or reject at the caller's level. Returns the request after the decision."""
    if verdict not in ("approved", "rejected"):
        raise WorkflowError(422, "invalid_verdict", "verdict must be approved or rejected")
    if who.role not in ("approver_a1", "approver_a2", "approver_a3", "admin"):
        raise WorkflowError(403, "forbidden", f"role {who.role} cannot approve")
    with conn.transaction():
        act_as(conn, who.user_id)
        req = _lock_request(conn, request_id)
        status = req["status"]
        if status not in PENDING:
            raise WorkflowError(409, "invalid_transition",
                                f"request is {status}, not waiting for approval")
        level = int(status[-1])
        if who.role != "admin" and who.role != f"approver_a{level}":
            raise WorkflowError(403, "forbidden",
                                f"request waits for level {level}; you approve at "
                                f"{who.role.removeprefix('approver_')}")
        conn.execute(
            "INSERT INTO approvals (purchase_request_id, level, approver_id, verdict, comment)"
            " VALUES (%s, %s, %s, %s, %s)", (request_id, level, who.user_id, verdict, comment),
        )
        if verdict == "rejected":
            new_status = "rejected"
        else:
            new_status = f"pending_a{level + 1}" if level < 3 else "approved"
        row = _set_status(conn, request_id, new_status)
        _audit(conn, "purchase_requests", request_id, verdict, who, {"level": level})
    return row


def add_quotation(conn: psycopg.Connection[Any], who: Principal, request_id: str, *,
                  supplier_id: str, amount: Any, delivery_days: int | None = None,
                  notes: str = "") -> dict[str, Any]:
    if who.role not in ("buyer", "admin"):
        raise WorkflowError(403, "forbidden", "only buyers add quotations")
    value = _amount(amount)
    if delivery_days is not None and (isinstance(delivery_days, bool)
                                      or not isinstance(delivery_days, int)
                                      or not 0 <= delivery_days <= 3650):
        raise WorkflowError(422, "invalid_delivery_days", "delivery_days must be 0-3650")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        act_as(conn, who.user_id)
        req = _lock_request(conn, request_id)
        if req["status"] not in ("approved", "quoting"):
            raise WorkflowError(409, "invalid_transition",
                                f"request is {req['status']}: quotations need an approved request")
        try:
            row = cur.execute(
                "INSERT INTO quotations (purchase_request_id, supplier_id, amount, delivery_days,"
                " notes, valid_until) VALUES (%s, %s, %s, %s, %s, current_date + 30) RETURNING *",
                (request_id, supplier_id, value, delivery_days, notes),
            ).fetchone()
        except (psycopg.errors.ForeignKeyViolation,
                psycopg.errors.InvalidTextRepresentation) as exc:
            raise WorkflowError(422, "invalid_supplier", "unknown supplier_id") from exc
        if req["status"] == "approved":
            _set_status(conn, request_id, "quoting")
        assert row is not None
        _audit(conn, "quotations", str(row["id"]), "create", who, {})
    return row


def issue_order(conn: psycopg.Connection[Any], who: Principal, request_id: str,
                quotation_id: str) -> dict[str, Any]:
    if who.role not in ("buyer", "admin"):
        raise WorkflowError(403, "forbidden", "only buyers issue orders")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        act_as(conn, who.user_id)
        req = _lock_request(conn, request_id)
        if req["status"] != "quoting":
            raise WorkflowError(409, "invalid_transition",
                                f"request is {req['status']}: orders need quotations")
        try:
            quote = cur.execute(
                "SELECT * FROM quotations WHERE id = %s AND purchase_request_id = %s FOR UPDATE",
                (quotation_id, request_id),
            ).fetchone()
        except psycopg.errors.InvalidTextRepresentation:
            quote = None
        if quote is None:
            raise WorkflowError(404, "not_found", "no such quotation for this request")
        if quote["status"] != "active":
            raise WorkflowError(409, "invalid_transition", f"quotation is {quote['status']}")
        cur.execute("UPDATE quotations SET status = 'selected' WHERE id = %s", (quotation_id,))
        cur.execute(
            "UPDATE quotations SET status = 'declined' WHERE purchase_request_id = %s "
            "AND id <> %s AND status = 'active'", (request_id, quotation_id),
        )
        expected = date.today() + timedelta(days=int(quote["delivery_days"] or 7))
        order = cur.execute(
            "INSERT INTO purchase_orders (purchase_request_id, quotation_id, supplier_id, "
            "buyer_id, amount, currency, expected_delivery_date) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s) RETURNING *",
            (request_id, quotation_id, quote["supplier_id"], who.user_id, quote["amount"],
             quote["currency"], expected),
        ).fetchone()
        _set_status(conn, request_id, "ordered")
        assert order is not None
        _audit(conn, "purchase_orders", str(order["id"]), "issue", who, {})
    return order


def _lock_order(conn: psycopg.Connection[Any], order_id: str) -> dict[str, Any]:
    with conn.cursor(row_factory=dict_row) as cur:
        try:
            order = cur.execute(
                "SELECT * FROM purchase_orders WHERE id = %s FOR UPDATE", (order_id,)
            ).fetchone()
        except psycopg.errors.InvalidTextRepresentation:
            order = None
    if order is None:
        raise WorkflowError(404, "not_found", "no such purchase order")
    return order


def mark_delivered(conn: psycopg.Connection[Any], who: Principal, order_id: str
                   ) -> dict[str, Any]:
    if who.role not in ("buyer", "admin"):
        raise WorkflowError(403, "forbidden", "only buyers record deliveries")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        act_as(conn, who.user_id)
        order = _lock_order(conn, order_id)
        if order["delivery_status"] == "delivered" or order["status"] == "cancelled":
            raise WorkflowError(409, "invalid_transition",
                                f"order is {order['status']}/{order['delivery_status']}")
        row = cur.execute(
            "UPDATE purchase_orders SET delivery_status = 'delivered', delivered_at = now(), "
            "status = 'closed' WHERE id = %s RETURNING *", (order_id,),
        ).fetchone()
        _lock_request(conn, str(order["purchase_request_id"]))
        _set_status(conn, str(order["purchase_request_id"]), "delivered")
        _audit(conn, "purchase_orders", order_id, "delivered", who, {})
    assert row is not None
    return row


def mark_in_transit(conn: psycopg.Connection[Any], who: Principal, order_id: str
                    ) -> dict[str, Any]:
    if who.role not in ("buyer", "admin"):
        raise WorkflowError(403, "forbidden", "only buyers update deliveries")
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        act_as(conn, who.user_id)
        order = _lock_order(conn, order_id)
        if order["delivery_status"] not in ("pending", "late"):
            raise WorkflowError(409, "invalid_transition",
                                f"order delivery is {order['delivery_status']}")
        row = cur.execute(
            "UPDATE purchase_orders SET delivery_status = 'in_transit', status = 'confirmed' "
            "WHERE id = %s RETURNING *", (order_id,),
        ).fetchone()
        _audit(conn, "purchase_orders", order_id, "in_transit", who, {})
    assert row is not None
    return row


def cancel_request(conn: psycopg.Connection[Any], who: Principal, request_id: str
                   ) -> dict[str, Any]:
    return _requester_step(conn, who, request_id, allowed_from=CANCELLABLE,
                           to="cancelled", action="cancel")


def mark_late_deliveries(conn: psycopg.Connection[Any]) -> int:
    """Orders past their expected date and not delivered become 'late' (alerts follow)."""
    with conn.transaction():
        act_as(conn, SYSTEM_ACTOR + "delivery_watch")
        cur = conn.execute(
            "UPDATE purchase_orders SET delivery_status = 'late' WHERE delivery_status IN "
            "('pending', 'in_transit') AND expected_delivery_date < current_date"
        )
    return cur.rowcount
