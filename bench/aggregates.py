"""bench/aggregates: what the dashboard's figures cost per change, in microseconds.

In one process, with no socket and no database (the work of the actors alone, measured
with perf_counter over a synthetic workflow of changes read in listener-sized batches):

* ``fan-out baseline``: `Topic.publish` of the `purchase_request_changed` changes to N
  subscribers (admins: every change matches), i.e. what every change already costs to
  reach N sockets' outboxes. The ratios below divide by its microseconds per change.
* ``aggregates, 0 subscribers``: `AggregatesActor.apply_now` of every change (all tables):
  the incremental upkeep of the cells.
* ``aggregates, N subscribers``: the same, then `AggregatesActor.flush` after every batch
  (the worst case: a flush per batch, where the node flushes at most every 250 ms), N
  dashboard subscribers spread over eight scopes (an admin's, three approvers', a
  buyer's, three departments' requesters'); and again flushing every `paced_flush`
  changes (50: 200 changes/s with the default 250 ms interval).

Microseconds are per change of the log (every table's), for the baseline too, so the
ratios compare the same stream; `fanoutUsPerTopicChange` is the baseline per change it
fanned out.

Each measured run is repeated and the fastest kept (the machine is shared). Sinks accept
every frame and count its bytes.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import trio

from sinal.actors.aggregates import AggregatesActor
from sinal.actors.topic import Subscription, Topic, TopicBatch
from sinal.domain.access import EVERYTHING
from sinal.domain.aggregates import AggregateState, dashboard_plan
from sinal.domain.changes import Change
from sinal.domain.principals import Principal
from sinal.engine.registry import Registry
from sinal.protocol import Encoding

DEPARTMENTS = [f"d000000{i}-0000-4000-8000-000000000000" for i in range(3)]


@dataclass
class AggregatesOptions:
    changes: int = 20_000
    batch: int = 20  # changes per listener read
    subscribers: int = 1000
    repeats: int = 3
    seed: int = 7
    paced_flush: int = 50  # changes between two flushes at 200 changes/s and 250 ms


class CountingSink:
    encoding = Encoding.MSGPACK

    def __init__(self) -> None:
        self.frames = 0
        self.bytes = 0

    def offer(self, data: bytes) -> bool:
        self.frames += 1
        self.bytes += len(data)
        return True

    def lagged(self, subscription: Subscription) -> None:
        raise AssertionError("a counting sink never lags")


def workflow_changes(count: int, seed: int) -> list[Change]:
    """A mix like `sinal simulate`'s: requests created and moved on, decisions, quotations,
    orders, and changes no figure counts (notifications, suppliers)."""
    rnd = random.Random(seed)
    now = datetime(2026, 11, 30, 12, tzinfo=UTC)
    requests: dict[str, dict[str, Any]] = {}
    orders: dict[str, dict[str, Any]] = {}
    quotes: dict[str, list[dict[str, Any]]] = {}  # a request's active quotations
    out: list[Change] = []
    flow = {"pending_a1": "pending_a2", "pending_a2": "pending_a3", "pending_a3": "approved",
            "approved": "quoting", "quoting": "ordered", "ordered": "delivered"}

    def add(topic: str, table: str, op: str, new: dict[str, Any] | None,
            old: dict[str, Any] | None, changed: dict[str, Any] | None) -> None:
        row = new or old or {}
        out.append(Change(len(out) + 1, topic, table, op, str(row.get("id")), new, old,
                          changed, now))

    while len(out) < count:
        roll = rnd.random()
        stamp = (now - timedelta(minutes=rnd.randrange(0, 60 * 24 * 20))).isoformat()
        if roll < 0.25 or not requests:
            row = {"id": f"r{len(out)}", "status": "pending_a1", "amount": rnd.randrange(1, 10**6)
                   / 100, "department_id": rnd.choice(DEPARTMENTS), "title": "x"}
            requests[row["id"]] = row
            add("purchase_request_changed", "purchase_requests", "insert", row, None, None)
        elif roll < 0.55:
            row = requests[rnd.choice(list(requests))]
            nxt = flow.get(row["status"])
            if nxt is None:
                continue
            new = {**row, "status": nxt, "updated_at": stamp}
            requests[row["id"]] = new
            add("purchase_request_changed", "purchase_requests", "update", new,
                {"status": row["status"]}, {"status": nxt, "updated_at": stamp})
            if row["status"] == "quoting":  # the order: its quotations are decided
                for quote in quotes.pop(row["id"], []):
                    add("quotation_changed", "quotations", "update",
                        {**quote, "status": "declined"}, {"status": "active"},
                        {"status": "declined"})
            if row["status"].startswith("pending_a"):
                add("approval_changed", "approvals", "insert", {
                    "id": f"a{len(out)}", "purchase_request_id": row["id"],
                    "level": int(row["status"][-1]), "verdict": "approved",
                    "decided_at": stamp, "waiting_since": (now - timedelta(hours=30))
                    .isoformat()}, None, None)
        elif roll < 0.7:
            quoting = [r for r in requests.values() if r["status"] in ("approved", "quoting")]
            if not quoting:
                continue
            quote = {"id": f"q{len(out)}", "purchase_request_id": rnd.choice(quoting)["id"],
                     "status": "active"}
            quotes.setdefault(quote["purchase_request_id"], []).append(quote)
            add("quotation_changed", "quotations", "insert", quote, None, None)
        elif roll < 0.85:
            if orders and rnd.random() < 0.5:
                order = orders[rnd.choice(list(orders))]
                new = {**order, "delivery_status": "in_transit"}
                orders[order["id"]] = new
                add("purchase_order_changed", "purchase_orders", "update", new,
                    {"delivery_status": order["delivery_status"]},
                    {"delivery_status": "in_transit"})
            else:
                order = {"id": f"o{len(out)}", "delivery_status": "pending",
                         "expected_delivery_date": (now + timedelta(days=rnd.randrange(-5, 10)))
                         .date().isoformat()}
                orders[order["id"]] = order
                add("purchase_order_changed", "purchase_orders", "insert", order, None, None)
        else:
            add("notifications", "notifications", "insert", {"id": f"n{len(out)}"}, None,
                None)
    return out[:count]


def _best(run: Callable[[], float], repeats: int) -> float:
    return min(run() for _ in range(repeats))


def _batches(changes: list[Change], size: int) -> list[list[Change]]:
    return [changes[i:i + size] for i in range(0, len(changes), size)]


async def _measure(options: AggregatesOptions) -> dict[str, Any]:
    changes = workflow_changes(options.changes, options.seed)
    batches = _batches(changes, options.batch)
    n = options.subscribers
    principals = ([Principal("admin", "admin")]
                  + [Principal(f"ap{i}", f"approver_a{i}") for i in (1, 2, 3)]
                  + [Principal("buyer", "buyer")]
                  + [Principal(f"rq{i}", "requester", d) for i, d in enumerate(DEPARTMENTS)])
    plans = [dashboard_plan(p, None) for p in principals]

    def baseline() -> float:
        topic = Topic("purchase_request_changed", registry=Registry())
        for _ in range(n):
            topic.subscribe(CountingSink(), EVERYTHING, None)
        own = [[c for c in b if c.topic == topic.topic] for b in batches]
        started = time.perf_counter()
        since = 0
        for batch, mine in zip(batches, own, strict=True):
            topic.publish(TopicBatch(tuple(mine), since, batch[-1].position))
            since = batch[-1].position
        return time.perf_counter() - started

    def aggregates(subscribers: int, flush_every: int) -> tuple[float, int]:
        actor = AggregatesActor(db=None, registry=Registry())  # type: ignore[arg-type]
        actor.state = AggregateState(approvals_from="2026-10-01")
        actor.loaded = True
        sinks = [CountingSink() for _ in range(subscribers)]
        for index, sink in enumerate(sinks):
            actor.join(sink, plans[index % len(plans)], None)
        started = time.perf_counter()
        pending = 0
        for batch in batches:
            actor.apply_now(batch)
            pending += len(batch)
            if subscribers and pending >= flush_every:
                actor.flush()
                pending = 0
        elapsed = time.perf_counter() - started
        return elapsed, sum(s.frames for s in sinks) - subscribers  # less the snapshots

    fan = _best(baseline, options.repeats)
    alone = _best(lambda: aggregates(0, 1)[0], options.repeats)
    frames = 0

    def with_subscribers() -> float:
        nonlocal frames
        elapsed, frames = aggregates(n, options.batch)
        return elapsed

    served = _best(with_subscribers, options.repeats)
    paced = _best(lambda: aggregates(n, options.paced_flush)[0], options.repeats)
    per = 1e6 / len(changes)
    fanned = sum(c.topic == "purchase_request_changed" for c in changes)
    return {
        "options": options.__dict__,
        "changes": len(changes),
        "requestChanges": fanned,
        "batches": len(batches),
        "fanoutBaselineUsPerChange": round(fan * per, 3),
        "fanoutUsPerTopicChange": round(fan * 1e6 / fanned, 3),
        "aggregatesUsPerChange": round(alone * per, 3),
        "aggregatesWithSubscribersUsPerChange": round(served * per, 3),
        "ratioAloneToFanout": round(alone / fan, 3),
        "ratioWithSubscribersToFanout": round(served / fan, 3),
        "aggregatesPacedUsPerChange": round(paced * per, 3),
        "ratioPacedToFanout": round(paced / fan, 3),
        "dashboardFrames": frames,
        "scopes": len(plans),
    }


def run_aggregates(options: AggregatesOptions, log: Callable[[str], None]) -> dict[str, Any]:
    result: dict[str, Any] = trio.run(_measure, options)
    log(f"aggregates: {result['aggregatesUsPerChange']} us/change alone, "
        f"{result['aggregatesWithSubscribersUsPerChange']} us/change with "
        f"{options.subscribers} subscribers; fan-out baseline "
        f"{result['fanoutBaselineUsPerChange']} us/change")
    return result


if __name__ == "__main__":  # python -m bench.aggregates
    print(run_aggregates(AggregatesOptions(), print))
