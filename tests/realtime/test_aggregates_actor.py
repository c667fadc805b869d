"""The aggregates actor in virtual time (autojump_clock), with a stand-in loader and sinks:
updates at most once per interval (the first after a quiet spell at once), a gap in the
positions reloads the figures and re-sends snapshots, so does a restart after a crash, the
day moving on moves the windowed figures, and a sink that refuses a frame is a slow
consumer."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import trio
import trio.testing

from sinal.actors.aggregates import AggregatesActor, Refresh
from sinal.actors.topic import Subscription
from sinal.domain.aggregates import AggregateState, DashboardPlan, dashboard_plan
from sinal.domain.changes import Change
from sinal.domain.db import Database
from sinal.domain.principals import Principal
from sinal.engine.registry import Registry
from sinal.engine.supervisor import ChildSpec, Supervisor, SupervisorFlags
from sinal.protocol import Encoding

DEPT = "d0000000-0000-4000-8000-000000000001"
ADMIN = Principal("a0000000-0000-4000-8000-000000000001", "admin")
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Sink:
    encoding = Encoding.JSON

    def __init__(self, accept: bool = True) -> None:
        self.accept = accept
        self.got: list[tuple[float, dict[str, Any]]] = []
        self.lagged_subs: list[Subscription] = []

    def offer(self, frame: bytes) -> bool:
        if not self.accept:
            return False
        payload = frame[2:] if frame[1] < 126 else frame[4:]  # a server frame's header
        self.got.append((trio.current_time(), json.loads(payload)))
        return True

    def lagged(self, subscription: Subscription) -> None:
        self.lagged_subs.append(subscription)


class StubDb:
    async def run(self, work: Callable[[Any], Any]) -> Any:
        await trio.lowlevel.checkpoint()
        return work(None)


def request(position: int, status: str = "pending_a1", op: str = "insert") -> Change:
    row = {"id": f"r{position}", "status": status, "department_id": DEPT, "amount": 10}
    return Change(position, "purchase_request_changed", "purchase_requests", op, row["id"],
                  row if op != "delete" else None, row if op == "delete" else None, None, T0)


class Loads:
    """The loader: each call returns the next prepared state (default: empty at 0)."""

    def __init__(self) -> None:
        self.calls = 0
        self.next: list[AggregateState] = []

    def __call__(self, conn: Any, today: Any) -> AggregateState:
        self.calls += 1
        return self.next.pop(0) if self.next else AggregateState()


def make(loads: Loads, clock: Callable[[], datetime] = lambda: T0) -> AggregatesActor:
    db: Any = StubDb()
    db_typed: Database = db
    return AggregatesActor(db_typed, interval=0.25, clock=clock, load=loads,
                           registry=Registry())


def plan(**filters: Any) -> DashboardPlan:
    return dashboard_plan(ADMIN, filters or None)


async def test_updates_come_at_most_once_per_interval(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    actor = make(Loads())
    await nursery.start(actor.run)
    sink = Sink()
    assert await actor.request_subscription(sink, plan(aggregates="requestsByStatus"), None)
    assert sink.got[0][1]["event"] == "dashboard_snapshot"
    await trio.sleep(1)
    first_sent = trio.current_time()
    for position in range(1, 41):  # 40 changes over 0.4 s
        await actor.ref.send([request(position)])
        await trio.sleep(0.01)
    await trio.sleep(1)
    updates = [(t, m) for t, m in sink.got if m["event"] == "dashboard_update"]
    times = [t for t, _ in updates]
    assert all(b - a >= 0.25 - 1e-9 for a, b in zip(times, times[1:], strict=False)), times
    assert 2 <= len(updates) <= 3
    assert updates[0][0] - first_sent < 0.01  # the first one left at once
    last = updates[-1][1]
    assert last["offset"] == 40 and last["aggregates"] == {"requestsByStatus": {"pending_a1": 40}}
    # after a quiet spell, a change goes out at once
    await trio.sleep(5)
    sent_at = trio.current_time()
    await actor.ref.send([request(41, "approved")])
    await trio.sleep(0.01)
    assert sink.got[-1][0] - sent_at < 0.01
    assert sink.got[-1][1]["aggregates"] == {"requestsByStatus": {"pending_a1": 40,
                                                                  "approved": 1}}


async def test_a_gap_reloads_and_sends_snapshots(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    loads = Loads()
    actor = make(loads)
    await nursery.start(actor.run)
    sink = Sink()
    await actor.request_subscription(sink, plan(aggregates="requestsByStatus"), None)
    await actor.ref.send([request(1), request(2)])
    await trio.sleep(1)
    assert actor.position == 2 and loads.calls == 1
    reloaded = AggregateState(position=9, version=9, floor=9)
    reloaded.cells["requests"][("quoting", DEPT)] = [5, 500, 0, 9]
    loads.next.append(reloaded)
    await actor.ref.send([request(8), request(9), request(10)])  # 3..7 never came
    await trio.sleep(1)
    assert loads.calls == 2 and actor.position == 10
    last = sink.got[-1][1]
    assert last["event"] == "dashboard_snapshot" and last["offset"] == 10
    assert last["aggregates"] == {"requestsByStatus": {"quoting": 5, "pending_a1": 1}}


async def test_a_restart_reloads_and_sends_snapshots(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    loads = Loads()
    actor = make(loads)
    tree = Supervisor("t", [ChildSpec.of(actor)], SupervisorFlags(backoff_base=0))
    await nursery.start(tree.run)
    sink = Sink()
    await actor.request_subscription(sink, plan(aggregates="requestsByStatus"), None)
    await actor.ref.send([request(1)])
    await trio.sleep(1)
    broken = Change(2, "purchase_request_changed", "purchase_requests", "update", "r1", None,
                    None, {"status": "approved"}, T0)  # an update without its row: a crash
    await actor.ref.send([broken])
    await trio.sleep(1)
    assert loads.calls == 2 and actor.running
    last = sink.got[-1][1]
    assert last["event"] == "dashboard_snapshot" and last["aggregates"] == {
        "requestsByStatus": {}}  # the (stand-in) tables are empty
    tree.request_stop()


async def test_the_day_moving_on_moves_the_window(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    now = [T0]
    loads = Loads()
    loaded = AggregateState(approvals_from=(T0 - timedelta(days=29)).date().isoformat())
    oldest = (T0 - timedelta(days=29)).date().isoformat()
    loaded.cells["approvals"][(1, "approved", oldest)] = [2, 0, 0, 0]
    loaded.cells["approvals"][(1, "rejected", T0.date().isoformat())] = [1, 0, 0, 0]
    loads.next.append(loaded)
    actor = make(loads, clock=lambda: now[0])
    await nursery.start(actor.run)
    sink = Sink()
    await actor.request_subscription(sink, plan(aggregates="approvalsPerDay"), None)
    assert sink.got[0][1]["aggregates"]["approvalsPerDay"] == {
        oldest: {"approved": 2}, T0.date().isoformat(): {"rejected": 1}}
    now[0] = T0 + timedelta(days=1)
    await actor.ref.send(Refresh())
    await trio.sleep(1)
    update = sink.got[-1][1]
    assert update["event"] == "dashboard_update"
    assert update["today"] == now[0].date().isoformat()
    assert update["aggregates"] == {"approvalsPerDay": {T0.date().isoformat(): {"rejected": 1}}}
    assert actor.state.approvals_from == (now[0] - timedelta(days=29)).date().isoformat()


async def test_a_sink_that_refuses_is_a_slow_consumer(
        autojump_clock: trio.testing.MockClock, nursery: trio.Nursery) -> None:
    actor = make(Loads())
    await nursery.start(actor.run)
    good, slow = Sink(), Sink()
    await actor.request_subscription(good, plan(), None)
    sub = await actor.request_subscription(slow, plan(), None)
    assert sub is not None and actor.subscribers == 2
    slow.accept = False
    await actor.ref.send([request(1)])
    await trio.sleep(1)
    assert slow.lagged_subs == [sub] and not sub.active and actor.subscribers == 1
    assert good.got[-1][1]["offset"] == 1
