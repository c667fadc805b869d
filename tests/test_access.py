"""Row filters compare by JSON value (docs/protocol.md section 5), in Python (fan-out and
REST deltas) and in SQL (REST full lists), and the two agree on every column type."""

from __future__ import annotations

import json
import random
from decimal import Decimal
from typing import Any

import psycopg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from sinal.domain.access import (
    EVERYTHING,
    RowFilter,
    canonical,
    client_filter,
    filter_sql,
    key_text,
    permission_filter,
    scope_key,
)
from sinal.domain.principals import Principal


def matches(filters: dict[str, Any], row: dict[str, Any]) -> bool:
    return client_filter(filters).matches_row(row)


def test_true_is_not_one_and_one_is_one_point_zero() -> None:
    assert not matches({"n": True}, {"n": 1})
    assert not matches({"n": 1}, {"n": True})
    assert not matches({"n": False}, {"n": 0})
    assert matches({"n": 1}, {"n": 1.0})
    assert matches({"n": 1.0}, {"n": 1})
    assert matches({"n": [2, 1.5]}, {"n": 1.5})
    assert matches({"n": -0.0}, {"n": 0})
    assert matches({"b": True}, {"b": True}) and not matches({"b": True}, {"b": False})


def test_text_is_not_a_number() -> None:
    assert not matches({"n": "10"}, {"n": 10})
    assert not matches({"n": 10}, {"n": "10"})
    assert not matches({"n": "1.0"}, {"n": 1})
    assert not matches({"b": "true"}, {"b": True})
    assert matches({"s": "10"}, {"s": "10"})


def test_only_null_is_null() -> None:
    assert matches({"x": None}, {"x": None})
    assert matches({"x": None}, {})  # a column the row does not have is null
    not_nulls: list[Any] = ["\x00null", "null", "", 0, False, [], {}]
    for not_null in not_nulls:
        assert not matches({"x": None}, {"x": not_null}), not_null
    assert not matches({"x": "\x00null"}, {"x": None})
    assert not matches({"x": "null"}, {})


def test_numbers_read_as_the_decimal_json_writes() -> None:
    assert canonical(1250.5) == canonical(Decimal("1250.50")) == ("#", "1250.5")
    assert canonical(10**16) == canonical(1e16)
    assert canonical(1.5e-07) == ("#", "0.00000015")
    assert canonical(2**63 - 1) == ("#", "9223372036854775807")
    assert key_text(canonical("a")) == "'a" and key_text(canonical(7)) == "#7"
    assert [key_text(canonical(v)) for v in (None, True, False)] == ["null", "true", "false"]


def test_permission_filters_still_match_their_rows() -> None:
    me, dept = "7d0c1a52-0000-4000-8000-000000000001", "7d0c1a52-0000-4000-8000-00000000000d"
    requester = Principal(me, "requester", dept)
    own = permission_filter(requester, "purchase_request_changed")
    assert own.matches_row({"requester_id": me, "department_id": "other"})
    assert own.matches_row({"requester_id": "other", "department_id": dept})
    assert not own.matches_row({"requester_id": "other", "department_id": "other"})
    approver = permission_filter(Principal(me, "approver_a2"), "approval_changed")
    assert approver.matches_row({"level": 2}) and not approver.matches_row({"level": "2"})
    assert not approver.matches_row({"level": 3})
    pending = permission_filter(Principal(me, "approver_a2"), "purchase_request_changed")
    assert pending.matches_row({"status": "pending_a2"})
    notes = permission_filter(requester, "notifications")
    assert notes.matches_row({"user_id": me, "push": True})
    assert not notes.matches_row({"user_id": me, "push": 1})
    assert permission_filter(Principal(me, "admin"), "quotation_changed") is EVERYTHING


def test_scope_keys_tell_different_filters_apart() -> None:
    one = client_filter({"a": ["x,'y"]})
    two = client_filter({"a": ["x", "y"]})
    assert scope_key(one) != scope_key(two)
    assert scope_key(client_filter({"a": 1})) != scope_key(client_filter({"a": "1"}))
    assert scope_key(client_filter({"a": 1})) == scope_key(client_filter({"a": 1.0}))
    assert scope_key(client_filter({"a": [1, 2]})) == scope_key(client_filter({"a": [2, 1]}))
    assert scope_key(EVERYTHING) == "*"


# --- SQL agrees with Python on every column type --------------------------------------

TABLE = """CREATE TABLE typed (
    id SERIAL PRIMARY KEY, txt TEXT, v VARCHAR(20), u UUID, i INTEGER, s SMALLINT, g BIGINT,
    n NUMERIC(14, 2), r REAL, d DOUBLE PRECISION, b BOOLEAN, day DATE, ts TIMESTAMPTZ,
    j JSONB, c CHAR(3), a TEXT[])"""
UUID = "7d0c1a52-0000-4000-8000-000000000001"
COLUMN_VALUES: dict[str, list[Any]] = {
    "txt": ["10", "true", "null", "\x01null", "", "1.0", "a,b"],
    "v": ["10", "x"],
    "u": [UUID],
    "i": [0, 1, 10, -5],
    "s": [1, 2, 3],
    "g": [2**63 - 1, 10],
    "n": [Decimal("10.00"), Decimal("1250.50"), Decimal("0.10"), Decimal("-3")],
    "r": [1.5, 10.0, 0.1],
    "d": [1.0000000000000002, 10.0, 1e16],
    "b": [True, False],
    "day": ["2030-01-01", "2030-01-04"],
    "ts": ["2024-01-15T10:30:00.125+00:00"],
    "j": [json.dumps(x) for x in (10, "10", True, None, [1], {"a": 1}, 1.5)],
    "c": ["BRL", "ab"],
    "a": [["10"], []],
}
# Filter values: every scalar kind, and each column's own values as JSON writes them.
TRICKY: list[Any] = [None, True, False, 0, 1, 1.0, 10, 10.0, "10", "1.0", "true", "null",
                     "\x00null", "\x01null", "", 1.5, 0.1, "a,b", UUID, 1250.5, 2**63 - 1,
                     1.0000000000000002, 1e16, "2030-01-01", "2024-01-15T10:30:00.125+00:00",
                     "BRL", "ab ", "x", -3, -5, 3]


def insert_rows(conn: psycopg.Connection[Any], count: int) -> None:
    rng = random.Random(10)
    names = sorted(COLUMN_VALUES)
    for _ in range(count):
        values = [None if rng.random() < 0.2 else rng.choice(COLUMN_VALUES[n]) for n in names]
        conn.execute(
            sql.SQL("INSERT INTO typed ({}) VALUES ({})").format(
                sql.SQL(", ").join(map(sql.Identifier, names)),
                sql.SQL(", ").join(sql.Placeholder() * len(names))),
            values)


def test_filter_sql_agrees_with_python_on_every_column_type(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(TABLE)
        insert_rows(conn, 120)
        # the rows as the change log records them (to_jsonb), read as the node reads them
        rows = [r[0] for r in conn.execute("SELECT to_jsonb(t) FROM typed t")]
        columns = sorted(COLUMN_VALUES)
        clause = st.dictionaries(
            st.sampled_from(columns), st.lists(st.sampled_from(TRICKY), min_size=1, max_size=3),
            min_size=1, max_size=2)

        @settings(max_examples=150, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(groups=st.lists(st.lists(clause, min_size=1, max_size=2), min_size=1, max_size=2))
        def agree(groups: list[list[dict[str, list[Any]]]]) -> None:
            row_filter = EVERYTHING
            for group in groups:
                clauses = tuple(client_filter(c).groups[0][0] for c in group)
                row_filter = row_filter.and_also(RowFilter((clauses,)))
            where, params = filter_sql(row_filter)
            found = {r[0] for r in conn.execute(
                sql.SQL("SELECT id FROM typed AS t WHERE {}").format(where), params)}
            assert found == {r["id"] for r in rows if row_filter.matches_row(r)}, groups

        agree()
        # and each tricky value on each column alone, exhaustively
        for column in columns:
            for value in TRICKY:
                row_filter = client_filter({column: value})
                where, params = filter_sql(row_filter)
                found = {r[0] for r in conn.execute(
                    sql.SQL("SELECT id FROM typed AS t WHERE {}").format(where), params)}
                expected = {r["id"] for r in rows if row_filter.matches_row(r)}
                assert found == expected, (column, value)


def test_a_number_never_matches_a_text_column_in_sql(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(TABLE)
        conn.execute("INSERT INTO typed (txt, i, n, b) VALUES ('10', 10, 10.00, true)")
        conn.execute("INSERT INTO typed (txt, i, n, b) VALUES ('\x01null', NULL, NULL, NULL)")

        def ids(filters: dict[str, Any]) -> set[int]:
            where, params = filter_sql(client_filter(filters))
            return {r[0] for r in conn.execute(
                sql.SQL("SELECT id FROM typed AS t WHERE {}").format(where), params)}

        assert ids({"txt": "10"}) == {1} and ids({"txt": 10}) == set()
        assert ids({"i": 10}) == ids({"i": 10.0}) == ids({"n": 10}) == {1}
        assert ids({"i": "10"}) == ids({"n": "10"}) == ids({"n": "10.00"}) == set()
        assert ids({"b": True}) == {1} and ids({"b": 1}) == ids({"b": "true"}) == set()
        assert ids({"i": None}) == ids({"b": None}) == {2}
        assert ids({"txt": None}) == set()
