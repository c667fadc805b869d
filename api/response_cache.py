"""Encoded list and delta answers kept in memory, so a repeated read costs no query and no
encoding.

KEY. A full list's ETag already names everything its body depends on: the resource, the
topic's version the body reflects (known once it is read, api/freshness.py), the caller's
permission scope, `fields`, `limit` and the cursor. A
delta's ETag leaves `since` out on purpose (a poller moves `since` forward and still gets
304s), so a delta's key is its ETag plus `since`. Two callers with the same scope share
entries: the body depends on the scope, not on who asks.

WHAT IS KEPT. The JSON body exactly as first encoded, and its gzip form, compressed the
first time a client wants it and then kept beside it. The body carries the snapshot it was
read from: `offset` (the log position it covers) and `timestamp` (when that snapshot was
read, the database's clock). A cached answer repeats both: it describes the same snapshot,
and nothing was published for the topic since (or the ETag, hence the key, would differ),
so resuming from that `offset` or that `timestamp` misses nothing -- at worst a delta
repeats a change, which applies idempotently. Partial deltas (`hasMore`) are not kept.

LIFETIME. An entry leaves when:
- its topic's version moves: the first lookup that sees the new version, or the next entry
  stored for any topic, drops every entry of the older one (they can never be asked for
  again);
- it is older than CACHE_TTL_SECONDS (0 turns the cache off);
- the bytes of all entries (bodies, gzip forms, keys and a fixed overhead each) would pass
  CACHE_MAX_SIZE_MB: least recently used first;
- `drop_topic` is called: a delta answered 410 `resync` (the log was pruned past, or reset
  behind, the offsets in cached lists), so the client's refetch must read afresh.

SINGLE FLIGHT. Concurrent misses for one key (every poller after a write) make one read:
the first caller reads, the others wait for it and take its entry.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from sinal.api.http_rules import gzip_body

ENTRY_OVERHEAD_BYTES = 256  # the entry object, its OrderedDict slot and index sets


@dataclass(slots=True)
class CachedBody:
    key: str
    topic: str
    version: int
    body: bytes
    stored_at: float
    cacheable: bool = True  # False: a partial delta (never kept, never revalidated)
    gzipped: bytes | None = None
    etag: str | None = None  # the ETag of the answer (None: it cannot be revalidated)

    @property
    def size(self) -> int:
        return (len(self.body) + len(self.gzipped or b"") + len(self.key)
                + ENTRY_OVERHEAD_BYTES)


@dataclass(frozen=True, slots=True)
class Fresh:
    """What a read produced: the encoded body, and whether it may be kept. A read learns
    the topic version its body reflects only once it has read (api/freshness.py): `key`
    and `version` say under which key and version it is kept when they differ from those
    the lookup was made with."""

    body: bytes
    cacheable: bool = True
    key: str | None = None
    version: int | None = None
    etag: str | None = None


class ResponseCache:
    def __init__(self, max_bytes: int, ttl_seconds: float, *, compression_level: int = 6,
                 clock: Callable[[], float] = time.monotonic,
                 version_of: Callable[[str], int] | None = None) -> None:
        self.max_bytes = max_bytes
        self.ttl = ttl_seconds
        self.compression_level = compression_level
        self.clock = clock
        self.version_of = version_of  # a topic's version now: lets a store sweep every topic
        self._entries: OrderedDict[str, CachedBody] = OrderedDict()
        self._topics: dict[str, tuple[int, set[str]]] = {}  # topic -> (version, keys)
        self._inflight: dict[str, trio.Event] = {}
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.evictions = 0  # by size or age (version moves and drops are not counted)

    @property
    def enabled(self) -> bool:
        return self.ttl > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[CachedBody]:
        """The entries kept, least recently used first (for tests and inspection)."""
        return list(self._entries.values())

    # --- lookups -------------------------------------------------------------------------

    def get(self, key: str, topic: str, version: int) -> CachedBody | None:
        """The entry for `key`, if it is fresh; `version` is the topic's version now (a
        version other than the last one seen drops the topic's older entries)."""
        if not self.enabled:
            return None
        self._observe_version(topic, version)
        entry = self._peek(key)
        if entry is None:
            self.misses += 1
        else:
            self.hits += 1
        return entry

    def holds(self, key: str) -> bool:
        """An entry for `key` is kept (and not too old) or being read."""
        if key in self._inflight:
            return True
        entry = self._entries.get(key)
        return entry is not None and self.clock() - entry.stored_at < self.ttl

    async def fill(self, key: str, topic: str, version: int,
                   read: Callable[[], Awaitable[Fresh]], *, reuse: bool = True) -> CachedBody:
        """The entry for `key`: from memory, or from `read()` -- made once for concurrent
        callers. With `reuse=False`, `read()` runs whatever is kept or running (and its
        result is kept). The entry returned may not be kept (disabled cache, partial delta,
        too big, or the topic moved meanwhile); it is still the answer for this request.
        Callers waiting for a read that was kept under another key (its `Fresh.key`) read
        for themselves."""
        if not self.enabled:
            return self._entry(key, topic, version, await read())
        if reuse:
            entry = self.get(key, topic, version)
            if entry is not None:
                return entry
            while (running := self._inflight.get(key)) is not None:  # one read at a time
                await running.wait()  # then look again: the reader may have failed
                entry = self._peek(key)
                if entry is not None:
                    self.misses -= 1
                    self.hits += 1
                    return entry
        else:
            self._observe_version(topic, version)
            self.misses += 1
        done = trio.Event()
        mine = key not in self._inflight
        if mine:
            self._inflight[key] = done
        try:
            fresh = await read()
        finally:
            if mine:
                del self._inflight[key]
            done.set()
        entry = self._entry(key, topic, version, fresh)
        if fresh.cacheable:
            self._store(entry)
        return entry

    def _entry(self, key: str, topic: str, version: int, fresh: Fresh) -> CachedBody:
        return CachedBody(key if fresh.key is None else fresh.key, topic,
                          version if fresh.version is None else fresh.version, fresh.body,
                          self.clock(), fresh.cacheable, etag=fresh.etag)

    def _peek(self, key: str) -> CachedBody | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if self.clock() - entry.stored_at >= self.ttl:
            self._remove(entry)
            self.evictions += 1
            return None
        self._entries.move_to_end(key)
        return entry

    def gzipped(self, entry: CachedBody) -> bytes:
        """The gzip form of `entry.body`, compressed once and kept with the entry."""
        if entry.gzipped is None:
            packed = gzip_body(entry.body, self.compression_level)
            if self._entries.get(entry.key) is entry:
                self.bytes += len(packed)
                entry.gzipped = packed
                self._shrink()
            else:
                entry.gzipped = packed
        return entry.gzipped

    # --- upkeep --------------------------------------------------------------------------

    def drop_topic(self, topic: str) -> None:
        _, keys = self._topics.pop(topic, (0, set()))
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None:
                self.bytes -= entry.size

    def clear(self) -> None:
        self._entries.clear()
        self._topics.clear()
        self.bytes = 0

    def _observe_version(self, topic: str, version: int) -> None:
        known = self._topics.get(topic)
        if known is not None and known[0] != version:
            self.drop_topic(topic)
            known = None
        if known is None:
            self._topics[topic] = (version, set())

    def _store(self, entry: CachedBody) -> None:
        if not self.enabled or entry.size > self.max_bytes:
            return
        if self.version_of is not None:  # topics that moved while nobody asked for them
            for topic in list(self._topics):
                self._observe_version(topic, self.version_of(topic))
        known = self._topics.get(entry.topic)
        if known is None or known[0] != entry.version:
            return  # the topic moved while this was read: nobody can ask for it again
        old = self._entries.get(entry.key)
        if old is not None:
            self._remove(old)
        self._entries[entry.key] = entry
        known[1].add(entry.key)
        self.bytes += entry.size
        self._shrink()

    def _shrink(self) -> None:
        while self.bytes > self.max_bytes and self._entries:
            _, oldest = next(iter(self._entries.items()))
            self._remove(oldest)
            self.evictions += 1

    def _remove(self, entry: CachedBody) -> None:
        del self._entries[entry.key]
        self.bytes -= entry.size
        known = self._topics.get(entry.topic)
        if known is not None:
            known[1].discard(entry.key)
