"""The one REST list read: GET /api/purchase-requests, /api/quotations,
/api/purchase-orders, /api/approvals, as a full list (a page) or a delta (`?since=`).

    GET /api/<resource>[?fields=a,b][&limit=100][&cursor=...]   full list, one page
    GET /api/<resource>?since=<offset | ISO timestamp>[&fields=] delta
    If-None-Match: W/"<etag>"  or  ?etag=<etag>                   304 when nothing changed

`ListReads` decides and produces every answer, for both paths that serve these routes:
the fast path in front of Quart (api/fast_reads.py), which asks only for what memory can
answer, and the Quart view (api/read_routes.py), which asks for the whole answer. Given
the parsed request -- the resource, the caller's row filter, the query parameters, the
validators -- it answers, in this order:

1. 304 when the ETag made from the topic's version in memory matches (no query at all);
2. the encoded body kept in the response cache (api/response_cache.py) under that ETag,
   once the commit fence proves the topic current (api/freshness.py);
3. otherwise a read (only the whole path reads): the sequencer, one snapshot, then the
   ETag of the version as of what the body reflects (api/freshness.py `version_as_of`);
   the body is kept under that ETag, and concurrent misses make one read.

A `ListAnswer` then gives the headers and the body (gzip form included) for either path
to send; CORS, rate limits and counting stay with each path. See api/reads.py for the
rules of pages, deltas and ETags, and docs/architecture.md, "One REST delta".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol, TypeVar

import psycopg

from sinal.api.freshness import CommitFence, version_as_of
from sinal.api.http_rules import dump_json, wants_gzip
from sinal.api.problems import Problem, bad_parameter
from sinal.api.reads import (
    Cursor,
    Since,
    encode_cursor,
    etag_matches,
    fold_changes,
    make_etag,
    parse_cursor,
    parse_limit,
    parse_since,
    read_delta,
    read_page,
)
from sinal.api.realtime import TopicPositions
from sinal.api.resources import Resource, parse_fields, project
from sinal.api.response_cache import CachedBody, Fresh, ResponseCache
from sinal.api.settings import ApiSettings
from sinal.domain.access import RowFilter, scope_key

T = TypeVar("T")


class Runner(Protocol):
    """`ApiContext.run`: db.run, with an unreachable database as a 503 Problem."""

    async def __call__(self, work: Callable[[psycopg.Connection[Any]], T]) -> T: ...


def parse_flag(name: str, raw: str | None) -> bool | None:
    if raw is None:
        return None
    value = raw.strip().lower()
    if value in ("true", "1", "yes"):
        return True
    if value in ("false", "0", "no"):
        return False
    raise bad_parameter(name, "true or false")


@dataclass(frozen=True, slots=True)
class ListPlan:
    """A list or delta read, parsed and authorised, with the ETag of a topic version."""

    resource: Resource
    row_filter: RowFilter
    fields: tuple[str, ...]
    since: Since | None
    limit: int
    cursor: Cursor | None
    version: int  # the topic's version the ETag is made from
    etag: str

    @property
    def cache_key(self) -> str:
        """What the body depends on: the ETag, and `since` for a delta (see
        api/response_cache.py)."""
        return self.etag if self.since is None else f"{self.etag}|{self.since.key()}"

    def at(self, version: int) -> ListPlan:
        """The same read, with the ETag of another version of the topic."""
        return replace(self, version=version, etag=_etag(
            self.resource, self.row_filter, self.fields, self.since, self.limit, self.cursor,
            version))


def _etag(resource: Resource, row_filter: RowFilter, fields: tuple[str, ...],
          since: Since | None, limit: int, cursor: Cursor | None, version: int) -> str:
    scope = scope_key(row_filter)
    if since is not None:
        return make_etag("delta", resource.name, scope, fields, version)
    return make_etag("list", resource.name, scope, fields, limit,
                     cursor.offset if cursor else None, cursor.after if cursor else None,
                     version)


@dataclass(frozen=True, slots=True)
class ListAnswer:
    """A 304, or a 200 with its body (kept or not); `etag` is None when the answer cannot
    be revalidated (a partial delta, or a version that could not be known)."""

    status: int
    etag: str | None
    entry: CachedBody | None = None

    def headers(self, smart_polling: bool) -> dict[str, str]:
        headers = {"Cache-Control": "private, no-cache"}
        if smart_polling and self.etag is not None:
            headers["ETag"] = f'W/"{self.etag}"'
        return headers

    def body(self, responses: ResponseCache, compression: bool, compress: str | None,
             accept_encoding: str | None) -> tuple[bytes, bool]:
        """The bytes to send and whether they are gzip (compressed once per entry)."""
        if self.entry is None:
            return b"", False
        body = self.entry.body
        if wants_gzip(compression, compress, accept_encoding, len(body)):
            return responses.gzipped(self.entry), True
        return body, False


class ListReads:
    def __init__(self, settings: ApiSettings, topics: TopicPositions,
                 responses: ResponseCache, fence: CommitFence, run: Runner) -> None:
        self.settings = settings
        self.topics = topics
        self.responses = responses
        self.fence = fence
        self.run = run

    def plan(self, resource: Resource, row_filter: RowFilter, args: Mapping[str, str]
             ) -> ListPlan:
        """Parse a list read's query (first value of each parameter); Problem when
        malformed. The ETag is made from the topic's version in memory now."""
        fields = parse_fields(args.get("fields"), resource)
        since = parse_since(args.get("since")) if self.settings.delta_updates else None
        limit = parse_limit(args.get("limit"))
        cursor = parse_cursor(args.get("cursor"))
        parse_flag("compress", args.get("compress"))
        if since is not None and cursor is not None:
            raise bad_parameter("cursor", "pages are for full lists; a delta has no cursor")
        version = self.topics.topic_version(resource.topic)
        return ListPlan(resource, row_filter, fields, since, limit, cursor, version,
                        _etag(resource, row_filter, fields, since, limit, cursor, version))

    async def answer(self, plan: ListPlan, if_none_match: str | None,
                     etag_param: str | None, *, memory_only: bool = False
                     ) -> ListAnswer | None:
        """The answer to `plan`. With `memory_only` (the fast path), None unless memory
        answers: a 304, or a kept body proven current; nothing is read then."""
        topic = plan.resource.topic
        if self.settings.smart_polling and (etag_matches(if_none_match, plan.etag)
                                            or etag_matches(etag_param, plan.etag)):
            return ListAnswer(304, plan.etag)
        reuse = self.responses.holds(plan.cache_key) and await self.fence.current(topic)
        if reuse:  # the version as of the fence
            plan = plan.at(self.topics.topic_version(topic))
        if memory_only:
            entry = self.responses.get(plan.cache_key, topic, plan.version) if reuse else None
        else:
            async def read() -> Fresh:
                return await read_list_body(self, plan)

            entry = await self.responses.fill(plan.cache_key, topic, plan.version, read,
                                              reuse=reuse)
        return None if entry is None else ListAnswer(200, entry.etag, entry)

    async def as_of(self, plan: ListPlan, position: int) -> ListPlan | None:
        """`plan` with the version (and ETag) of a body that reflects the log up to
        `position`; None when that version cannot be known."""
        version = await version_as_of(self.topics, plan.resource.topic, position)
        return None if version is None else plan.at(version)


async def read_list_body(reads: ListReads, plan: ListPlan) -> Fresh:
    """Query and encode the answer, with the ETag of what it reflects; an answer whose
    version cannot be known, or a partial delta, is not kept and has no ETag."""
    resource, row_filter, fields = plan.resource, plan.row_filter, plan.fields
    smart = reads.settings.smart_polling
    since = plan.since
    if since is not None:
        def delta_work(conn: psycopg.Connection[Any]) -> Any:
            return read_delta(conn, resource, since)

        try:
            delta = await reads.run(delta_work)
        except Problem as problem:
            if problem.code == "resync":
                # cached lists hold offsets the log no longer has: the refetch reads afresh
                reads.responses.drop_topic(resource.topic)
            raise
        data = []
        for entry in fold_changes(delta.changes, row_filter):
            if entry["_operation"] == "delete":
                data.append(entry)
            else:
                data.append({**project(entry, fields), "_operation": entry["_operation"]})
        tagged = None if delta.has_more else await reads.as_of(plan, delta.offset)
        body: dict[str, Any] = {
            "data": data, "etag": tagged.etag if smart and tagged else None, "isDelta": True,
            "timestamp": delta.timestamp, "offset": delta.offset, "hasMore": delta.has_more,
        }
        return _fresh(body, tagged)

    def page_work(conn: psycopg.Connection[Any]) -> Any:
        return read_page(conn, resource, row_filter, plan.limit, plan.cursor)

    page = await reads.run(page_work)
    tagged = await reads.as_of(plan, page.snapshot) if page.exact else None
    body = {
        "data": [project(row, fields) for row in page.rows],
        "etag": tagged.etag if smart and tagged else None, "isDelta": False,
        "timestamp": page.timestamp, "offset": page.offset,
        "nextCursor": encode_cursor(page.next_cursor) if page.next_cursor else None,
    }
    return _fresh(body, tagged)


def _fresh(body: dict[str, Any], tagged: ListPlan | None) -> Fresh:
    """Kept under the ETag of what it reflects; without one, not kept."""
    if tagged is None:
        return Fresh(dump_json(body), cacheable=False)
    return Fresh(dump_json(body), key=tagged.cache_key, version=tagged.version,
                 etag=tagged.etag)
