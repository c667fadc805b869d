"""Deltas are exact: a snapshot plus the delta since its offset is the later snapshot, for
every caller's view, over random write histories (hypothesis); and pages stay stable while
writers run (no row missed or repeated, and the delta from the pages' offset closes the gap).
"""

from __future__ import annotations

import random
from typing import Any

import httpx
import psycopg
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.api.api_support import ADMIN, APPROVER, BUYER, REQUESTER, Api, apply_delta

PR = "/api/purchase-requests"
STATUSES = ("draft", "pending_a1", "pending_a2", "pending_a3", "approved", "rejected",
            "quoting", "ordered", "delivered", "cancelled")
SCOPES = (ADMIN, REQUESTER, APPROVER[1], APPROVER[3], BUYER)

write = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, 1), st.integers(0, 2), st.sampled_from(STATUSES)),
    st.tuples(st.just("status"), st.integers(0, 10**6), st.sampled_from(STATUSES)),
    st.tuples(st.just("department"), st.integers(0, 10**6), st.integers(0, 2)),
    st.tuples(st.just("title"), st.integers(0, 10**6), st.text("abcxyz ", min_size=1,
                                                               max_size=12)),
    st.tuples(st.just("delete"), st.integers(0, 10**6)),
)
COLUMN_OF = {"status": "status", "department": "department_id", "title": "title"}
# a history is a list of transactions, each a list of writes
histories = st.lists(st.lists(write, min_size=1, max_size=4), min_size=1, max_size=5)


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "1000000"}


def snapshot(client: httpx.Client, headers: dict[str, str], limit: int
             ) -> tuple[dict[str, Any], int]:
    rows: dict[str, Any] = {}
    cursor = None
    offset = -1
    while True:
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        response = client.get(PR, params=params, headers=headers)
        assert response.status_code == 200, response.text
        page = response.json()
        for row in page["data"]:
            assert row["id"] not in rows
            rows[row["id"]] = row
        offset = page["offset"]
        cursor = page["nextCursor"]
        if cursor is None:
            return rows, offset


def apply_history(conn: psycopg.Connection[Any], history: list[list[tuple[Any, ...]]],
                  people: list[str], departments: list[str]) -> None:
    for transaction in history:
        with conn.transaction():
            for op in transaction:
                ids = [r[0] for r in conn.execute(
                    "SELECT id::text FROM purchase_requests ORDER BY id").fetchall()]
                if op[0] == "insert":
                    conn.execute(
                        "INSERT INTO purchase_requests (title, requester_id, department_id, "
                        "amount, status) VALUES ('t', %s, %s, 10.5, %s)",
                        (people[op[1]], departments[op[2]], op[3]))
                    continue
                if not ids:
                    continue
                target = ids[op[1] % len(ids)]
                # No no-op updates: one would still move updated_at (the touch trigger)
                # while the capture logs nothing (an updated_at-only change is not news).
                if op[0] in COLUMN_OF:
                    column = COLUMN_OF[op[0]]
                    value = departments[op[2]] if op[0] == "department" else op[2]
                    conn.execute(f"UPDATE purchase_requests SET {column} = %s WHERE id = %s "
                                 f"AND {column}::text IS DISTINCT FROM %s", (value, target, value))
                else:
                    conn.execute("DELETE FROM purchase_requests WHERE id = %s", (target,))


async def test_delta_equals_difference_of_snapshots(api: Api) -> None:
    people = [api.users[REQUESTER]["id"], api.users["bruno@sinal.dev"]["id"]]
    departments = [r[0] for r in await api.sql("SELECT id::text FROM departments ORDER BY name")]
    headers = {who: api.auth(who) for who in SCOPES}
    url, database = api.node.http_url, api.node.database_url
    examples = []

    def run() -> None:
        with httpx.Client(base_url=url, timeout=20) as client, \
                psycopg.connect(database, autocommit=True) as conn:

            @settings(max_examples=25, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            @given(history=histories, limit=st.integers(1, 4))
            def delta_is_the_difference(history: list[list[tuple[Any, ...]]],
                                        limit: int) -> None:
                before = {who: snapshot(client, headers[who], limit) for who in SCOPES}
                apply_history(conn, history, people, departments)
                for who in SCOPES:
                    after, offset = snapshot(client, headers[who], limit)
                    rows, since = before[who]
                    response = client.get(PR, params={"since": since}, headers=headers[who])
                    delta = response.json()
                    assert response.status_code == 200 and delta["isDelta"], response.text
                    rebuilt = apply_delta(rows, delta["data"])
                    assert rebuilt == after, (who, [
                        (k, f, rebuilt[k][f], after[k][f]) for k in after if k in rebuilt
                        for f in after[k] if rebuilt[k][f] != after[k][f]])
                    # (notifications made meanwhile may move the head on)
                    assert delta["offset"] >= offset
                    assert len({r["id"] for r in delta["data"]}) == len(delta["data"])
                examples.append(len(history))

            delta_is_the_difference()

    await trio.to_thread.run_sync(run)
    assert len(examples) >= 10


async def test_pages_are_stable_while_writers_run(api: Api) -> None:
    requester = api.users[REQUESTER]
    insert = ("INSERT INTO purchase_requests (title, requester_id, department_id, amount, "
              "status) VALUES (%s, %s, %s, 1, 'draft') RETURNING id::text")
    who = (requester["id"], requester["department_id"])
    stable = {(await api.sql(insert, (f"stable {i}", *who)))[0][0] for i in range(40)}
    volatile = [(await api.sql(insert, (f"volatile {i}", *who)))[0][0] for i in range(20)]
    rng = random.Random(7)
    writes = 0
    wrote = trio.Condition()
    done = False

    async def writer() -> None:
        nonlocal writes
        while not done:
            kind = rng.choice(("insert", "update", "delete"))
            if kind == "insert" or not volatile:
                volatile.append((await api.sql(insert, ("new", *who)))[0][0])
            elif kind == "update":
                await api.sql("UPDATE purchase_requests SET title = title || '+', "
                              "status = 'pending_a1' WHERE id = %s", (rng.choice(volatile),))
            else:
                await api.sql("DELETE FROM purchase_requests WHERE id = %s",
                              (volatile.pop(rng.randrange(len(volatile))),))
            async with wrote:
                writes += 1
                wrote.notify_all()

    seen: dict[str, Any] = {}
    cursor = None
    pages = 0
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            nursery.start_soon(writer)
            while True:
                params: dict[str, Any] = {"limit": 5, **({"cursor": cursor} if cursor else {})}
                page = await api.ok("get", PR, params=params)
                pages += 1
                for row in page["data"]:
                    assert row["id"] not in seen, "a row came on two pages"
                    seen[row["id"]] = row
                cursor = page["nextCursor"]
                if cursor is None:
                    break
                async with wrote:  # let writers commit something before the next page
                    target = writes + 2
                    while writes < target:
                        await wrote.wait()
            done = True
    offset = page["offset"]
    assert pages >= 12 and writes >= 20
    assert stable <= set(seen), "a row that existed throughout was missed"
    delta = await api.ok("get", PR, params={"since": offset})
    final, _ = await api.all_rows(PR)
    assert apply_delta(seen, delta["data"]) == final


def test_filter_sql_agrees_with_the_python_filter(db_url: str,
                                                  users: dict[str, Any]) -> None:
    """Full lists filter in SQL, deltas in Python: the two agree on any row filter (several
    groups, clauses and values, NULL included), not only on today's permission filters."""
    from psycopg import sql

    from sinal.domain.access import RowFilter, _clause, filter_sql

    with psycopg.connect(db_url, autocommit=True) as conn:
        departments = [r[0] for r in conn.execute("SELECT id::text FROM departments")]
        people = [u["id"] for u in users.values()][:3]
        rng = random.Random(5)
        for index in range(30):
            conn.execute(
                "INSERT INTO purchase_requests (title, requester_id, department_id, amount, "
                "status, needed_by) VALUES (%s, %s, %s, 1, %s, %s)",
                (rng.choice("abc"), rng.choice(people), rng.choice(departments),
                 rng.choice(STATUSES[:4]), None if index % 3 else f"2030-01-0{index % 9 + 1}"))
        rows = [r[0] for r in conn.execute("SELECT to_jsonb(t) FROM purchase_requests t")]
        values = {"status": [*STATUSES[:4], None], "department_id": departments,
                  "requester_id": people, "title": ["a", "b", "zzz"],
                  "needed_by": [None, "2030-01-01", "2030-01-04"]}
        clause = st.dictionaries(st.sampled_from(sorted(values)), st.just(0), min_size=1,
                                 max_size=2).flatmap(lambda picked: st.fixed_dictionaries({
                                     name: st.lists(st.sampled_from(values[name]), min_size=1,
                                                    max_size=3) for name in picked}))
        filters = st.lists(st.lists(clause, min_size=1, max_size=3), max_size=3)

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(groups=filters)
        def agree(groups: list[list[dict[str, list[Any]]]]) -> None:
            row_filter = RowFilter(tuple(tuple(_clause(**c) for c in g) for g in groups))
            where, params = filter_sql(row_filter)
            found = {r[0] for r in conn.execute(
                sql.SQL("SELECT id::text FROM purchase_requests AS t WHERE {}").format(where),
                params)}
            assert found == {r["id"] for r in rows if row_filter.matches_row(r)}

        agree()
