"""Migrations and change capture against a real PostgreSQL."""

from __future__ import annotations

import select

import psycopg
import pytest

from sinal.domain.changes import head_position, read_changes, retained_since, sequence_changes
from sinal.domain.principals import Principal
from sinal.domain.workflow import WorkflowError, create_request, decide, submit_request
from sinal.node.demo import seed_demo
from sinal.node.migrate import MigrationError, apply_migrations, shipped_migrations

DOMAIN = {"users", "departments", "suppliers", "purchase_requests", "approvals", "quotations",
          "purchase_orders", "audit_logs"}
REALTIME = {"websocket_connections", "event_subscriptions", "performance_metrics",
            "cache_etags", "change_log", "notification_preferences", "notifications"}


def test_migrations_apply_once_and_are_safe_to_rerun(empty_db_url: str) -> None:
    first = apply_migrations(empty_db_url)
    assert [m.version for m in first] == [m.version for m in shipped_migrations()]
    assert apply_migrations(empty_db_url) == []
    with psycopg.connect(empty_db_url) as conn:
        tables = {r[0] for r in conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        indexes = {r[0] for r in conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
        recorded = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()
    assert DOMAIN | REALTIME <= tables
    assert recorded == (len(first),)
    for seed_index in ("idx_purchase_requests_status_updated", "idx_quotations_active",
                       "idx_audit_logs_realtime", "idx_websocket_active",
                       "idx_websocket_user_id", "idx_event_subscriptions_type",
                       "idx_performance_metrics_type_time", "idx_cache_etags_modified"):
        assert seed_index in indexes


def test_an_edited_applied_migration_is_refused(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE schema_migrations SET checksum = 'x' WHERE version = 1")
    with pytest.raises(MigrationError, match="was changed"):
        apply_migrations(db_url)


def test_trigger_logs_insert_update_delete_with_changed_fields(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        users = seed_demo(conn)
        ana = users["ana@sinal.dev"]
        actor = Principal(ana["id"], "requester", ana["department_id"])
        start = sequence_changes(conn)
        req = create_request(conn, actor, title="Notebook", amount="4200.00",
                             items=[{"name": "Notebook", "quantity": 1}])
        submit_request(conn, actor, str(req["id"]))
        conn.execute("UPDATE purchase_requests SET status = status WHERE id = %s", (req["id"],))
        conn.execute("DELETE FROM purchase_requests WHERE id = %s", (req["id"],))
        head = sequence_changes(conn)
        changes = [c for c in read_changes(conn, start) if c.table == "purchase_requests"]
    assert head > start
    assert [c.op for c in changes] == ["insert", "update", "delete"]  # the no-op is not logged
    insert, update, delete = changes
    assert {c.topic for c in changes} == {"purchase_request_changed"}
    assert insert.new_row is not None and insert.new_row["title"] == "Notebook"
    assert insert.row_id == str(req["id"])
    assert update.changed is not None and update.changed["status"] == "pending_a1"
    # a status change also moves status_changed_at (sql/007_actors_and_waits.sql)
    assert update.old_row == {"status": "draft", "updated_at": update.old_row["updated_at"],
                              "status_changed_at": insert.new_row["status_changed_at"]}
    assert set(update.changed) == {"status", "updated_at", "status_changed_at"}
    assert update.changed["status_changed_at"] > insert.new_row["status_changed_at"]
    assert delete.new_row is None and delete.old_row is not None
    assert delete.old_row["status"] == "pending_a1"
    assert [c.position for c in changes] == sorted(c.position for c in changes)


def test_notify_wakes_listeners_with_a_small_payload(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as listener, \
            psycopg.connect(db_url, autocommit=True) as writer:
        listener.execute("LISTEN sinal_changes")
        listener.execute("LISTEN sinal_positions")
        writer.execute("INSERT INTO suppliers (name, email) VALUES (%s, 'x@y')", ("x" * 9000,))
        sequence_changes(writer)
        # wait on the socket, as the listener actor will (guarded against hangs)
        ready, _, _ = select.select([listener.fileno()], [], [], 10)
        assert ready
        got = list(listener.notifies(timeout=1, stop_after=2))
    payloads = {n.channel: n.payload for n in got}
    assert payloads["sinal_changes"] == "supplier_changed"  # the topic, never the row
    assert int(payloads["sinal_positions"]) >= 1


def test_change_log_keeps_rows_bigger_than_notify_could_carry(db_url: str) -> None:
    big = "y" * 20000
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO suppliers (name) VALUES (%s)", (big,))
        sequence_changes(conn)
        (change,) = read_changes(conn, 0)
        assert change.new_row is not None and change.new_row["name"] == big
        assert retained_since(conn) == 0
        assert head_position(conn) == 1


def test_only_the_approver_of_the_level_decides(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        users = seed_demo(conn)
        ana, carla, diego = (users[e] for e in ("ana@sinal.dev", "carla@sinal.dev",
                                                 "diego@sinal.dev"))
        req = create_request(conn, Principal(ana["id"], "requester", ana["department_id"]),
                             title="Cadeira", amount=900, submit=True)
        with pytest.raises(WorkflowError) as info:
            decide(conn, Principal(diego["id"], "approver_a2"), str(req["id"]), "approved")
        assert info.value.status == 403
        after = decide(conn, Principal(carla["id"], "approver_a1"), str(req["id"]), "approved")
        assert after["status"] == "pending_a2"
        with pytest.raises(WorkflowError) as info:
            submit_request(conn, Principal(ana["id"], "requester"), str(req["id"]))
        assert info.value.status == 409


def test_a_no_op_update_changes_neither_the_row_nor_the_log(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("INSERT INTO suppliers (name) VALUES ('same')")
        head = sequence_changes(conn)
        before = conn.execute("SELECT updated_at FROM suppliers WHERE name = 'same'").fetchone()
        conn.execute("UPDATE suppliers SET name = 'same' WHERE name = 'same'")
        after = conn.execute("SELECT updated_at FROM suppliers WHERE name = 'same'").fetchone()
        assert sequence_changes(conn) == head
        conn.execute("UPDATE suppliers SET email = 'e@x' WHERE name = 'same'")
        touched = conn.execute("SELECT updated_at FROM suppliers WHERE name = 'same'").fetchone()
    assert before == after
    assert touched is not None and before is not None and touched[0] > before[0]
