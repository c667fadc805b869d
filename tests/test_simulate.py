"""`sinal simulate`'s traffic walks the whole workflow and every topic sees changes."""

from __future__ import annotations

import random
from collections import Counter

import psycopg

from sinal.domain.changes import read_changes, sequence_changes
from sinal.node.demo import seed_demo
from sinal.node.simulate import one_action


def test_simulated_traffic_reaches_every_stage(db_url: str) -> None:
    rnd = random.Random(7)
    actions: Counter[str] = Counter()
    with psycopg.connect(db_url, autocommit=True) as conn:
        users = seed_demo(conn)
        suppliers = [r[0] for r in conn.execute("SELECT id::text FROM suppliers")]
        for _ in range(400):
            actions[one_action(conn, users, suppliers, rnd)] += 1
        statuses = {r[0] for r in conn.execute("SELECT DISTINCT status FROM purchase_requests")}
        sequence_changes(conn)
        topics = {c.topic for c in read_changes(conn, 0, limit=100000)}
    assert {"create", "quotation", "order", "delivered"} <= set(actions)
    assert any(a.startswith("approved_a3") for a in actions)
    assert any(a.startswith("rejected") for a in actions)
    assert {"pending_a1", "delivered", "rejected"} <= statuses
    assert {"purchase_request_changed", "approval_changed", "quotation_changed",
            "purchase_order_changed"} <= topics
