"""The REST read path's memory: the response cache (api/response_cache.py), the commit fence
(api/freshness.py), cached token verification (api/auth.py) and the fast path in front of
Quart (api/fast_reads.py).

End-to-end tests serve their own app for the test node (`create_app(node)` on port 0), so
they can reach its ApiContext: its cache, fence and counters start from zero.
"""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import psycopg
import pytest
import trio
import trio.testing
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from hypothesis import given, settings
from hypothesis import strategies as st

import sinal.api.response_cache as response_cache
from sinal.actors.hub import RateLimiter
from sinal.api.app import create_app
from sinal.api.auth import bearer_claims
from sinal.api.context import ApiContext
from sinal.api.fast_reads import FastReads, query_args
from sinal.api.freshness import CommitFence
from sinal.api.http_rules import gzip_body
from sinal.api.problems import Problem
from sinal.api.response_cache import ENTRY_OVERHEAD_BYTES, Fresh, ResponseCache
from sinal.domain.principals import TokenCache
from sinal.domain.tokens import mint_token
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
    app = create_app(node)
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


# --- the cache alone -----------------------------------------------------------------------

def body_of(size: int) -> bytes:
    return b"x" * size


async def put(cache: ResponseCache, key: str, topic: str, version: int, size: int) -> None:
    async def read() -> Fresh:
        return Fresh(body_of(size))

    await cache.fill(key, topic, version, read)


operations = st.lists(st.tuples(
    st.sampled_from(["put", "get", "gzip", "drop"]),
    st.integers(0, 12),  # key
    st.integers(0, 2),  # topic
    st.integers(0, 2),  # version
    st.integers(0, 6000),  # body size
), max_size=60)


@settings(max_examples=150, deadline=None)
@given(ops=operations)
def test_the_byte_bound_always_holds(ops: list[tuple[str, int, int, int, int]]) -> None:
    bound = 16_000

    async def run() -> None:
        cache = ResponseCache(bound, 60, clock=lambda: 0.0)
        for op, key_n, topic_n, version, size in ops:
            key, topic = f"{topic_n}:{version}:{key_n}", f"t{topic_n}"
            if op == "put":
                await put(cache, key, topic, version, size)
                fits = size + len(key) + ENTRY_OVERHEAD_BYTES <= bound
                assert (cache.get(key, topic, version) is not None) == fits
            elif op == "get":
                cache.get(key, topic, version)
            elif op == "gzip":
                for entry in cache.entries()[:1]:
                    assert gzip.decompress(cache.gzipped(entry)) == entry.body
            else:
                cache.drop_topic(topic)
            kept = cache.entries()
            assert cache.bytes == sum(e.size for e in kept) <= bound
            versions: dict[str, set[int]] = {}
            for entry in kept:
                versions.setdefault(entry.topic, set()).add(entry.version)
            assert all(len(v) == 1 for v in versions.values()), "one version per topic"

    trio.run(run)


async def test_least_recently_used_goes_first() -> None:
    size = 1000
    per_entry = size + 1 + ENTRY_OVERHEAD_BYTES
    cache = ResponseCache(3 * per_entry, 60, clock=lambda: 0.0)
    for key in "abc":
        await put(cache, key, "t", 1, size)
    assert cache.get("a", "t", 1) is not None
    await put(cache, "d", "t", 1, size)
    assert [e.key for e in cache.entries()] == ["c", "a", "d"]
    assert cache.evictions == 1


async def test_a_store_sweeps_topics_that_moved_unasked() -> None:
    versions = {"a": 1, "b": 1}
    cache = ResponseCache(10**6, 60, clock=lambda: 0.0, version_of=versions.__getitem__)
    await put(cache, "a1", "a", 1, 10)
    await put(cache, "a1-page2", "a", 1, 10)
    versions["a"] = 2  # nobody asks for topic a again
    await put(cache, "b1", "b", 1, 10)
    assert [e.key for e in cache.entries()] == ["b1"]
    assert cache.bytes == cache.entries()[0].size


async def test_ttl_in_virtual_time(autojump_clock: trio.testing.MockClock) -> None:
    cache = ResponseCache(10**6, 30, clock=trio.current_time)
    await put(cache, "k", "t", 1, 10)
    await trio.sleep(29.9)
    assert cache.holds("k") and cache.get("k", "t", 1) is not None
    await trio.sleep(0.1)
    assert not cache.holds("k") and cache.get("k", "t", 1) is None
    assert len(cache) == 0 and cache.bytes == 0


async def test_ttl_zero_turns_the_cache_off() -> None:
    cache = ResponseCache(10**6, 0, clock=lambda: 0.0)
    await put(cache, "k", "t", 1, 10)
    assert len(cache) == 0 and not cache.holds("k")


async def test_an_answer_read_while_the_topic_moved_is_not_kept() -> None:
    cache = ResponseCache(10**6, 60, clock=lambda: 0.0)
    gate = trio.Event()

    async def slow_read() -> Fresh:
        await gate.wait()
        return Fresh(b"old")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cache.fill, "v1", "t", 1, slow_read)
        await trio.testing.wait_all_tasks_blocked()
        await put(cache, "v2", "t", 2, 3)  # a request that saw the new version
        gate.set()
    assert [e.key for e in cache.entries()] == ["v2"]


async def test_concurrent_misses_make_one_read() -> None:
    cache = ResponseCache(10**6, 60, clock=lambda: 0.0)
    gate = trio.Event()
    reads: list[int] = []
    bodies: list[bytes] = []

    async def read() -> Fresh:
        reads.append(1)
        await gate.wait()
        return Fresh(b"body")

    async def ask() -> None:
        bodies.append((await cache.fill("k", "t", 1, read)).body)

    async with trio.open_nursery() as nursery:
        for _ in range(10):
            nursery.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert reads == [1] and bodies == [b"body"] * 10
    assert cache.hits == 9 and cache.misses == 1


async def test_a_cancelled_reader_hands_over() -> None:
    cache = ResponseCache(10**6, 60, clock=lambda: 0.0)
    reads: list[str] = []
    gate = trio.Event()

    async def read(name: str) -> Fresh:
        reads.append(name)
        await gate.wait()
        return Fresh(name.encode())

    got: list[bytes] = []
    leader_scope = trio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await cache.fill("k", "t", 1, partial(read, "leader"))

    async def follower() -> None:
        got.append((await cache.fill("k", "t", 1, partial(read, "follower"))).body)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(leader)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(follower)
        await trio.testing.wait_all_tasks_blocked()
        assert reads == ["leader"]
        leader_scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert reads == ["leader", "follower"], "the follower reads once the leader is gone"
        gate.set()
    assert got == [b"follower"]
    kept = cache.get("k", "t", 1)
    assert kept is not None and kept.body == b"follower"


# --- the commit fence ----------------------------------------------------------------------

class StubTopic:
    def __init__(self, head: int) -> None:
        self.head = head
        self.moved = trio.Event()

    async def wait_head(self, position: int) -> None:
        while self.head < position:
            await self.moved.wait()
            self.moved = trio.Event()

    def publish(self, head: int) -> None:
        self.head = head
        self.moved.set()


async def test_fence_rounds_are_shared_but_never_predate_a_caller(
        autojump_clock: trio.testing.MockClock) -> None:
    committed = [0]

    async def sequence() -> int:
        seen = committed[0]
        await trio.sleep(1)
        return seen

    fence = CommitFence(sequence)
    results: dict[str, tuple[int, int | None]] = {}

    async def caller(name: str) -> None:
        arrived = committed[0]
        results[name] = (arrived, await fence.head())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(caller, "first")
        await trio.sleep(0.5)
        committed[0] = 7  # a commit while the first round runs
        for name in ("second", "third", "fourth"):
            nursery.start_soon(caller, name)
    assert fence.rounds == 2
    assert results["first"] == (0, 0)
    for name in ("second", "third", "fourth"):
        arrived, head = results[name]
        assert head is not None and head >= arrived == 7


async def test_fence_waits_for_the_listener_then_gives_up(
        autojump_clock: trio.testing.MockClock) -> None:
    async def sequence() -> int:
        return 10

    fence = CommitFence(sequence, listener_wait=0.25)
    topic = StubTopic(8)
    async with trio.open_nursery() as nursery:

        async def publish_later() -> None:
            await trio.sleep(0.1)
            topic.publish(10)

        nursery.start_soon(publish_later)
        assert await fence.current(topic)  # type: ignore[arg-type]
    late = StubTopic(8)
    start = trio.current_time()
    assert not await fence.current(late)  # type: ignore[arg-type]
    assert trio.current_time() - start == pytest.approx(0.25)
    assert fence.waits == 2


async def test_a_failed_fence_means_read() -> None:
    async def sequence() -> int:
        raise psycopg.OperationalError("the database is gone")

    fence = CommitFence(sequence)
    assert await fence.head() is None
    assert not await fence.current(StubTopic(0))  # type: ignore[arg-type]


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

