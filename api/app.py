"""The HTTP front end (Quart-Trio): REST reads and deltas, workflow writes, notification
preferences, health, metrics, the supervisor tree, /openapi.json.

`create_app(settings, db, authenticator, realtime, stats, audit)` takes exactly what the
HTTP side uses: its settings (api/settings.py), the database, the one authenticator, a
read-only view of the realtime side (api/realtime.py: memory only), the request
statistics it records into and the audit log it records security events into
(domain/audit.py: `record` never blocks). The composition root (node/http.py) builds them from the
running node and serves the app with hypercorn on HTTP_PORT, in the node's process and
supervisor tree. Around every request:

1. CORS preflights (OPTIONS with Access-Control-Request-Method) are answered at once.
2. /api/*: the bearer token is verified (CPU only) and the request is charged to the
   caller's rate-limit bucket (user id; the client address when there is no valid token):
   over RATE_LIMIT_REQUESTS_PER_MINUTE -> 429 with Retry-After.
3. The endpoint runs; a `Problem` it raises, an unknown route (404), a wrong method (405),
   a body too large (413) or a bug (500) become RFC 9457 problem details. A refusal
   (401 auth_failed / token_expired, 403 forbidden, 429 rate_limited: at most one event
   per caller and minute) goes to the audit trail, with the user when Sinal knows them.
4. The answer gets CORS headers (WEBSOCKET_CORS_ORIGIN), gzip when it should (see
   `wants_gzip`), and is counted (requests, latency, 304s) for /metrics and health.

In front of all this, `api.fast_reads.FastReads` answers the list reads it can answer from
memory alone (a 304, or a body from the response cache) with the same rules, without
Quart's per-request machinery; everything else (errors included) passes through
`api.guard.RequestGuard`, which refuses what no route may see (a WebSocket upgrade on the
HTTP port, a request with both Content-Length and Transfer-Encoding), and comes here. Both ask the
one list read (api/list_reads.py). Sessions are not used: every request shares one null
session instead of building one.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import trio
from quart import Response, g, request
from quart.sessions import NullSession, SessionInterface
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from sinal.api.audit_routes import register_audit
from sinal.api.auth import bearer_claims
from sinal.api.broadcast_routes import register_broadcasts
from sinal.api.context import ApiContext
from sinal.api.dashboard_routes import register_dashboard
from sinal.api.fast_reads import FastReads
from sinal.api.guard import RequestGuard
from sinal.api.history_routes import register_history
from sinal.api.http_rules import (
    CORS_ALLOW_HEADERS,
    CORS_EXPOSE_HEADERS,
    accepts_gzip,
    allowed_origins,
    cors_origin,
    gzip_body,
    wants_gzip,
)
from sinal.api.ops_routes import register_ops
from sinal.api.pages import register_pages
from sinal.api.preferences import register_preferences
from sinal.api.problems import Problem
from sinal.api.read_routes import register_reads
from sinal.api.realtime import RealtimeView
from sinal.api.settings import ApiSettings
from sinal.api.stats import RequestStats
from sinal.api.validation import MAX_BODY_BYTES
from sinal.api.write_routes import register_writes
from sinal.domain.audit import AuditLog
from sinal.domain.db import Database
from sinal.domain.principals import Authenticator
from sinal.domain.ratelimit import RateLimiter, client_address, trusted_networks

log = logging.getLogger("sinal.api")

__all__ = ["accepts_gzip", "allowed_origins", "create_app", "wants_gzip"]

UNCOUNTED_PREFIXES = ("/health/", "/metrics", "/openapi.json")
_HTTP_CODES = {400: "invalid_parameter", 401: "auth_required", 403: "forbidden",
               404: "not_found", 405: "method_not_allowed", 413: "payload_too_large",
               429: "rate_limited"}
AUDITED_REFUSALS = frozenset(("auth_failed", "token_expired", "forbidden", "rate_limited"))
RATE_LIMIT_AUDIT_SECONDS = 60.0  # one rate_limited event per caller and minute
MAX_THROTTLED_KEYS = 10_000


class _AuditThrottle:
    """At most one audit event per key and period: a caller hammering past its rate limit
    must not turn every refused request into a database row."""

    def __init__(self, period: float) -> None:
        self.period = period
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, key: str) -> int | None:
        """None: suppress; else how many were suppressed since the last event."""
        now = trio.current_time()
        last = self._last.get(key)
        if last is not None and now - last[0] < self.period:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) >= MAX_THROTTLED_KEYS:
            self._last.clear()
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]


class _NoSessions(SessionInterface):
    """Sinal keeps no sessions: one shared null session (it refuses writes) for every
    request, instead of a new one each time."""

    _null = NullSession()

    async def open_session(self, app: Any, request: Any) -> NullSession:
        return self._null

    async def make_null_session(self, app: Any) -> NullSession:
        return self._null

    async def save_session(self, app: Any, session: Any, response: Any) -> None:
        return None


def create_app(settings: ApiSettings, db: Database, authenticator: Authenticator,
               realtime: RealtimeView, stats: RequestStats, audit: AuditLog,
               limiter: RateLimiter | None = None) -> QuartTrio:
    """`limiter`: the REST budgets (default: this process's own; the node passes the
    cluster's, in Redis, when it has one)."""
    app = QuartTrio("sinal")
    app.config.update(MAX_CONTENT_LENGTH=MAX_BODY_BYTES, PROPAGATE_EXCEPTIONS=False,
                      JSON_SORT_KEYS=False)
    app.session_interface = _NoSessions()  # type: ignore[assignment]
    # `/api//x` names no route (404), rather than a redirect to `/api/x` (a werkzeug
    # response the answer hooks cannot handle)
    app.url_map.merge_slashes = False
    api = ApiContext.build(app, settings, db, authenticator, realtime, stats, audit, limiter)
    throttle = _AuditThrottle(RATE_LIMIT_AUDIT_SECONDS)
    proxies = trusted_networks(settings.trusted_proxies)
    app.extensions["sinal"] = api
    origins = settings.allowed_origins

    @app.before_request
    async def before() -> Response | None:
        g.started = time.perf_counter()
        if request.content_length or "Transfer-Encoding" in request.headers:
            # Read the whole body before any answer: with hypercorn 0.18 (h11), a response
            # sent while the body is still arriving can leave the NEXT request on the same
            # keep-alive connection unanswered (tests/api/test_api_http.py reproduces it).
            await request.get_data(as_text=False)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            g.preflight = True
            return api.empty(204, {
                "Access-Control-Allow-Methods": "GET, POST, PUT, OPTIONS",
                "Access-Control-Allow-Headers": CORS_ALLOW_HEADERS,
                "Access-Control-Max-Age": "600"})
        if not request.path.startswith("/api/"):
            return None
        g.claims = None
        key = "ip:" + client_address(request.remote_addr or "local",
                                     request.headers.get("X-Forwarded-For"), proxies)
        try:
            g.claims = bearer_claims(api.auth.tokens, request.headers.get("Authorization"))
            key = f"user:{g.claims.user_id}"
        except Problem as problem:
            g.auth_problem = problem
        if not api.charge(key):
            wait = max(1, math.ceil(api.limiter.retry_after(key)))
            raise Problem(429, "rate_limited",
                          f"more than {settings.rate_limit_per_minute} requests per "
                          f"minute; retry in {wait} s", headers={"Retry-After": str(wait)})
        return None

    @app.after_request
    async def after(response: Response) -> Response:
        origin = cors_origin(request.headers.get("Origin"), origins)
        if origin is not None:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Expose-Headers"] = CORS_EXPOSE_HEADERS
            if origin != "*":
                response.vary.add("Origin")
        if getattr(g, "preflight", False):
            return response
        if response.status_code == 304:
            response.vary.add("Accept-Encoding")
        elif request.method in ("GET", "HEAD"):
            await _maybe_gzip(response)
        _count(response)
        return response

    async def _maybe_gzip(response: Response) -> None:
        if not isinstance(response, Response):
            return  # a werkzeug response (a routing redirect): nothing to compress
        mimetype = response.mimetype or ""
        if not (mimetype.endswith("json") or mimetype.startswith("text/")):
            return
        response.vary.add("Accept-Encoding")
        if "Content-Encoding" in response.headers:
            return  # a list read sends its cached gzip form (api/list_reads.py)
        body = await response.get_data(as_text=False)
        if wants_gzip(settings.compression, request.args.get("compress"),
                      request.headers.get("Accept-Encoding"), len(body)):
            response.set_data(gzip_body(body, settings.compression_level))
            response.headers["Content-Encoding"] = "gzip"

    def _count(response: Response) -> None:
        started = getattr(g, "started", None)
        if started is None:
            return
        elapsed = time.perf_counter() - started
        rule = request.url_rule.rule if request.url_rule is not None else "(unmatched)"
        api.metrics.observe(request.method, rule, response.status_code, elapsed)
        if not request.path.startswith(UNCOUNTED_PREFIXES):
            api.stats.record(elapsed, read=getattr(g, "list_read", False),
                             hit=getattr(g, "cache_hit", False))

    @app.errorhandler(Problem)
    async def on_problem(problem: Problem) -> Response:
        if problem.code in AUDITED_REFUSALS:
            _audit_refusal(problem)
        return api.problem(problem)

    def _audit_refusal(problem: Problem) -> None:
        claims = getattr(g, "claims", None)
        principal = getattr(g, "principal", None)
        if principal is None and claims is not None and problem.status != 401:
            principal = api.auth.peek(claims)  # memory only: a user that exists
        details: dict[str, Any] = {"method": request.method, "status": problem.status,
                                   "code": problem.code, "detail": problem.detail[:300],
                                   "address": request.remote_addr}
        if problem.code == "rate_limited":
            key = f"user:{claims.user_id}" if claims is not None else \
                f"ip:{request.remote_addr}"
            suppressed = throttle.allow(key)
            if suppressed is None:
                return
            details["suppressed"] = suppressed  # refusals not recorded since the last one
        if claims is not None and principal is None:
            details["subject"] = claims.user_id[:64]  # verified, but not a known user
        api.audit_event(problem.code, request.path, details,
                        principal if problem.status != 401 else None)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = _HTTP_CODES.get(status, "internal_error" if status >= 500 else "invalid_parameter")
        headers = {}
        if status == 405:
            valid = getattr(error, "valid_methods", None) or []
            headers["Allow"] = ", ".join(sorted(valid))
            detail = f"{request.method} is not allowed here; allowed: {headers['Allow']}"
        elif status == 404:
            detail = f"no route {request.path[:200]!r}"
        elif status == 413:
            headers["Connection"] = "close"  # the rest of the body was not read
            detail = f"the body is over {MAX_BODY_BYTES} bytes"
        else:
            detail = error.description or error.name
        return api.problem(Problem(status, code, detail, headers=headers))

    @app.errorhandler(Exception)
    async def on_bug(error: Exception) -> Response:
        log.error("unhandled error on %s %s", request.method, request.path[:200],
                  exc_info=error)
        return api.problem(Problem(500, "internal_error",
                                   "an unexpected error; the server log has the details"))

    register_reads(api)
    register_writes(api)
    register_preferences(api)
    register_ops(api)
    register_pages(api)
    register_dashboard(api)
    register_history(api)
    app.asgi_app = FastReads(api, app.asgi_app)  # type: ignore[method-assign]
    register_audit(api)
    register_broadcasts(api)
    # FastReads answers only body-less GETs of lists and passes anything else on: the
    # guard behind it sees every request it does not answer
    app.asgi_app = FastReads(  # type: ignore[method-assign]
        api, RequestGuard(app.asgi_app, realtime.websocket_url))
    return app
