"""REST reads: ETag/304 without a query, permissions, projection, gzip, deltas, resync."""

from __future__ import annotations

import gzip
from typing import Any

import httpx
import pytest

from sinal.api.app import wants_gzip
from tests.api.api_support import (
    ADMIN,
    APPROVER,
    BUYER,
    OTHER_REQUESTER,
    REQUESTER,
    Api,
    apply_delta,
)

PR = "/api/purchase-requests"


async def create(api: Api, who: str = REQUESTER, submit: bool = False, **body: Any) -> Any:
    body = {"title": "Notebooks", "amount": 1200, "submit": submit, **body}
    return await api.ok("post", PR, who, 201, json=body)


def is_problem(response: httpx.Response, status: int, code: str) -> bool:
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    assert body["code"] == code, body
    return True


async def test_304_path_makes_no_database_query(api: Api) -> None:
    await create(api, submit=True)
    await api.settle()
    first = await api.get(PR)
    assert first.status_code == 200
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and first.json()["etag"] == etag[3:-1]

    db = api.node.db
    assert db is not None
    # only what requests do counts: the node's actors (listener ticks, presence flushes)
    # query in the background whenever they like
    before = db.queries_by_scope["http"]
    for header in (etag, etag[2:], f'"nope", {etag}', etag.replace("W/", "w/")):
        again = await api.get(PR, headers={"If-None-Match": header})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["ETag"] == etag
    by_query = await api.get(PR, params={"etag": first.json()["etag"]})
    assert by_query.status_code == 304
    assert db.queries_by_scope["http"] == before, "a 304 must not touch the database"

    stale = await api.get(PR, headers={"If-None-Match": 'W/"0000"'})
    assert stale.status_code == 200 and db.queries_by_scope["http"] == before + 1, \
        db.queries_by_scope

    # a change to the topic changes the ETag
    await create(api)
    await api.settle()
    changed = await api.get(PR, headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["ETag"] != etag
    assert api.node.http_stats.hits_total == 5


async def test_etag_depends_on_scope_fields_and_page(api: Api) -> None:
    await create(api, submit=True)
    await api.settle()

    async def etag(who: str, **params: Any) -> str:
        response = await api.get(PR, who, params=params)
        assert response.status_code == 200
        return str(response.headers["ETag"])

    assert await etag(REQUESTER) == await etag(REQUESTER)
    assert await etag(REQUESTER) != await etag(OTHER_REQUESTER)
    assert await etag(APPROVER[1]) != await etag(APPROVER[2])
    assert await etag(ADMIN) != await etag(ADMIN, fields="status")
    assert await etag(ADMIN) != await etag(ADMIN, limit=5)
    assert await etag(ADMIN) != await etag(ADMIN, since=0)
    # a change in another topic does not invalidate this one
    before = await etag(ADMIN)
    await api.sql("UPDATE suppliers SET name = name || '!'")
    await api.settle()
    assert await etag(ADMIN) == before


async def test_reads_show_what_subscriptions_show(api: Api) -> None:
    mine = await create(api, REQUESTER, submit=True)
    theirs = await create(api, OTHER_REQUESTER)

    async def ids(who: str, path: str = PR) -> set[str]:
        rows, _ = await api.all_rows(path, who)
        return set(rows)

    assert await ids(REQUESTER) == {mine["id"]}
    assert await ids(OTHER_REQUESTER) == {theirs["id"]}
    assert await ids(APPROVER[1]) == {mine["id"]}
    assert await ids(APPROVER[2]) == set()
    assert await ids(BUYER) == set()
    assert await ids(ADMIN) == {mine["id"], theirs["id"]}
    assert is_problem(await api.get("/api/quotations", REQUESTER), 403, "forbidden")
    assert is_problem(await api.get("/api/approvals", BUYER), 403, "forbidden")
    assert await ids(APPROVER[1], "/api/approvals") == set()

    one = await api.get(f"{PR}/{mine['id']}", APPROVER[1], params={"fields": "status"})
    assert one.json() == {"id": mine["id"], "status": "pending_a1"}
    assert is_problem(await api.get(f"{PR}/{theirs['id']}", REQUESTER), 404, "not_found")
    assert is_problem(await api.get(f"{PR}/not-a-uuid"), 404, "not_found")


async def test_fields_projection(api: Api) -> None:
    made = await create(api, submit=True)
    page = await api.ok("get", PR, params={"fields": "status, title"})
    assert page["data"] == [{"id": made["id"], "title": "Notebooks", "status": "pending_a1"}]
    full = await api.ok("get", PR)
    assert list(full["data"][0]) == list(api_fields())
    delta = await api.ok("get", PR, params={"fields": "amount", "since": 0})
    assert delta["data"] == [{"id": made["id"], "amount": 1200.0, "_operation": "insert"}]
    bad = await api.get(PR, params={"fields": "status,password"})
    assert is_problem(bad, 400, "unknown_field") and "password" in bad.json()["detail"]
    assert is_problem(await api.get(PR, params={"fields": ","}), 400, "invalid_parameter")


def api_fields() -> tuple[str, ...]:
    from sinal.domain.catalogue import RESOURCES

    return RESOURCES["purchase-requests"].columns


async def test_resource_fields_match_the_database(api: Api) -> None:
    from sinal.domain.catalogue import RESOURCES

    for resource in RESOURCES.values():
        rows = await api.sql("SELECT column_name FROM information_schema.columns "
                             "WHERE table_name = %s ORDER BY ordinal_position",
                             (resource.table,))
        assert tuple(r[0] for r in rows) == resource.columns


async def test_gzip_exactly_when_it_should(api: Api) -> None:
    for index in range(12):
        await create(api, title=f"Item {index} " + "x" * 60)
    big = {"Accept-Encoding": "gzip"}

    response = await api.get(PR, headers=big)
    assert response.headers["content-encoding"] == "gzip"
    assert "Accept-Encoding" in response.headers["vary"]
    assert len(response.json()["data"]) == 12  # httpx decoded it

    plain = await api.get(PR, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and len(plain.content) > 1024
    refused = await api.get(PR, headers={"Accept-Encoding": "gzip;q=0"})
    assert "content-encoding" not in refused.headers

    small = await api.get(PR, headers=big, params={"limit": 1, "fields": "status"})
    assert "content-encoding" not in small.headers and len(small.content) <= 1024
    forced = await api.get(PR, headers={"Accept-Encoding": "identity"},
                           params={"limit": 1, "fields": "status", "compress": "true"})
    assert forced.headers["content-encoding"] == "gzip"
    never = await api.get(PR, headers=big, params={"compress": "false"})
    assert "content-encoding" not in never.headers
    assert is_problem(await api.get(PR, params={"compress": "maybe"}), 400,
                      "invalid_parameter")

    # the bytes on the wire really are gzip
    async with api.client.stream("GET", PR, headers={**api.auth(ADMIN), **big}) as stream:
        wire = b"".join([chunk async for chunk in stream.aiter_raw()])
    assert gzip.decompress(wire).startswith(b'{"data":[')


def test_gzip_rules() -> None:
    assert wants_gzip(True, None, "gzip, deflate", 1025)
    assert not wants_gzip(True, None, "gzip, deflate", 1024)
    assert not wants_gzip(True, None, "deflate", 5000)
    assert wants_gzip(True, None, "*", 5000)
    assert not wants_gzip(False, "true", "gzip", 5000), "ENABLE_COMPRESSION=false wins"
    assert wants_gzip(True, "true", None, 10)
    assert not wants_gzip(True, "false", "gzip", 5000)


async def test_delta_folds_changes_and_reports_leaving_rows(api: Api) -> None:
    made = await create(api, submit=True)
    start = (await api.ok("get", PR, APPROVER[1]))["offset"]
    await api.ok("post", f"{PR}/{made['id']}/approve", APPROVER[1], json={"comment": "ok"})
    other = await create(api, submit=True, title="Chairs")

    delta = await api.ok("get", PR, APPROVER[1], params={"since": start})
    assert delta["isDelta"] is True and delta["hasMore"] is False
    by_id = {row["id"]: row for row in delta["data"]}
    # the approved request left level 1's view: a delete for that approver
    assert by_id[made["id"]] == {"id": made["id"], "_operation": "delete"}
    assert by_id[other["id"]]["_operation"] == "insert"
    assert by_id[other["id"]]["status"] == "pending_a1"
    # the same request entered level 2's view
    level2 = await api.ok("get", PR, APPROVER[2], params={"since": start})
    assert [(r["id"], r["_operation"], r["status"]) for r in level2["data"]] == [
        (made["id"], "insert", "pending_a2")]
    # the admin sees one entry per row, last state
    admin = await api.ok("get", PR, params={"since": 0})
    states = {r["id"]: (r["_operation"], r["status"]) for r in admin["data"]}
    assert states == {made["id"]: ("insert", "pending_a2"),
                      other["id"]: ("insert", "pending_a1")}
    nothing = await api.ok("get", PR, params={"since": admin["offset"]})
    assert nothing["data"] == [] and nothing["offset"] == admin["offset"]


async def test_since_timestamp_is_best_effort_and_offsets_are_exact(api: Api) -> None:
    first = await create(api)
    page = await api.ok("get", PR)
    second = await create(api, title="Later")
    delta = await api.ok("get", PR, params={"since": page["timestamp"]})
    assert [r["id"] for r in delta["data"]] == [second["id"]]
    assert first["id"] not in {r["id"] for r in delta["data"]}
    zulu = page["timestamp"].replace("+00:00", "Z")
    assert (await api.ok("get", PR, params={"since": zulu}))["data"] == delta["data"]
    assert is_problem(await api.get(PR, params={"since": "yesterday"}), 400,
                      "invalid_parameter")
    assert is_problem(await api.get(PR, params={"since": "2024-01-01T10:00:00"}), 400,
                      "invalid_parameter")


async def test_since_outside_the_log_is_410_resync(api: Api) -> None:
    await create(api)
    page = await api.ok("get", PR)
    ahead = await api.get(PR, params={"since": page["offset"] + 1000})
    assert is_problem(ahead, 410, "resync") and ahead.json()["reason"] == "offset_ahead"
    # retention: the log's old rows were pruned
    await create(api, title="kept")
    await api.sql("SELECT sinal_sequence_changes()")
    await api.sql("DELETE FROM change_log WHERE position <= %s", (page["offset"],))
    gone = await api.get(PR, params={"since": 0})
    assert is_problem(gone, 410, "resync") and gone.json()["reason"] == "retention"
    assert (await api.get(PR, params={"since": page["offset"]})).status_code == 200
    old = await api.get(PR, params={"since": "2000-01-01T00:00:00Z"})
    assert is_problem(old, 410, "resync")


async def test_pages_and_bad_parameters(api: Api) -> None:
    made = {(await create(api, title=f"R{i}"))["id"] for i in range(7)}
    rows, offset = await api.all_rows(PR, limit=3)
    assert set(rows) == made and offset >= 7
    assert list(rows) == sorted(rows), "pages come in id order"
    first = await api.ok("get", PR, params={"limit": 3})
    second = await api.ok("get", PR, params={"limit": 3, "cursor": first["nextCursor"]})
    assert second["offset"] == first["offset"], "every page reports the first page's offset"
    for params, code in (({"limit": 0}, "invalid_parameter"),
                         ({"limit": 1001}, "invalid_parameter"),
                         ({"limit": "x"}, "invalid_parameter"),
                         ({"cursor": "garbage!"}, "invalid_cursor"),
                         ({"cursor": first["nextCursor"], "since": 1}, "invalid_parameter")):
        assert is_problem(await api.get(PR, params=params), 400, code)
    # a full list followed by a delta from its offset rebuilds the state
    state, offset = await api.all_rows(PR, limit=2)
    gone = next(iter(made))
    await api.sql("DELETE FROM purchase_requests WHERE id = %s", (gone,))
    delta = await api.ok("get", PR, params={"since": offset})
    assert apply_delta(state, delta["data"]) == (await api.all_rows(PR))[0]


async def test_a_long_delta_comes_in_parts(api: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    import sinal.api.reads as reads

    monkeypatch.setattr(reads, "DELTA_MAX_CHANGES", 2)
    made = [(await create(api, title=f"R{i}"))["id"] for i in range(5)]
    since, got = 0, list[str]()
    for _ in range(10):
        response = await api.get(PR, params={"since": since})
        part = response.json()
        got.extend(row["id"] for row in part["data"])
        if not part["hasMore"]:
            break
        assert len(part["data"]) == 2 and part["etag"] is None
        assert "ETag" not in response.headers, "a partial delta cannot be revalidated"
        since = part["offset"]
    assert got == made
