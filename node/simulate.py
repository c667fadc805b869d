"""`sinal simulate`: realistic procurement traffic, written straight into PostgreSQL.

At `rate` actions per second it picks, by weight, among what the workflow allows now:
create and submit requests, approve or reject level by level, add quotations from
suppliers, issue orders and record deliveries. Every action is one transaction through
api.workflow, so the triggers see exactly what a real user's write produces.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg

from sinal.domain.principals import Principal
from sinal.domain.workflow import (
    WorkflowError,
    add_quotation,
    create_request,
    decide,
    issue_order,
    mark_delivered,
    mark_in_transit,
)
from sinal.node.demo import seed_demo

log = logging.getLogger("sinal.simulate")

ITEMS = (
    ("Notebook", 4200), ("Monitor 27\"", 1500), ("Cadeira ergonômica", 1100),
    ("Papel A4 (caixa)", 180), ("Licença de software", 900), ("Toner", 350),
    ("Frete mensal", 2500), ("Material de limpeza", 240),
)


@dataclass
class SimulationResult:
    actions: Counter[str]
    errors: int
    seconds: float


def _actor(user: dict[str, Any]) -> Principal:
    return Principal(user["id"], user["role"], user["department_id"])


def _pick(conn: psycopg.Connection[Any], sql: str) -> tuple[Any, ...] | None:
    return conn.execute(sql).fetchone()


def one_action(conn: psycopg.Connection[Any], users: dict[str, dict[str, Any]],
               suppliers: list[str], rnd: random.Random) -> str:
    by_role: dict[str, list[dict[str, Any]]] = {}
    for user in users.values():
        by_role.setdefault(user["role"], []).append(user)
    choice = rnd.choices(
        ["create", "approve", "quote", "order", "deliver"], weights=[3, 5, 3, 2, 2]
    )[0]
    if choice == "approve":
        row = _pick(conn, "SELECT id::text, status FROM purchase_requests WHERE status LIKE "
                          "'pending_a%' ORDER BY random() LIMIT 1")
        if row:
            approver = by_role[f"approver_a{row[1][-1]}"][0]
            verdict = "rejected" if rnd.random() < 0.12 else "approved"
            decide(conn, _actor(approver), row[0], verdict, comment="simulated")
            return f"{verdict}_a{row[1][-1]}"
    elif choice == "quote":
        row = _pick(conn, "SELECT id::text FROM purchase_requests WHERE status IN "
                          "('approved', 'quoting') ORDER BY random() LIMIT 1")
        if row:
            add_quotation(conn, _actor(by_role["buyer"][0]), row[0],
                          supplier_id=rnd.choice(suppliers),
                          amount=round(rnd.uniform(100, 20000), 2),
                          delivery_days=rnd.randint(0, 20))
            return "quotation"
    elif choice == "order":
        row = _pick(conn, "SELECT q.purchase_request_id::text, q.id::text FROM quotations q "
                          "JOIN purchase_requests r ON r.id = q.purchase_request_id "
                          "WHERE r.status = 'quoting' AND q.status = 'active' "
                          "ORDER BY random() LIMIT 1")
        if row:
            issue_order(conn, _actor(by_role["buyer"][0]), row[0], row[1])
            return "order"
    elif choice == "deliver":
        row = _pick(conn, "SELECT id::text, delivery_status FROM purchase_orders "
                          "WHERE delivery_status <> 'delivered' ORDER BY random() LIMIT 1")
        if row:
            buyer = _actor(by_role["buyer"][0])
            if row[1] == "pending" and rnd.random() < 0.5:
                mark_in_transit(conn, buyer, row[0])
                return "in_transit"
            mark_delivered(conn, buyer, row[0])
            return "delivered"
    requester = rnd.choice(by_role["requester"])
    item, price = rnd.choice(ITEMS)
    qty = rnd.randint(1, 10)
    create_request(conn, _actor(requester), title=f"{qty}x {item}", amount=price * qty,
                   items=[{"name": item, "quantity": qty, "unit_price": price}],
                   submit=rnd.random() < 0.9)
    return "create"


@dataclass(frozen=True, slots=True)
class Progress:
    """How a run is going: actions done, actions refused, seconds since the start."""

    actions: int
    errors: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.actions / self.seconds if self.seconds > 0 else 0.0


def simulate(url: str, rate: float, duration: float, seed: int | None = None, *,
             progress: Callable[[Progress], None] | None = None, progress_every: float = 5.0,
             clock: Callable[[], float] = time.monotonic,
             sleep: Callable[[float], None] = time.sleep) -> SimulationResult:
    """Run actions at `rate` per second for `duration` seconds (0: until interrupted).

    `progress` is called every `progress_every` seconds of the run (`sinal simulate`
    prints a line to stderr); `clock` and `sleep` are the run's time (tests pass their own).
    """
    rnd = random.Random(seed)
    counts: Counter[str] = Counter()
    errors = 0
    start = clock()
    next_report = start + progress_every
    with psycopg.connect(url, autocommit=True) as conn:
        users = seed_demo(conn)
        suppliers = [r[0] for r in conn.execute("SELECT id::text FROM suppliers "
                                                "WHERE is_active").fetchall()]
        interval = 1.0 / rate
        next_at = start
        try:
            while duration <= 0 or clock() - start < duration:
                try:
                    counts[one_action(conn, users, suppliers, rnd)] += 1
                except WorkflowError as exc:  # a race with another writer: count and go on
                    errors += 1
                    log.debug("simulated action refused: %s", exc.reason)
                now = clock()
                if progress is not None and now >= next_report:
                    progress(Progress(sum(counts.values()), errors, now - start))
                    next_report = now + progress_every
                next_at += interval
                delay = next_at - clock()
                if delay > 0:
                    sleep(delay)
                elif delay < -1:
                    next_at = clock()  # fell behind: do not burst to catch up
        except KeyboardInterrupt:
            pass
    return SimulationResult(counts, errors, clock() - start)
