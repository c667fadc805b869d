"""The topic catalogue (domain/catalogue.py) is the one list of topics: the database's
capture triggers, the permission rules, the REST resources and the protocol docs agree
with it, table by table."""

from __future__ import annotations

from pathlib import Path

import psycopg

from sinal.domain.access import permission_filter
from sinal.domain.catalogue import (
    ALL_TOPICS,
    CATALOGUE,
    DATA_TOPICS,
    METRICS_TOPIC,
    NOTIFICATION_TOPIC,
    RESOURCES,
    TOPIC_BY_TABLE,
)
from sinal.domain.principals import Principal

ROOT = Path(__file__).resolve().parents[1]


def test_every_capture_trigger_matches_the_catalogue(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT c.relname, encode(t.tgargs, 'escape') FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_proc p ON p.oid = t.tgfoid "
            "WHERE p.proname = 'sinal_capture_change' AND NOT t.tgisinternal").fetchall()
        columns = {
            table: tuple(r[0] for r in conn.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
                "ORDER BY ordinal_position", (table,)))
            for table in TOPIC_BY_TABLE}
    # tgargs is the argument list, each argument followed by a NUL byte
    captured = {table: args.split("\\000")[0] for table, args in rows}
    assert captured == TOPIC_BY_TABLE
    for spec in CATALOGUE:
        if spec.table and spec.columns:
            assert columns[spec.table] == spec.columns, spec.table


def test_topics_rules_and_resources_derive_from_it() -> None:
    assert set(ALL_TOPICS) == {spec.topic for spec in CATALOGUE}
    assert METRICS_TOPIC in ALL_TOPICS and NOTIFICATION_TOPIC not in DATA_TOPICS
    admin = Principal("u", "admin")
    for topic in ALL_TOPICS:  # every topic has a rule (admins see everything)
        permission_filter(admin, topic)
    for name, resource in RESOURCES.items():
        assert resource.path == f"/api/{name}" and TOPIC_BY_TABLE[resource.table] == resource.topic


def test_the_protocol_doc_names_every_topic() -> None:
    text = (ROOT / "docs" / "protocol.md").read_text()
    for topic in ALL_TOPICS:
        assert f"`{topic}`" in text, topic
