"""One representation, one ETag, over random write histories (hypothesis).

Writers (the workflow's own functions and plain SQL, as psql or another app would write)
create and change purchase requests of several departments, and touch another topic.
Readers of every permission scope hold the list, some the delta too. After each write, at
once (racing the node's listener):

- newcomers, who hold no ETag, read (a 200 that must show the database's rows for their
  scope) and send the answer's ETag straight back: nothing was written in between, so it
  must be a 304. This is the defect the file was written for: an ETag made from the
  topic's version before the read, while the read (which runs the sequencer first)
  already showed a change the listener had not published, was refused the next moment,
  once the listener published it -- same body, same offset, another ETag;
- pollers send the ETag they hold: a 304 when nothing was written (a 304 is also right
  while the node has not published the write), else a 200 revalidated the same way.

Then, once the node has published the write, every poller whose data the write changed
must get a 200 with the new data.

One node serves every example; the examples run in a worker thread (sync clients), as in
tests/api/test_api_delta.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import psycopg
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from sinal.domain import workflow
from sinal.domain.principals import Principal
from tests.api.api_support import ADMIN, APPROVER, BUYER, OTHER_REQUESTER, REQUESTER, Api

PR = "/api/purchase-requests"
FIELDS = "title,status"
STATUSES = ("draft", "pending_a1", "approved", "quoting", "rejected")
READERS = (ADMIN, REQUESTER, OTHER_REQUESTER, APPROVER[1], BUYER)
# (who, delta): every scope reads the list; three of them poll the delta as well
KEYS = [(who, False) for who in READERS] + [(who, True) for who in (ADMIN, REQUESTER, BUYER)]

write = st.one_of(
    # (kind, requester 0..1, department 0..2, submit): the workflow's create_request
    st.tuples(st.just("create"), st.integers(0, 1), st.integers(0, 2), st.booleans()),
    # (kind, row, status): plain SQL
    st.tuples(st.just("status"), st.integers(0, 10**6), st.sampled_from(STATUSES)),
    st.tuples(st.just("title"), st.integers(0, 10**6), st.sampled_from("abcdef")),
    st.tuples(st.just("department"), st.integers(0, 10**6), st.integers(0, 2)),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
    st.just(("supplier",)),  # another topic: nothing this list shows
    st.just(("nothing",)),
)
histories = st.lists(write, min_size=1, max_size=5)


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000"}


@dataclass
class Held:
    """What a reader holds: rows by id, the offset to poll from, the ETag to send."""

    rows: dict[str, dict[str, Any]] = field(default_factory=dict)
    offset: int = 0
    etag: str | None = None


def visible(user: dict[str, Any], row: dict[str, Any]) -> bool:
    """The permission rules of domain/access.py, written out again."""
    role = user["role"]
    if role == "admin":
        return True
    if role == "requester":
        return row["requester_id"] == user["id"] or row["department_id"] == user["department_id"]
    if role.startswith("approver_a"):
        return bool(row["status"] == f"pending_{role[-2:]}")
    return row["status"] in ("approved", "quoting", "ordered", "delivered")


class Readers:
    def __init__(self, client: httpx.Client, conn: psycopg.Connection[Any],
                 users: dict[str, dict[str, Any]], api: Api) -> None:
        self.client = client
        self.conn = conn
        self.users = users
        self.headers = {who: api.auth(who) for who in READERS}
        self.answers = {"200": 0, "304": 0}

    def truth(self, who: str) -> dict[str, dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT id::text, title, status, requester_id::text, department_id::text "
            "FROM purchase_requests").fetchall()
        return {r["id"]: {"id": r["id"], "title": r["title"], "status": r["status"]}
                for r in rows if visible(self.users[who], r)}

    def poll(self, who: str, delta: bool, held: Held) -> tuple[int, Held]:
        params: dict[str, Any] = {"fields": FIELDS}
        if delta:
            params["since"] = held.offset
        headers = dict(self.headers[who])
        if held.etag is not None:
            headers["If-None-Match"] = held.etag
        response = self.client.get(PR, params=params, headers=headers)
        self.answers[str(response.status_code)] = \
            self.answers.get(str(response.status_code), 0) + 1
        if response.status_code == 304:
            assert response.headers["ETag"] == held.etag
            return 304, held
        assert response.status_code == 200, response.text
        body = response.json()
        etag = response.headers.get("ETag")
        assert etag is not None and body["etag"] == etag[3:-1], (who, delta, body)
        if delta:
            rows = dict(held.rows)
            for entry in body["data"]:
                row = {k: v for k, v in entry.items() if k != "_operation"}
                if entry["_operation"] == "delete":
                    rows.pop(row["id"], None)
                else:
                    rows[row["id"]] = row
        else:
            assert body["nextCursor"] is None
            rows = {row["id"]: row for row in body["data"]}
        return 200, Held(rows, body["offset"], etag)

    def read_and_revalidate(self, who: str, delta: bool, held: Held) -> Held:
        """A poll; a 200 must show the database's rows, and its ETag sent straight back
        (nothing was written in between) must get a 304. (A 304 right after a write only
        says the node has not published it yet: the next poll may well be a 200.)"""
        status, fresh = self.poll(who, delta, held)
        if status == 304:
            return held
        assert fresh.rows == self.truth(who), (who, delta, "a 200 shows every commit")
        again, same = self.poll(who, delta, fresh)
        assert again == 304, (who, delta, "the same representation got a new ETag",
                              fresh.offset, fresh.etag, same.offset, same.etag)
        return fresh


def perform(conn: psycopg.Connection[Any], op: tuple[Any, ...], people: list[Principal],
            departments: list[str]) -> bool:
    """Apply one write; True when it may have changed a purchase request."""
    kind = op[0]
    if kind == "nothing":
        return False
    if kind == "supplier":
        conn.execute("UPDATE suppliers SET name = name || '.' WHERE id = "
                     "(SELECT id FROM suppliers ORDER BY id LIMIT 1)")
        return False
    if kind == "create":
        who = people[op[1]]
        made = workflow.create_request(conn, who, title=f"r{op[2]}", amount=10,
                                       submit=op[3])
        if departments[op[2]] != who.department_id:  # moved, as an admin may
            conn.execute("UPDATE purchase_requests SET department_id = %s WHERE id = %s",
                         (departments[op[2]], made["id"]))
        return True
    ids = [r["id"] for r in conn.execute(
        "SELECT id::text AS id FROM purchase_requests ORDER BY id").fetchall()]
    if not ids:
        return False
    target = ids[op[1] % len(ids)]
    if kind == "delete":
        conn.execute("DELETE FROM purchase_requests WHERE id = %s", (target,))
        return True
    column, value = (("department_id", departments[op[2]]) if kind == "department"
                     else (kind, op[2]))
    # only real changes: an update of nothing but updated_at is not logged (not news)
    conn.execute(f"UPDATE purchase_requests SET {column} = %s WHERE id = %s "
                 f"AND {column}::text IS DISTINCT FROM %s", (value, target, value))
    return True


async def test_the_same_answer_always_carries_the_same_etag(api: Api) -> None:
    users = api.users
    people = [Principal(users[w]["id"], "requester", users[w]["department_id"])
              for w in (REQUESTER, OTHER_REQUESTER)]
    departments = [r[0] for r in await api.sql("SELECT id::text FROM departments ORDER BY name")]
    url, database = api.node.http_url, api.node.database_url
    examples: list[int] = []
    totals = {"200": 0, "304": 0}

    def run() -> None:
        with httpx.Client(base_url=url, timeout=20) as client, \
                psycopg.connect(database, autocommit=True, row_factory=dict_row) as conn:
            readers = Readers(client, conn, users, api)

            @settings(max_examples=8, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(history=histories)
            def one_etag_per_representation(history: list[tuple[Any, ...]]) -> None:
                held = {key: Held() for key in KEYS}
                for who, delta in KEYS:  # a delta poller starts from a list and its offset
                    if delta:
                        start = readers.poll(who, False, Held())[1]
                        held[(who, True)] = Held(start.rows, start.offset)
                for key, start in held.items():
                    held[key] = readers.read_and_revalidate(*key, start)
                for op in history:
                    wrote = perform(conn, op, people, departments)
                    # at once, racing the listener: first newcomers, who hold no ETag yet
                    # (deltas first: a `since` never asked for has no cached body, so it
                    # is read at once), then the pollers with their ETags
                    for key in sorted(held, key=lambda k: not k[1]):
                        newcomer = replace(held[key], etag=None)
                        assert readers.read_and_revalidate(*key, newcomer) is not newcomer
                    for key in held:
                        before = held[key]
                        held[key] = readers.read_and_revalidate(*key, before)
                        if not wrote:
                            assert held[key] is before, (key, op, "nothing was written")
                    # once published, whoever can see the write gets it
                    trio.from_thread.run(api.settle)
                    for key in held:
                        before = held[key]
                        held[key] = readers.read_and_revalidate(*key, before)
                        if before.rows != readers.truth(key[0]):
                            assert held[key] is not before, (key, op, "a visible write")
                examples.append(len(history))

            one_etag_per_representation()
            totals.update(readers.answers)

    await trio.to_thread.run_sync(run)
    assert len(examples) >= 8
    assert totals["304"] > totals["200"] > 0
