"""Route by key: a change is evaluated only against the subscription groups whose filters
pin one of its keys (domain/routing.py), so its cost does not grow with the users connected.

Pure: a Topic with in-memory sinks, no sockets, no database. Filter evaluations are counted
by wrapping `RowFilter.matches` itself, whoever calls it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinal.actors.topic import Joined, Subscription, Topic, TopicBatch
from sinal.domain.access import EVERYTHING, RowFilter, _clause, permission_filter
from sinal.domain.changes import Change
from sinal.domain.principals import Principal
from sinal.domain.routing import FilterIndex, routing_keys
from sinal.engine.registry import Registry
from sinal.protocol import Encoding

USERS = 10_000
DEPARTMENTS = 100
NOW = datetime(2026, 11, 30, tzinfo=UTC)


@dataclass(eq=False)
class Sink:
    encoding: Encoding = Encoding.MSGPACK
    frames: list[bytes] = field(default_factory=list)

    def offer(self, data: bytes) -> bool:
        self.frames.append(data)
        return True

    def lagged(self, subscription: Subscription) -> None:
        raise AssertionError("nobody is slow here")


def render(change: Change, encoding: Encoding) -> bytes:
    return f"{change.position};".encode()


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """How many times any filter was evaluated against a change."""
    count = [0]
    original = RowFilter.matches

    def counted(self: RowFilter, new_row: Any, old_row: Any, op: str) -> bool:
        count[0] += 1
        return original(self, new_row, old_row, op)

    monkeypatch.setattr(RowFilter, "matches", counted)
    return lambda: count[0]


def topic_with(name: str, members: list[tuple[Principal, Sink]]) -> Topic:
    topic = Topic(name, head=0, render=render, registry=Registry())
    for principal, sink in members:
        joined = topic.subscribe(sink, permission_filter(principal, name), None)
        assert isinstance(joined, Joined)
    return topic


def change(position: int, topic: str, op: str, new_row: dict[str, Any] | None,
           old_row: dict[str, Any] | None = None) -> Change:
    row = new_row if new_row is not None else old_row
    assert row is not None
    return Change(position, topic, "t", op, str(row["id"]), new_row, old_row,
                  (dict.fromkeys(old_row) if op == "update" and old_row else None), NOW)


def people(count: int, role: str = "requester") -> list[Principal]:
    return [Principal(str(uuid.uuid4()), role, f"dept-{i % DEPARTMENTS}")
            for i in range(count)]


def test_a_notification_is_evaluated_once_however_many_users_are_connected(
        evaluations: Callable[[], int]) -> None:
    users = people(USERS)
    sinks = {p.user_id: Sink() for p in users}
    topic = topic_with("notifications", [(p, sinks[p.user_id]) for p in users])
    assert len(topic.groups) == USERS  # every user is a group of their own
    assert topic.index.unkeyed == 0
    targets = users[::USERS // 100][:100]
    batch = tuple(change(i + 1, "notifications", "insert",
                         {"id": i + 1, "user_id": p.user_id, "push": True})
                  for i, p in enumerate(targets))
    before = evaluations()
    topic.publish(TopicBatch(batch, 0, len(batch)))
    assert evaluations() - before == 100  # one per notification, not 100 x 10,000
    assert topic.index.evaluations == 100
    for i, p in enumerate(targets):
        assert sinks[p.user_id].frames == [f"{i + 1};".encode()]
    assert sum(len(s.frames) for s in sinks.values()) == 100
    # one at a time (a quiet system: a batch per notification) costs the same per change
    for k, p in enumerate(targets[:10]):
        topic.publish(TopicBatch((change(101 + k, "notifications", "insert",
                                         {"id": 101 + k, "user_id": p.user_id,
                                          "push": False}),), 100 + k, 101 + k))
    assert evaluations() - before == 110  # evaluated, and refused: push is false
    assert sum(len(s.frames) for s in sinks.values()) == 100


def test_a_purchase_request_is_evaluated_only_against_the_groups_that_can_see_it(
        evaluations: Callable[[], int]) -> None:
    requesters = people(USERS)
    staff = [Principal(str(uuid.uuid4()), role, None)
             for role in ("approver_a1", "approver_a2", "approver_a3", "buyer", "admin")
             for _ in range(3)]
    sinks = {p.user_id: Sink() for p in requesters + staff}
    topic = topic_with("purchase_request_changed",
                       [(p, sinks[p.user_id]) for p in requesters + staff])
    # one group per requester, one per staff role; the admins' filter pins nothing
    assert len(topic.groups) == USERS + 5 and topic.index.unkeyed == 1
    author = requesters[7]
    row = {"id": "r1", "requester_id": author.user_id, "department_id": author.department_id,
           "status": "pending_a1"}
    before = evaluations()
    topic.publish(TopicBatch((change(1, "purchase_request_changed", "insert", row),), 0, 1))
    same_department = [p for p in requesters if p.department_id == author.department_id]
    # candidates: the department's requesters, the level-1 approvers, the admins: all match
    assert evaluations() - before == len(same_department) + 2
    receivers = {uid for uid, s in sinks.items() if s.frames}
    assert receivers == ({p.user_id for p in same_department}
                         | {p.user_id for p in staff if p.role in ("approver_a1", "admin")})
    # an update that moves it on: the old row still reaches the level-1 approvers
    before = evaluations()
    topic.publish(TopicBatch((change(2, "purchase_request_changed", "update",
                                     {**row, "status": "pending_a2"},
                                     {"status": "pending_a1"}),), 1, 2))
    assert evaluations() - before == len(same_department) + 3
    for p in staff:
        expected = {"approver_a1": 2, "approver_a2": 1, "admin": 2}.get(p.role, 0)
        assert len(sinks[p.user_id].frames) == expected, p.role


def test_leaving_drops_the_key_and_the_index_empties() -> None:
    users = people(50)
    topic = topic_with("notifications", [(p, Sink()) for p in users])
    for group in list(topic.groups.values()):
        for sub in list(group):
            topic.unsubscribe(sub)
    assert not topic.groups and len(topic.index) == 0
    assert topic.index.candidates({"user_id": users[0].user_id}, None, "insert") == []


def test_routing_keys_pick_the_most_selective_cover() -> None:
    requester = Principal("u1", "requester", "d1")
    keys = routing_keys(permission_filter(requester, "purchase_request_changed"))
    assert keys == {("requester_id", "u1"), ("department_id", "d1")}
    narrowed = permission_filter(requester, "purchase_request_changed").and_also(
        RowFilter(((_clause(status="draft"),),)))
    assert routing_keys(narrowed) == keys  # ids before a status
    assert routing_keys(permission_filter(requester, "notifications")) == {("user_id", "u1")}
    assert routing_keys(EVERYTHING) is None
    assert routing_keys(RowFilter(((),))) == frozenset()  # matches nothing: never routed
    assert routing_keys(RowFilter(((_clause(level=1), ()),))) is None  # OR with "any row"


VALUES = {"user_id": ["u1", "u2", None], "department_id": ["d1", "d2"],
          "status": ["draft", "pending_a1", "approved", None], "level": [1, 2, 2.0, "1"],
          "push": [True, False, None]}
clauses = st.dictionaries(st.sampled_from(sorted(VALUES)), st.just(0), max_size=2).flatmap(
    lambda picked: st.fixed_dictionaries({
        name: st.lists(st.sampled_from(VALUES[name]), max_size=3) for name in picked}))
filters = st.lists(st.lists(clauses, max_size=3), max_size=3).map(
    lambda groups: RowFilter(tuple(tuple(_clause(**c) for c in g) for g in groups)))
rows = st.fixed_dictionaries({}, optional={name: st.sampled_from(values)
                                           for name, values in VALUES.items()})


@settings(max_examples=150, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(all_filters=st.lists(filters, min_size=1, max_size=8), new_row=rows, old_row=rows,
       op=st.sampled_from(["insert", "update", "delete"]))
def test_the_index_finds_exactly_what_evaluating_every_filter_finds(
        all_filters: list[RowFilter], new_row: dict[str, Any], old_row: dict[str, Any],
        op: str) -> None:
    index = FilterIndex()
    for row_filter in all_filters:
        index.add(row_filter)
    new = None if op == "delete" else new_row
    old = None if op == "insert" else old_row
    expected = {f for f in set(all_filters) if f.matches(new, old, op)}
    assert set(index.matching(new, old, op)) == expected
    for row_filter in all_filters:
        index.remove(row_filter)
    assert len(index) == 0 and index.candidates(new, old, op) == []
