"""The response cache alone (api/response_cache.py): its byte bound, LRU order, TTL,
version sweeps, single flight."""

from __future__ import annotations

import gzip
from functools import partial

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from sinal.api.response_cache import ENTRY_OVERHEAD_BYTES, Fresh, ResponseCache


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
