"""The security audit trail: what Sinal records in `audit_logs` besides the workflow's own
rows (domain/workflow.py writes those in the writer's transaction).

websocket:
- `auth_failed`, `token_expired`: a connect refused (bad, forged or expired token;
  unknown or inactive user);
- `subscribe_refused`: a subscription refused (`forbidden`, `unknown_topic`,
  `invalid_filter`);
- `closed_rate_limited`, `closed_slow_consumer`: a socket closed for abuse or slowness;
- `revoked`: a live session ended or narrowed (token expired, user deactivated, role or
  department changed).
http:
- `auth_failed`, `token_expired`, `forbidden`, `rate_limited`: a REST request refused
  (a request with no token at all is not recorded; `rate_limited` at most once per caller
  and minute, with the count of refusals not recorded since; api/app.py);
- `supervisor_read`, `preferences_changed`: admin and user actions.

`record_id` is the session id (WebSocket) or the request path (HTTP); `actor_id` the user
when Sinal knows who it is (never a claim it could not verify: a forged token's subject
goes into `details`). Events are written in batches by the audit writer (actors/audit.py),
never on the fan-out path; when the database is away they wait, and past a bound the
oldest are dropped and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import psycopg
from psycopg.types.json import Jsonb


@dataclass(frozen=True, slots=True)
class AuditEvent:
    table_name: str  # websocket | http
    record_id: str
    action: str
    actor_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


class AuditLog(Protocol):
    """Where events go; `record` never blocks and never fails."""

    def record(self, event: AuditEvent) -> None: ...


def insert_audit(conn: psycopg.Connection[Any], events: Sequence[AuditEvent]) -> int:
    """Write events in one statement batch (one transaction)."""
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO audit_logs (table_name, record_id, action, actor_id, details) "
            "VALUES (%s, %s, %s, %s, %s)",
            [(e.table_name, e.record_id[:200], e.action, e.actor_id, Jsonb(e.details))
             for e in events])
    return len(events)
