"""The topic catalogue: every topic Sinal publishes, once.

A topic is the stream of changes of one table (or, for `metrics`, of the node's numbers;
for `dashboard`, of counters kept from the change log by domain/aggregates.py).
Everything that names topics, tables or REST resources derives from `CATALOGUE`: the
capture triggers are checked against it table by table (tests/test_schema.py), the
permission rules (domain/access.py) and the REST resources and routes (api/) read it.

| topic | table | REST resource |
|---|---|---|
| purchase_request_changed | purchase_requests | /api/purchase-requests |
| approval_changed | approvals | /api/approvals |
| quotation_changed | quotations | /api/quotations |
| purchase_order_changed | purchase_orders | /api/purchase-orders |
| supplier_changed | suppliers | /api/suppliers |
| user_changed | users | /api/users |
| department_changed | departments | /api/departments |
| notifications | notifications | - (delivered to their user on every socket) |
| metrics | - (the node's numbers) | - |
| dashboard | - (aggregates of the four workflow tables) | /api/dashboard |
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic: its name on the wire, its table, and its REST resource (if any)."""

    topic: str
    table: str | None
    rest_name: str | None = None  # the REST resource: /api/<rest_name>
    columns: tuple[str, ...] = ()  # the table's columns in order (checked against the DB)



@dataclass(frozen=True, slots=True)
class Resource:
    """A topic readable over REST: GET /api/<name>[/<id>]."""

    name: str
    table: str
    topic: str
    columns: tuple[str, ...]

    @property
    def path(self) -> str:
        """The REST path of the resource's list."""
        return f"/api/{self.name}"


NOTIFICATION_TOPIC = "notifications"
METRICS_TOPIC = "metrics"
DASHBOARD_TOPIC = "dashboard"

CATALOGUE: tuple[TopicSpec, ...] = (
    TopicSpec("purchase_request_changed", "purchase_requests", "purchase-requests", (
        "id", "title", "description", "requester_id", "department_id", "amount", "currency",
        "items", "status", "needed_by", "created_at", "updated_at", "status_changed_at")),
    TopicSpec("approval_changed", "approvals", "approvals", (
        "id", "purchase_request_id", "level", "approver_id", "verdict", "comment",
        "decided_at", "created_at", "updated_at", "waiting_since")),
    TopicSpec("quotation_changed", "quotations", "quotations", (
        "id", "purchase_request_id", "supplier_id", "amount", "currency", "delivery_days",
        "status", "valid_until", "notes", "created_at", "updated_at")),
    TopicSpec("purchase_order_changed", "purchase_orders", "purchase-orders", (
        "id", "purchase_request_id", "quotation_id", "supplier_id", "buyer_id", "amount",
        "currency", "status", "delivery_status", "expected_delivery_date", "delivered_at",
        "created_at", "updated_at")),
    TopicSpec("supplier_changed", "suppliers", "suppliers", (
        "id", "name", "email", "tax_id", "is_active", "created_at", "updated_at")),
    TopicSpec("user_changed", "users", "users", (
        "id", "email", "name", "role", "department_id", "is_active", "created_at",
        "updated_at")),
    TopicSpec("department_changed", "departments", "departments", (
        "id", "name", "created_at", "updated_at")),
    TopicSpec(NOTIFICATION_TOPIC, "notifications"),
    TopicSpec(METRICS_TOPIC, None),
    TopicSpec(DASHBOARD_TOPIC, None),
)

BY_TOPIC: dict[str, TopicSpec] = {spec.topic: spec for spec in CATALOGUE}
ALL_TOPICS: tuple[str, ...] = tuple(spec.topic for spec in CATALOGUE)
# Topics fed by the change log (every one with a table): one Topic actor each.
LOG_TOPICS: tuple[str, ...] = tuple(spec.topic for spec in CATALOGUE if spec.table)
# Row topics a client subscribes to by name (the notifications topic is joined at connect).
DATA_TOPICS: tuple[str, ...] = tuple(t for t in LOG_TOPICS if t != NOTIFICATION_TOPIC)
TOPIC_BY_TABLE: dict[str, str] = {spec.table: spec.topic for spec in CATALOGUE if spec.table}
RESOURCES: dict[str, Resource] = {
    spec.rest_name: Resource(spec.rest_name, spec.table, spec.topic, spec.columns)
    for spec in CATALOGUE if spec.rest_name and spec.table}
