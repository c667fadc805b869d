"""The REST read path's memory, end to end: the response cache (api/response_cache.py) and
the commit fence (api/freshness.py) behind both the fast path in front of Quart
(api/fast_reads.py) and the full path; cached token verification (api/auth.py) and query
strings. tests/api/test_api_response_cache.py and tests/api/test_api_freshness.py test the
cache and the fence alone.

End-to-end tests serve their own app for the test node (node/http.py `build_app(node)` on
port 0), so they can reach its ApiContext: its cache, fence and counters start from zero.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

import sinal.api.response_cache as response_cache
from sinal.api.auth import bearer_claims
from sinal.api.context import ApiContext
from sinal.api.fast_reads import FastReads, query_args
from sinal.api.http_rules import gzip_body
from sinal.api.problems import Problem
from sinal.domain.principals import TokenCache
from sinal.domain.ratelimit import RateLimiter
from sinal.domain.tokens import mint_token
from sinal.node.http import build_app
from sinal.node.wiring import Node
from tests.api.api_support import ADMIN, APPROVER, REQUESTER, Api
from tests.api.test_api_reads import create, is_problem
from tests.realtime.realtime_support import SECRET

PR = "/api/purchase-requests"
ORIGIN = "http://app.example"


@pytest.fixture
def node_settings() -> dict[str, str]:
    return {"ENABLE_PERFORMANCE_MONITORING": "false", "RATE_LIMIT_REQUESTS_PER_MINUTE": "100000",
            "WEBSOCKET_CORS_ORIGIN": ORIGIN}


@dataclass
class Served:
    api: Api
    ctx: ApiContext
    fast: FastReads
    works: list[str]  # every db.run of the node, by its work function's name

    @property
    def queries(self) -> int:
        """List and delta reads (the node's actors query meanwhile too: not counted)."""
        return sum(1 for name in self.works if name.startswith("read_list_body"))

    @property
    def fences(self) -> int:
        return sum(1 for name in self.works if ".sequence." in name)


@pytest.fixture
async def served(node: Node, users: dict[str, Any], nursery: trio.Nursery,
                 monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Served]:
    db = node.db
    assert db is not None
    works: list[str] = []
    run = db.run

    async def counted(work: Any) -> Any:
        works.append(work.__qualname__)
        return await run(work)

    monkeypatch.setattr(db, "run", counted)
    app = build_app(node)
    config = HypercornConfig()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None
    bound: list[str] = await nursery.start(partial(hypercorn_serve, app, config))
    fast = app.asgi_app
    assert isinstance(fast, FastReads)
    async with httpx.AsyncClient(base_url=bound[0], timeout=20) as client:
        yield Served(Api(client, node, users), app.extensions["sinal"], fast, works)


async def some_requests(api: Api, count: int = 12) -> list[Any]:
    # long titles: a page of them is over 1 KB, so it is gzipped when the client accepts it
    return [await create(api, submit=True, title=f"Item {i} " + "x" * 60) for i in range(count)]


# --- end to end ----------------------------------------------------------------------------

async def test_a_repeated_read_makes_no_read_query(served: Served) -> None:
    api, ctx = served.api, served.ctx
    await some_requests(api, 3)
    await api.settle()  # else the version moves under the first read, and the second misses
    first = await api.get(PR)
    assert first.status_code == 200

    assert served.works[-1] == "read_list_body.<locals>.page_work"
    before, fences = len(served.works), served.fences
    again = await api.get(PR)
    assert again.status_code == 200
    assert again.content == first.content, "byte for byte, timestamp and offset included"
    assert served.queries == 1 and served.fences == fences + 1 == ctx.fence.rounds, \
        "one query: the commit fence, no read"
    assert ctx.responses.hits == 1 and served.fast.answered == 1

    # a poller whose ETag is out of date gets the same body the same way
    stale = await api.get(PR, headers={"If-None-Match": 'W/"0000"'})
    assert stale.content == first.content and served.queries == 1
    assert served.fences == fences + 2
    # and one whose ETag is current gets a 304 with no query at all
    current = await api.get(PR, headers={"If-None-Match": first.headers["ETag"]})
    assert current.status_code == 304 and served.fences == fences + 2

    # the full path (Quart) uses the same cache
    served.fast.enabled = False
    slow = await api.get(PR)
    assert slow.content == first.content and served.queries == 1
    assert served.fences == fences + 3
    assert ctx.responses.hits == 3 and served.fast.answered == 3
    assert not [w for w in served.works[before:] if w.startswith(("read_list", "Principal"))]


async def test_the_gzip_form_is_made_once(served: Served,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    api = served.api
    await some_requests(api)
    await api.settle()
    compressions: list[int] = []
    real = gzip_body

    def counted(body: bytes, level: int) -> bytes:
        compressions.append(len(body))
        return real(body, level)

    monkeypatch.setattr(response_cache, "gzip_body", counted)
    plain = await api.get(PR)
    for fast in (True, True, False):
        served.fast.enabled = fast
        packed = await api.get(PR, headers={"Accept-Encoding": "gzip"})
        assert packed.headers["Content-Encoding"] == "gzip"
        assert packed.content == plain.content  # httpx decoded it
    assert compressions == [len(plain.content)]
    sizes = [entry.size for entry in served.ctx.responses.entries()]
    assert sum(sizes) == served.ctx.responses.bytes


async def test_a_write_is_seen_at_once_whatever_its_path(served: Served) -> None:
    api = served.api
    await some_requests(api, 2)
    first = (await api.get(PR)).json()
    made = await create(api, title="Fresh")  # through the API, no wait for the listener
    after = (await api.get(PR)).json()
    assert made["id"] in {row["id"] for row in after["data"]}
    assert after["etag"] != first["etag"] or after["data"] != first["data"]
    # straight to the database (psql, another app, another node): seen by the next read
    for attempt in range(5):
        title = f"Changed {attempt}"
        await api.sql("UPDATE purchase_requests SET title = %s WHERE id = %s",
                      (title, made["id"]))
        page = (await api.get(PR, headers={"If-None-Match": 'W/"0000"'})).json()
        assert {row["id"]: row["title"] for row in page["data"]}[made["id"]] == title
    delta = (await api.get(PR, params={"since": first["offset"]})).json()
    assert made["id"] in {row["id"] for row in delta["data"]}


async def test_entries_expire_after_the_ttl(served: Served) -> None:
    api, cache = served.api, served.ctx.responses
    now = [1000.0]
    cache.clock = lambda: now[0]
    await some_requests(api, 1)
    await api.settle()
    first = await api.get(PR)
    reads, fences = served.queries, served.fences
    now[0] += cache.ttl - 1
    assert (await api.get(PR)).content == first.content
    assert (served.queries, served.fences) == (reads, fences + 1)
    now[0] += 1
    again = await api.get(PR)
    assert again.status_code == 200
    assert (served.queries, served.fences) == (reads + 1, fences + 1), "a read, no fence"
    assert cache.evictions == 0 and cache.misses == 2  # dropped unasked, then missed
    assert again.json()["timestamp"] != first.json()["timestamp"]


async def test_a_version_move_drops_the_older_entries(served: Served) -> None:
    api, cache = served.api, served.ctx.responses
    await some_requests(api, 2)
    await api.settle()
    for params in ({}, {"limit": 1}, {"fields": "status"}, {"since": 0}):
        assert (await api.get(PR, params=params)).status_code == 200
    assert len(cache) == 4
    await create(api)
    await api.settle()
    assert (await api.get(PR)).status_code == 200
    assert len(cache) == 1, "the older version's entries can never be asked for again"


async def test_a_partial_delta_is_not_kept(served: Served,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import sinal.api.reads as reads

    monkeypatch.setattr(reads, "DELTA_MAX_CHANGES", 2)
    await some_requests(served.api, 4)
    before = served.queries
    for _ in range(2):
        part = await served.api.get(PR, params={"since": 0})
        assert part.json()["hasMore"] is True and "ETag" not in part.headers
    assert served.queries == before + 2 and len(served.ctx.responses) == 0


async def test_a_resync_drops_the_topic(served: Served) -> None:
    api = served.api
    await some_requests(api, 2)
    await api.settle()
    page = (await api.get(PR)).json()
    await api.sql("SELECT sinal_sequence_changes()")
    await api.sql("DELETE FROM change_log WHERE position <= %s", (page["offset"],))
    assert len(served.ctx.responses) == 1
    assert is_problem(await api.get(PR, params={"since": 0}), 410, "resync")
    assert len(served.ctx.responses) == 0, "the refetch must not get the old offset back"


async def test_fast_and_full_paths_answer_alike(served: Served) -> None:
    api = served.api
    await some_requests(api)
    await api.settle()
    offset = (await api.get(PR)).json()["offset"]
    etag = (await api.get(PR)).headers["ETag"]
    variants: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        (ADMIN, {}, {}),
        (ADMIN, {}, {"Accept-Encoding": "gzip"}),
        (ADMIN, {}, {"Accept-Encoding": "gzip;q=0"}),
        (ADMIN, {}, {"If-None-Match": etag}),
        (ADMIN, {}, {"If-None-Match": etag, "Origin": ORIGIN}),
        (ADMIN, {"etag": etag[3:-1]}, {}),
        (ADMIN, {"compress": "false"}, {"Accept-Encoding": "gzip"}),
        (ADMIN, {"compress": "true", "limit": 1, "fields": "status"}, {}),
        (ADMIN, {"fields": "status,title", "limit": 3}, {"Origin": ORIGIN}),
        (ADMIN, {}, {"Origin": "http://evil.example", "Accept-Encoding": "gzip"}),
        (ADMIN, {"since": offset - 3}, {"Accept-Encoding": "gzip"}),
        (ADMIN, {"since": offset - 3, "fields": "status"}, {"If-None-Match": "*"}),
        (REQUESTER, {}, {}),
        (APPROVER[1], {"limit": 2}, {}),
    ]
    for who, params, headers in variants:
        await api.get(PR, who, params=params)  # warm the cache
        answers = []
        for fast in (True, False):
            served.fast.enabled = fast
            answered = served.fast.answered
            response = await api.get(PR, who, params=params, headers=headers)
            assert served.fast.answered == answered + fast, (who, params, headers)
            answers.append((response.status_code, response.content,
                            {k: v for k, v in response.headers.items() if k != "date"}))
        assert answers[0] == answers[1], (who, params, headers)
        served.fast.enabled = True


async def test_the_fast_path_leaves_every_error_to_the_full_path(served: Served) -> None:
    api = served.api
    await some_requests(api, 1)
    cases = [
        (await api.client.get(PR), 401, "auth_required"),
        (await api.client.get(PR, headers={"Authorization": "Bearer nope"}), 401,
         "auth_failed"),
        (await api.get(PR, params={"limit": 0}), 400, "invalid_parameter"),
        (await api.get("/api/approvals", REQUESTER), 403, "forbidden"),
    ]
    for response, status, code in cases:
        assert is_problem(response, status, code)
    # a body on a GET: the full path reads it first
    with_body = await api.client.request("GET", PR, content=b"{}", headers=api.auth(ADMIN))
    assert with_body.status_code == 200
    assert served.fast.answered == 0


async def test_the_fast_path_is_rate_limited(served: Served) -> None:
    api, ctx = served.api, served.ctx
    await some_requests(api, 1)
    await api.settle()
    etag = (await api.get(PR)).headers["ETag"]
    ctx.limiter = RateLimiter(3, clock=trio.current_time)
    for _ in range(3):
        assert (await api.get(PR, headers={"If-None-Match": etag})).status_code == 304
    limited = await api.get(PR, headers={"If-None-Match": etag})
    assert is_problem(limited, 429, "rate_limited")
    assert served.fast.answered == 3


async def test_metrics_show_the_cache(served: Served) -> None:
    await some_requests(served.api, 1)
    await served.api.settle()
    for _ in range(3):
        await served.api.get(PR)
    text = (await served.api.get("/metrics", None)).text
    assert "sinal_http_response_cache_hits_total 2.0" in text
    assert "sinal_http_response_cache_misses_total 1.0" in text
    assert "sinal_http_commit_fences_total 2.0" in text
    assert "sinal_http_response_cache_bytes" in text


# --- tokens and query strings -------------------------------------------------------------

def test_tokens_are_verified_once_and_expire_on_time() -> None:
    issued = int(time.time()) - 1000  # PyJWT refuses an `iat` in the real future
    now = [float(issued)]
    cache = TokenCache(SECRET, max_entries=3, clock=lambda: now[0])
    token = mint_token(SECRET, "u1", "admin", ttl_seconds=60, now=issued)
    header = f"Bearer {token}"
    assert bearer_claims(cache, header).user_id == "u1"
    assert cache.claims(token).user_id == "u1"
    assert cache.verified == 1
    now[0] = issued + 59.9
    assert bearer_claims(cache, header).user_id == "u1" and cache.verified == 1
    now[0] = issued + 60
    with pytest.raises(Problem) as expired:
        bearer_claims(cache, header)
    assert expired.value.code == "token_expired" and expired.value.status == 401
    for bad, code in ((None, "auth_required"), ("Bearer nope", "auth_failed"),
                      (f"Bearer {mint_token('x' * 40, 'u1', 'admin', now=issued)}",
                       "auth_failed")):
        for _ in range(2):
            with pytest.raises(Problem) as refused:
                bearer_claims(cache, bad)
            assert refused.value.code == code
    assert cache.verified == 6, "failures are never kept"
    tokens = [mint_token(SECRET, f"u{i}", "admin", ttl_seconds=60 + i, now=issued + 30)
              for i in range(10)]
    now[0] = issued + 31
    for token in tokens:
        cache.claims(token)
    assert len(cache._claims) <= 3


def test_query_args_read_like_werkzeug() -> None:
    from werkzeug.datastructures import Headers, MultiDict
    from werkzeug.sansio.request import Request

    rng = random.Random(3)
    pieces = ["limit=5", "limit=7", "fields=a,b", "since=2024-01-01T00:00:00%2B00:00",
              "etag=%22x%22", "x=%zz", "empty=", "plus=a+b", "flag", "%E2%82%AC=1", "&", ";"]
    for _ in range(200):
        raw = "&".join(rng.choice(pieces) for _ in range(rng.randint(0, 6))).encode()
        request = Request("GET", "http", None, "", "/", raw, Headers(), None)
        args: MultiDict[str, str] = request.args
        ours = query_args(raw)
        assert ours == {key: args.get(key) for key in args}, raw
