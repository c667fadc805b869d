"""The fast read path: list reads answered from memory, in front of Quart.

Most REST traffic is pollers asking again for a list that has not changed. Their answer is
already known in memory -- a 304, or the encoded body in the response cache -- and building
it costs far less than Quart's per-request machinery around it (a Request object with its
header and query parsing, two tasks and a nursery, the request and app contexts, hooks,
signals, the Response object and its ASGI translation): measured on this project's 2-core
box, hypercorn alone answers about 4,000 trivial requests/s on one core, Quart's 304 path
about 1,500. `FastReads` is ASGI middleware that answers exactly those requests itself,
with the app's own rules and helpers:

    GET /api/<list resource>  (no body)
      token    api.auth.tokens     (cached verification, api/auth.py)
      caller   api.auth.peek       (memory only)
      filter   permission_filter   (the same as the view's)
      answer   api.reads           (api/list_reads.py, the one list read, asked for what
                                    memory can answer: a 304, or a kept body proven current)
      limit    charged to the same bucket, counted in the same stats and metrics,
               CORS and Vary headers as api/app.py adds them

Whenever anything is missing or wrong -- no or bad token, a user not in memory, a role
that may not read, a malformed parameter, a nearly empty rate-limit bucket, a cache miss,
a body, any other method or path -- the request goes to the Quart app untouched, which
answers it (the problem details, the query, the 429) as it always has. The fast path never
answers an error, and never charges a request it does not answer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from urllib.parse import parse_qsl

import werkzeug.urls  # noqa: F401  (registers the "werkzeug.url_quote" codec error handler)
from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope, Scope

from sinal.api.auth import bearer_claims
from sinal.api.context import ApiContext
from sinal.api.http_rules import CORS_EXPOSE_HEADERS, cors_origin
from sinal.api.problems import Problem
from sinal.api.resources import LISTS, Resource
from sinal.domain.access import AccessError, permission_filter
from sinal.domain.db import DB_SCOPE

log = logging.getLogger("sinal.api")

AsgiApp = Callable[[Scope, ASGIReceiveCallable, ASGISendCallable], Awaitable[None]]
Answer = tuple[int, list[tuple[bytes, bytes]], bytes]

_EXPOSE = CORS_EXPOSE_HEADERS.encode()
_READ_HEADERS = frozenset((b"authorization", b"if-none-match", b"accept-encoding", b"origin"))


class FastReads:
    def __init__(self, api: ApiContext, app: AsgiApp) -> None:
        self.api = api
        self.app = app
        self.enabled = True  # tests switch it off to compare with the full path
        self.answered = 0

    async def __call__(self, scope: Scope, receive: ASGIReceiveCallable,
                       send: ASGISendCallable) -> None:
        DB_SCOPE.set("http")  # this request's task (and its children) count as HTTP
        if self.enabled and scope["type"] == "http" and scope["method"] == "GET" \
                and not scope.get("root_path"):
            resource = LISTS.get(scope["path"])
            if resource is not None:
                started = time.perf_counter()
                try:
                    answer = await self.answer(scope, resource, started)
                except Exception:
                    log.exception("fast read path failed; the full path answers instead")
                    answer = None
                if answer is not None:
                    status, headers, body = answer
                    await send({"type": "http.response.start", "status": status,
                                "headers": headers})
                    await send({"type": "http.response.body", "body": body,
                                "more_body": False})
                    return
        await self.app(scope, receive, send)

    async def answer(self, scope: HTTPScope, resource: Resource, started: float
                     ) -> Answer | None:
        """The whole answer from memory, or None: the full path must answer."""
        api = self.api
        found: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if name in _READ_HEADERS:
                if name not in found:  # the first one, like request.headers.get
                    found[name] = value.decode("latin-1")
            elif name == b"transfer-encoding" or (name == b"content-length"
                                                  and value.strip() != b"0"):
                return None  # a body: the full path reads it first (see api/app.py)
        try:
            claims = bearer_claims(api.auth.tokens, found.get(b"authorization"))
        except Problem:
            return None
        principal = api.auth.peek(claims)
        if principal is None:
            return None
        bucket = f"user:{claims.user_id}"
        if api.limiter.retry_after(bucket) > 0:
            return None  # nearly empty: the full path charges it, and answers 429 if due
        try:
            row_filter = permission_filter(principal, resource.topic)
            args = query_args(scope["query_string"])
            plan = api.reads.plan(resource, row_filter, args)
        except (AccessError, Problem, UnicodeDecodeError):
            return None
        answer = await api.reads.answer(plan, found.get(b"if-none-match"), args.get("etag"),
                                        memory_only=True)
        if answer is None or api.limiter.retry_after(bucket) > 0:
            return None  # (a checkpoint since the first look: the bucket may be empty now)
        api.charge(bucket)  # the bucket holds a token (no checkpoint since): cannot refuse

        settings = api.settings
        headers = [(name.lower().encode(), value.encode())
                   for name, value in answer.headers(settings.smart_polling).items()]
        body, gzipped = answer.body(api.responses, settings.compression,
                                    args.get("compress"), found.get(b"accept-encoding"))
        if answer.entry is not None:
            headers.append((b"content-type", b"application/json"))
            headers.append((b"content-length", str(len(body)).encode()))
        allowed = cors_origin(found.get(b"origin"), settings.allowed_origins)
        if allowed is not None:
            headers.append((b"access-control-allow-origin", allowed.encode("latin-1")))
            headers.append((b"access-control-expose-headers", _EXPOSE))
        headers.append((b"vary", b"Origin, Accept-Encoding" if allowed not in (None, "*")
                        else b"Accept-Encoding"))
        if gzipped:
            headers.append((b"content-encoding", b"gzip"))

        elapsed = time.perf_counter() - started
        api.metrics.observe("GET", resource.path, answer.status, elapsed)
        api.stats.record(elapsed, read=True, hit=answer.status == 304)
        self.answered += 1
        return answer.status, headers, body


def query_args(query_string: bytes) -> dict[str, str]:
    """The query parameters as Quart's `request.args.get` sees them (the first value of
    each; invalid percent-escapes kept as they are, like werkzeug)."""
    args: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode(), keep_blank_values=True,
                                 errors="werkzeug.url_quote"):
        args.setdefault(name, value)
    return args
