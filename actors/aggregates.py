"""AggregatesActor: the workflow's live figures, kept from the change log, and the
`dashboard` topic that streams them.

An engine `Actor` registered as `aggregates`, fed by the listener like the notification
producer and the session guard (it is one of the listener's `changes_to`): every list of
changes the listener reads arrives in its inbox through `ActorRef.send`, so nothing is
ever dropped (a busy actor makes the listener wait; the log keeps everything). The rules
-- which rows count where, the SQL, the scoping -- are domain/aggregates.py and
domain/aggregate_sql.py; this module keeps the state and serves the subscribers.

STATE. `AggregateState` cells, exact at `position`: every change up to it applied, none
after. Loaded in full (`load_state`: GROUP BYs in one snapshot, exact at the head they
report) when a run starts -- so after a crash too -- and again when a list of changes
does not follow on from `position` (a gap: the listener started after the load). Every
change after that is applied incrementally, a few dictionary operations; changes at or
before `position` (read again by a restarted listener) are skipped.

INBOX. `list[Change]` from the listener; `DashboardJoin` from a connection (subscribe:
answered by offering the first frame at once, so it precedes every later update);
`DashboardLeave` from `AggregatesActor.leave`; `Refresh` (look at the clock now). The
flusher task, beside the message loop in the actor's own nursery, publishes.

PUBLISHING. At most once per `interval` (DASHBOARD_UPDATE_INTERVAL_MS, 250 ms), and only
when a family a group shows has moved (or the day changed, for the time-dependent
figures), each group of subscribers with equal plans (scope, figures, window) renders its
figures once. Its members are bucketed by what they last received (one shared dict); per
bucket the figures that differ are encoded once per wire encoding and the same bytes go
to every member through `Sink.offer`, like a topic's fan-out. An offer refused ends that
subscription as a slow consumer (`Sink.lagged`; the client gets `resync`
`slow_consumer` and resubscribes with `since`). A new run after a crash sends every
subscriber a snapshot.

RESUME. `since` as on every topic: after it, only the figures whose cells (among those
the subscriber may see) moved after `since` come, as one `dashboard_update`, plus the
time-dependent ones; nothing when nothing moved. A `since` before what the cells can
answer for (`AggregateState.floor`: the last load, or a pruned cell) or not reached yet
gets a `dashboard_snapshot`; one ahead of the database's head is `resync`
`offset_ahead` (the connection checks, `join_dashboard`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import psycopg
import trio

from sinal.actors.topic import Sink, Subscription
from sinal.domain.access import EVERYTHING
from sinal.domain.aggregate_sql import load_state
from sinal.domain.aggregates import (
    AGGREGATE_FAMILY,
    TIME_DEPENDENT,
    AggregateState,
    DashboardPlan,
    DashboardView,
    render,
    utc_now,
    utc_today,
    window_start,
)
from sinal.domain.catalogue import DASHBOARD_TOPIC
from sinal.domain.changes import Change, head_position
from sinal.domain.db import Database
from sinal.engine.actor import Actor
from sinal.engine.registry import Registry
from sinal.protocol import DashboardSnapshot, DashboardUpdate, Encoding, Resync, encode
from sinal.protocol.messages import ServerMessage
from sinal.websocket.frames import build_frame

log = logging.getLogger("sinal.aggregates")

AGGREGATES_NAME = "aggregates"
DEFAULT_INTERVAL = 0.25  # seconds: DASHBOARD_UPDATE_INTERVAL_MS
CLOCK_CHECK = 1.0  # seconds between looks at the clock when nothing else wakes the flusher
CATCH_UP_WAIT = 1.0  # seconds a resume waits for the figures to reach its `since`

Loader = Callable[[psycopg.Connection[Any], date], AggregateState]


@dataclass(slots=True, eq=False)
class DashboardSubscription(Subscription):
    """A `dashboard` subscriber, in the bucket of those that hold the same figures."""

    plan: DashboardPlan | None = None
    bucket: _Bucket | None = None


@dataclass(slots=True, eq=False)
class _Bucket:
    """Subscribers of one group that hold the same figures (`sent`; None: a snapshot is
    due), by wire encoding: one frame per encoding serves them all."""

    sent: dict[str, Any] | None
    members: dict[Encoding, dict[DashboardSubscription, None]] = field(default_factory=dict)

    def add(self, sub: DashboardSubscription) -> None:
        self.members.setdefault(sub.sink.encoding, {})[sub] = None
        sub.bucket = self


@dataclass(slots=True, eq=False)
class DashboardJoin:
    sink: Sink
    plan: DashboardPlan
    since: int | None
    done: trio.Event = field(default_factory=trio.Event)
    result: DashboardSubscription | None = None


@dataclass(frozen=True, slots=True)
class DashboardLeave:
    subscription: DashboardSubscription


@dataclass(frozen=True, slots=True)
class Refresh:
    """Look at the clock now (the flusher also looks every CLOCK_CHECK seconds)."""


AggregatesMessage = list[Change] | DashboardJoin | DashboardLeave | Refresh


@dataclass(slots=True, eq=False)
class _Group:
    """The subscribers of one plan. `figures`: the plan's figures as last rendered (a
    flush re-renders only those of the families that moved)."""

    plan: DashboardPlan
    buckets: list[_Bucket] = field(default_factory=list)
    size: int = 0
    figures: dict[str, Any] | None = None
    time_dependent: bool = False


def _frame(message: ServerMessage, encoding: Encoding) -> bytes:
    return build_frame(encode(message, encoding), text=not encoding.binary)


class AggregatesActor(Actor[AggregatesMessage]):
    kind = "aggregates"

    def __init__(self, db: Database, *, interval: float = DEFAULT_INTERVAL,
                 clock: Callable[[], datetime] = utc_now, load: Loader = load_state,
                 registry: Registry | None = None, inbox_size: int = 256) -> None:
        super().__init__(AGGREGATES_NAME, capacity=inbox_size, registry=registry)
        self.db = db
        self.interval = interval
        self.clock = clock
        self.load = load
        self.state = AggregateState()
        self.loaded = False
        self.groups: dict[tuple[str, tuple[str, ...], str], _Group] = {}
        self.subscribers = 0
        self.recomputes = 0
        self.changes_applied = 0
        self.flushes = 0
        self.frames_out = 0
        self.lagged_total = 0
        self._today = utc_today(clock)
        self._rolled = False  # the day changed since the last flush
        self._snapshots_due = False
        self._last_flush = -math.inf
        self._wake = trio.Event()
        self._position_lot = trio.lowlevel.ParkingLot()

    # --- what REST reads (domain.aggregates.DashboardSource) ----------------------------------

    @property
    def position(self) -> int:
        return self.state.position

    def version(self) -> str:
        return f"{self.state.version}:{self._today.isoformat()}"

    def today(self) -> date:
        return self._today

    def view(self, plan: DashboardPlan) -> DashboardView:
        return DashboardView(self.state.position, self._today,
                             render(self.state, plan, self._today))

    async def wait_position(self, position: int) -> None:
        while self.state.position < position:
            await self._position_lot.park()

    # --- the actor ---------------------------------------------------------------------------

    async def on_start(self) -> None:
        await self.recompute()

    async def main(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher)
            await super().main()
            nursery.cancel_scope.cancel()

    async def handle(self, message: AggregatesMessage) -> None:
        if isinstance(message, list):
            await self.apply_changes(message)
        elif isinstance(message, DashboardJoin):
            try:
                message.result = self.join(message.sink, message.plan, message.since)
            finally:
                message.done.set()
        elif isinstance(message, DashboardLeave):
            self._drop(message.subscription)
        else:
            if self._check_clock():
                await self.recompute()
            self._wake.set()

    async def recompute(self) -> None:
        """Load every cell afresh (exact at the head it reports); subscribers get
        snapshots."""
        today = utc_today(self.clock)
        self.state = await self.db.run(lambda conn: self.load(conn, today))
        self._today = today
        self.loaded = True
        self.recomputes += 1
        for group in self.groups.values():
            group.figures = None
            for bucket in group.buckets:
                bucket.sent = None
        self._snapshots_due = bool(self.groups)
        self._wake.set()
        self._position_lot.unpark_all()
        log.info("aggregates loaded at position %d (%d cells)", self.state.position,
                 self.state.size())

    async def apply_changes(self, changes: list[Change]) -> None:
        if not changes or changes[-1].position <= self.state.position:
            return
        fresh = [c for c in changes if c.position > self.state.position]
        if fresh[0].position > self.state.position + 1:
            # changes between our position and this list never reached us: load afresh
            log.info("aggregates: gap after %d (next change %d): recomputing",
                     self.state.position, fresh[0].position)
            await self.recompute()
            fresh = [c for c in fresh if c.position > self.state.position]
        self.apply_now(fresh)

    def apply_now(self, changes: list[Change]) -> None:
        """Apply changes that follow on from `position` (synchronous: no checkpoint)."""
        state = self.state
        moved = False
        for change in changes:
            if change.position <= state.position:
                continue
            if state.apply(change.table, change.op, change.new_row, change.old_row,
                           change.changed, change.position):
                moved = True
            state.position = change.position
        self.changes_applied += len(changes)
        if moved:
            self._wake.set()
        self._position_lot.unpark_all()

    # --- subscriptions (synchronous) ------------------------------------------------------

    async def request_subscription(self, sink: Sink, plan: DashboardPlan, since: int | None
                                   ) -> DashboardSubscription | None:
        """Ask through the inbox (for connections); None if the actor failed meanwhile."""
        request = DashboardJoin(sink, plan, since)
        await self.ref.send(request)
        await request.done.wait()
        return request.result

    def leave(self, sub: Subscription) -> None:
        """Called by the subscriber: stop at once, drop it soon."""
        if sub.active and isinstance(sub, DashboardSubscription):
            sub.active = False
            if not self.ref.try_send(DashboardLeave(sub)):
                self._drop(sub)

    def join(self, sink: Sink, plan: DashboardPlan, since: int | None) -> DashboardSubscription:
        """Offer the first frame now (a snapshot, or what changed after `since`) and join
        the plan's group."""
        state, today = self.state, self._today
        figures = render(state, plan, today)
        message: ServerMessage | None
        if since is None or since < state.floor or since > state.position:
            message = DashboardSnapshot(state.position, today.isoformat(), plan.window, figures)
        else:
            moved = [name for name in plan.names if name in TIME_DEPENDENT
                     or state.changed_since(AGGREGATE_FAMILY[name],
                                            plan.scope.filters[AGGREGATE_FAMILY[name]], since)]
            message = (DashboardUpdate(state.position, today.isoformat(),
                                       {name: figures[name] for name in moved})
                       if moved else None)
        sub = DashboardSubscription(sink, DASHBOARD_TOPIC, EVERYTHING,
                                    last_position=state.position, plan=plan)
        if message is not None and not sink.offer(_frame(message, sink.encoding)):
            sub.active = False
            self.lagged_total += 1
            sink.lagged(sub)
            return sub
        if message is not None:
            self.frames_out += 1
        group = self.groups.get(plan.key)
        if group is None:
            group = self.groups[plan.key] = _Group(
                plan, time_dependent=not TIME_DEPENDENT.isdisjoint(plan.names))
        bucket = _Bucket(figures)
        bucket.add(sub)
        group.buckets.append(bucket)
        group.size += 1
        self.subscribers += 1
        return sub

    def _drop(self, sub: DashboardSubscription) -> None:
        sub.active = False
        bucket, sub.bucket = sub.bucket, None
        assert sub.plan is not None
        group = self.groups.get(sub.plan.key)
        if bucket is None or group is None:
            return
        members = bucket.members.get(sub.sink.encoding)
        if members is None or sub not in members:
            return
        del members[sub]
        group.size -= 1
        self.subscribers -= 1
        if not group.size:
            del self.groups[sub.plan.key]

    def _drop_dropped(self, sub: DashboardSubscription) -> None:
        """A subscriber a flush left out of the new bucket: count it out."""
        sub.active = False
        assert sub.plan is not None
        group = self.groups.get(sub.plan.key)
        if group is not None:
            group.size -= 1
            self.subscribers -= 1
            if not group.size:
                del self.groups[sub.plan.key]

    # --- publishing ------------------------------------------------------------------------

    async def _flusher(self) -> None:
        while True:
            with trio.move_on_after(CLOCK_CHECK):
                await self._wake.wait()
            self._wake = trio.Event()
            if self._check_clock():
                self.ref.try_send(Refresh())  # the message loop reloads (it owns awaits)
                continue
            if not (self.state.dirty or self._rolled or self._snapshots_due):
                continue
            wait = self._last_flush + self.interval - trio.current_time()
            if wait > 0:
                await trio.sleep(wait)
            self.flush()

    def _check_clock(self) -> bool:
        """Follow the clock's day; True when the cells cannot serve it (it went back)."""
        today = utc_today(self.clock)
        if today == self._today:
            return False
        if window_start(today).isoformat() < self.state.approvals_from:
            return True
        self._today = today
        self._rolled = True
        self.state.prune(today)
        return False

    def flush(self) -> int:
        """Publish what moved to every group (synchronous: no checkpoint inside).
        Returns the frames offered."""
        self._last_flush = trio.current_time()
        dirty = self.state.take_dirty()
        rolled, self._rolled = self._rolled, False
        snapshots, self._snapshots_due = self._snapshots_due, False
        self.flushes += 1
        offered = 0
        dropped: list[DashboardSubscription] = []
        for group in self.groups.values():
            if not (snapshots or (rolled and group.time_dependent)
                    or not group.plan.families.isdisjoint(dirty)):
                continue
            offered += self._publish(group, dirty, rolled, dropped)
        for sub in dropped:
            sub.bucket = None  # not in the group's buckets any more
            self._drop_dropped(sub)
            self.lagged_total += 1
            sub.sink.lagged(sub)
        self.frames_out += offered
        return offered

    def _publish(self, group: _Group, dirty: set[str], rolled: bool,
                 dropped: list[DashboardSubscription]) -> int:
        state, plan, position = self.state, group.plan, self.state.position
        today = self._today.isoformat()
        if group.figures is None:
            figures = render(state, plan, self._today)
        else:  # only the figures of what moved are rendered again
            again = [name for name in plan.names if AGGREGATE_FAMILY[name] in dirty
                     or rolled and name in TIME_DEPENDENT]
            figures = {**group.figures, **render(state, plan, self._today, again)}
        group.figures = figures
        current = _Bucket(figures)
        offered = 0
        for bucket in group.buckets:
            sent = bucket.sent
            message: ServerMessage
            if sent is None:
                message = DashboardSnapshot(position, today, plan.window, figures)
            else:
                moved = {name: value for name, value in figures.items()
                         if value is not sent.get(name) and value != sent.get(name)}
                if not moved:  # the same figures: one bucket from now on
                    for members in bucket.members.values():
                        for sub in members:
                            if sub.active:
                                current.add(sub)
                    continue
                message = DashboardUpdate(position, today, moved)
            for encoding, members in bucket.members.items():
                frame = _frame(message, encoding)
                keep = current.members.setdefault(encoding, {})
                for sub in members:
                    if not sub.active:
                        continue  # left; its DashboardLeave is on the way
                    if sub.sink.offer(frame):
                        keep[sub] = None
                        sub.bucket = current
                        sub.last_position = position
                        offered += 1
                    else:
                        dropped.append(sub)
        group.buckets = [current]
        return offered

    def describe(self) -> dict[str, Any]:
        return {"position": self.state.position, "version": self.version(),
                "cells": self.state.size(), "subscribers": self.subscribers,
                "groups": len(self.groups), "recomputes": self.recomputes,
                "changesApplied": self.changes_applied, "flushes": self.flushes,
                "framesOut": self.frames_out, "lagged": self.lagged_total,
                "inbox": self.ref.depth}


async def join_dashboard(dashboard: AggregatesActor, sink: Sink, plan: DashboardPlan,
                         since: int | None, db: Database) -> DashboardSubscription | Resync:
    """A connection's subscribe to `dashboard`: `since` ahead of the database is
    `resync offset_ahead`; ahead of the figures only, it waits (a moment) for them."""
    if since is not None and since > dashboard.position:
        head = await db.run(head_position)
        if since > head:
            return Resync(topic=DASHBOARD_TOPIC, offset=dashboard.position,
                          reason="offset_ahead")
        with trio.move_on_after(CATCH_UP_WAIT):
            await dashboard.wait_position(since)
    sub = await dashboard.request_subscription(sink, plan, since)
    if sub is None:
        return Resync(topic=DASHBOARD_TOPIC, offset=dashboard.position,
                      reason="catch_up_timeout")
    return sub
